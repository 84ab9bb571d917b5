"""``format: html``: translate the text between tags, keep every tag, attribute and comment.

The document is split by the standard library's :class:`html.parser.HTMLParser` into markup
(start tags with their attributes exactly as written, end tags by their lowercased name,
comments, declarations, processing instructions) and text runs. A text run is the text between
two tags with its character references resolved; runs holding only whitespace, and the contents
of ``script``, ``style``, ``code``, ``pre`` and ``textarea``, are kept as written. Each other
run is translated as one line (its leading and trailing whitespace kept) and written back
escaped (``&``, ``<``, ``>``), so an entity such as ``&amp;`` survives as ``&amp;`` and
``&nbsp;`` as the no-break space it stands for.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from html.parser import HTMLParser

KEEP_CONTENT = frozenset({"script", "style", "code", "pre", "textarea"})


class _Splitter(HTMLParser):
    """Parts of a document: ("markup", raw), ("text", raw, decoded) or ("keep", raw)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.parts: list[tuple[str, str, str]] = []
        self._open: list[str] = []  # tags whose content is kept verbatim

    def _text(self, raw: str, decoded: str) -> None:
        if self._open:
            self.parts.append(("keep", raw, raw))
        elif self.parts and self.parts[-1][0] == "text":  # extend the current run
            _, r, d = self.parts[-1]
            self.parts[-1] = ("text", r + raw, d + decoded)
        else:
            self.parts.append(("text", raw, decoded))

    def _markup(self, raw: str) -> None:
        self.parts.append(("markup", raw, raw))

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: D102
        self._markup(self.get_starttag_text() or "")
        if tag in KEEP_CONTENT:
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:  # noqa: D102
        self._markup(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:  # noqa: D102
        if self._open and self._open[-1] == tag:
            self._open.pop()
        self._markup(f"</{tag}>")  # html.parser gives the name lowercased

    def handle_data(self, data: str) -> None:  # noqa: D102
        self._text(data, data)

    def handle_entityref(self, name: str) -> None:  # noqa: D102
        raw = f"&{name};"
        self._text(raw, html.unescape(raw))

    def handle_charref(self, name: str) -> None:  # noqa: D102
        raw = f"&#{name};"
        self._text(raw, html.unescape(raw))

    def handle_comment(self, data: str) -> None:  # noqa: D102
        self._markup(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:  # noqa: D102
        self._markup(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:  # noqa: D102
        self._markup(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:  # noqa: D102
        self._markup(f"<![{data}]>")


def split_html(document: str) -> list[tuple[str, str, str]]:
    """(kind, raw, decoded) parts of a document; kind is "markup", "text" or "keep"."""
    splitter = _Splitter()
    splitter.feed(document)
    splitter.close()
    return splitter.parts


class HtmlDocuments:
    """Documents split into parts; :attr:`runs` are the texts to translate, in order."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.parts = [split_html(document) for document in documents]
        self.runs = [decoded.strip() for parts in self.parts for kind, _, decoded in parts
                     if kind == "text" and decoded.strip()]

    def rebuild(self, translations: Sequence[str]) -> list[str]:
        """The documents with run ``i`` replaced by ``translations[i]`` (escaped)."""
        if len(translations) != len(self.runs):
            raise ValueError(f"{len(self.runs)} runs, {len(translations)} translations")
        translated = iter(translations)
        out = []
        for parts in self.parts:
            pieces = []
            for kind, raw, decoded in parts:
                if kind != "text" or not decoded.strip():
                    pieces.append(raw)
                    continue
                lead = decoded[:len(decoded) - len(decoded.lstrip())]
                trail = decoded[len(decoded.rstrip()):]
                pieces.append(lead + html.escape(next(translated), quote=False) + trail)
            out.append("".join(pieces))
        return out
