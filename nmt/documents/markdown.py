"""Markdown (markdown-it-py, CommonMark): the text of paragraphs, headings, list items and
table cells is translated; code, URLs, link targets, images and HTML are kept.

markdown-it-py parses the file into blocks and their inline children. A unit is a run of text
children of one block (its line breaks included) between inline markup: code spans, links'
opening and closing (so a link's text is its own unit and its target is never touched),
emphasis markers, images (alt text kept), inline HTML. This is the HTML format's rule (text
between tags), applied to Markdown's markup. Each run is located in the file after the previous
one (a backslash escape such as ``\\*`` is matched as such), and the translation written in its
place, a character escaped as the source run escaped it and a line-leading ``#``, ``-`` or
``1.`` escaped so that it cannot turn into markup; everything else stays byte for byte. A run
written with character references (``&amp;``) is left as it is and named in the notes. Fenced
and indented code, HTML blocks and autolinks are never units. A paragraph that spanned several
lines comes back as one line (in a block quote or a list item that is still the same block).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nmt.documents.units import Document, Unit, utf8

#: Inline children that end a run (their own text is never translated).
BREAKS = frozenset({"code_inline", "link_open", "link_close", "image", "html_inline",
                    "em_open", "em_close", "strong_open", "strong_close", "s_open", "s_close",
                    "hardbreak"})
ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")


def _pattern(text: str) -> re.Pattern:
    """``text`` as markdown may have written it: any ASCII punctuation maybe backslashed."""
    out = []
    for char in text:
        escaped = re.escape(char)
        out.append(f"\\\\?{escaped}" if char.isascii() and not char.isalnum()
                   and not char.isspace() else escaped)
    return re.compile("".join(out))


class MarkdownDocument(Document):
    """The text runs of a Markdown file."""

    def __init__(self, data: bytes, name: str) -> None:
        from markdown_it import MarkdownIt

        self.name = name
        self.text = utf8(data, name)
        starts = [0]
        for line in self.text.splitlines(keepends=True):
            starts.append(starts[-1] + len(line))
        self.spans: list[tuple[int, int]] = []
        self.units, self.notes = [], []
        tokens = MarkdownIt("commonmark").enable("table").enable("strikethrough").parse(
            self.text)
        for token in tokens:
            if token.type != "inline" or not token.children or token.map is None:
                continue
            at = starts[min(token.map[0], len(starts) - 1)]
            run: list = []  # children of the run being read
            autolink = False
            for child in [*token.children, None]:
                if child is not None and child.type == "link_open":
                    autolink = child.markup == "autolink"
                if child is None or child.type in BREAKS:
                    at = self._add_run(run, at, token.map[0] + 1)
                    run = []  # (an image's alt text is its own children: never a unit)
                    if child is not None and child.type == "code_inline":
                        at = self._skip(child.markup + child.content, at)
                    continue
                if autolink:
                    continue
                if child.type in ("text", "softbreak"):
                    run.append(child)

    def _skip(self, raw: str, at: int) -> int:
        """Past a code span (its text as written, or at least the opening backquotes)."""
        found = self.text.find(raw, at)
        return found + len(raw) if found >= 0 else at

    def _add_run(self, run: list, at: int, line: int) -> int:
        """Locate a run's first and last text in the file; add it as a unit if it has text."""
        texts = [child.content for child in run if child.type == "text"]
        if not any(text.strip() for text in texts):
            return at
        start = end = None
        for text in texts:
            if not text:
                continue
            match = _pattern(text).search(self.text, at)
            if match is None:  # written with character references, say: left as it is
                self.notes.append(f"line {line}: left untranslated (its text {text[:30]!r} "
                                  "is not written as it reads)")
                return at
            start = match.start() if start is None else start
            at = end = match.end()
        unit_text = "".join(child.content if child.type == "text" else " " for child in run)
        self.spans.append((start, end))
        self.units.append(Unit(" ".join(unit_text.split()), f"line {line}"))
        return at

    def render(self, translations: Sequence[str | None]) -> bytes:
        """The file with each translated run in its place (escaped for Markdown)."""
        self._check(translations)
        out, at = [], 0
        for (start, end), translation in zip(self.spans, translations, strict=True):
            if translation is None:
                continue
            raw = self.text[start:end]
            lead = raw[:len(raw) - len(raw.lstrip())]
            trail = raw[len(raw.rstrip()):]
            # escaped as the source run escaped: \\* there, \\* here
            escaped = set(ESCAPED.findall(raw))
            safe = "".join("\\" + c if c in escaped else c for c in translation)
            if start == 0 or self.text[start - 1] == "\n":
                safe = re.sub(r"^(#+|[-+*]|\d+[.)])(?=\s)", r"\\\1", safe)
            out += [self.text[at:start], lead + safe + trail]
            at = end
        out.append(self.text[at:])
        return "".join(out).encode("utf-8")
