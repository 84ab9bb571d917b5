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
and indented code, HTML blocks and autolinks are never units, and neither is the text of a
reference link written ``[text]`` or ``[text][]``: its text is its label, which must keep
matching the ``[text]: URL`` definition (``[text][label]`` links are translated). A paragraph
that spanned several lines comes back as one line (in a block quote or a list item that is
still the same block).
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


def _label(text: str) -> str:
    """A reference label as CommonMark matches labels: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


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
        self._limit, self._href = len(self.text), ""
        env: dict = {}
        tokens = MarkdownIt("commonmark").enable("table").enable("strikethrough").parse(
            self.text, env)
        labels = {_label(name) for name in env.get("references", {})}
        at = 0  # the file is read forwards: a run is looked for after the previous one
        for token in tokens:
            if token.type != "inline" or not token.children or token.map is None:
                continue
            at = max(at, starts[min(token.map[0], len(starts) - 1)])
            self._limit = starts[min(token.map[1], len(starts) - 1)]  # the block's end
            run: list = []  # children of the run being read
            autolinks: list[bool] = []
            for index, child in enumerate([*token.children, None]):
                if child is not None and child.type == "link_open":  # text kept: see above
                    autolinks.append(child.markup == "autolink" or self._label_link(
                        token.children, index, at, labels))
                if child is None or child.type in BREAKS:
                    at = self._add_run(run, at, token.map[0] + 1)
                    run = []
                    at = self._past(child, at) if child is not None else at
                    if child is not None and child.type == "link_close" and autolinks:
                        autolinks.pop()
                    continue
                if autolinks and autolinks[-1]:
                    continue
                if child.type in ("text", "softbreak"):
                    run.append(child)

    def _label_link(self, children: list, index: int, at: int, labels: set[str]) -> bool:
        """Whether the link opened at ``children[index]`` is a reference link whose text is
        its label (``[text]`` or ``[text][]``): not written inline (``](target``), and its
        text names a definition."""
        href = children[index].attrGet("href") or ""
        if href and self._find(f"]({href}", at) >= 0:
            return False
        depth, text = 0, []
        for child in children[index:]:
            depth += {"link_open": 1, "link_close": -1}.get(child.type, 0)
            if depth == 0:
                break
            text.append(child.content)
        return _label("".join(text)) in labels

    def _find(self, raw: str, at: int) -> int:
        """Where ``raw`` is written in the block from ``at`` on (-1: not there)."""
        return self.text.find(raw, at, self._limit) if raw else -1

    def _past(self, child: object, at: int) -> int:
        """The offset after the markup ``child`` stands for, as written: a code span (its
        backquote runs), inline HTML, an image (up to its source's end), a link's end (past
        its target, for an inline link); ``at`` where it cannot be told."""
        kind = child.type
        if kind == "code_inline":
            opening = self._find(child.markup, at)
            if opening >= 0:
                closing = self._find(child.markup, opening + len(child.markup))
                return closing + len(child.markup) if closing >= 0 else at
        elif kind == "html_inline":
            found = self._find(child.content, at)
            return found + len(child.content) if found >= 0 else at
        elif kind in ("image", "link_close"):
            target = child.attrGet("src") if kind == "image" else self._href
            found = self._find(f"]({target}", at) if target else -1
            if found >= 0:  # an inline image or link: past the ")" that closes it
                close = self._find(")", found + 2 + len(target))
                return close + 1 if close >= 0 else at
        elif kind == "link_open":
            self._href = child.attrGet("href") or ""
        return at

    def _add_run(self, run: list, at: int, line: int) -> int:
        """Locate a run's first and last text in the file; add it as a unit if it has text."""
        texts = [child.content for child in run if child.type == "text"]
        if not any(text.strip() for text in texts):
            return at
        start = end = None
        for text in texts:
            if not text:
                continue
            match = _pattern(text).search(self.text, at, self._limit)
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
            if start == 0 or self.text[start - 1] == "\n":  # not a heading or a list item
                safe = re.sub(r"^(#+|[-+*]|\d+[.)])(?=\s)",
                              lambda m: (m.group(1)[:-1] + "\\" + m.group(1)[-1]
                                         if m.group(1)[0].isdigit() else "\\" + m.group(1)),
                              safe)
            out += [self.text[at:start], lead + safe + trail]
            at = end
        out.append(self.text[at:])
        return "".join(out).encode("utf-8")
