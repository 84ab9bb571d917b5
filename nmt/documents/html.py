"""HTML: translate the text between tags, keep the tags, attributes and comments.

Shared by ``nmt translate`` (:class:`HtmlDocument`, a file) and the server's ``format: html``
(:class:`HtmlDocuments`, the texts of a request).

The document is split by the standard library's :class:`html.parser.HTMLParser` into markup
(start tags with their attributes exactly as written, end tags by their lowercased name,
comments, declarations, CDATA, processing instructions) and text. A text run is the text
between two tags with its character references resolved. Runs holding only whitespace, and
the contents of ``script``, ``style``, ``code``, ``pre``, ``textarea`` and of elements marked
``translate="no"``, are kept. Each other run is translated as one line (its inner whitespace
collapsed, as the source's line breaks are layout; its leading and trailing whitespace kept)
and written back escaped (``&``, ``<``, ``>``). Text is escaped the same way where it is kept
(except the raw contents of ``script`` and ``style``), so ``&amp;`` stays ``&amp;``, a bare
``AT&T`` becomes ``AT&amp;T`` and ``&nbsp;`` the no-break space it stands for.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from html.parser import HTMLParser

from nmt.documents.units import Document, Unit, utf8
from nmt.errors import DataError

KEEP_CONTENT = frozenset({"script", "style", "code", "pre", "textarea"})
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                  "source", "track", "wbr"})


class _Splitter(HTMLParser):
    """Parts of a document: ("markup", raw, raw), ("text", raw, decoded) or ("keep", raw, raw).

    Character references are resolved in text (``convert_charrefs``); text is written back
    escaped, except the raw contents of ``script`` and ``style``.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[str, str, str]] = []
        self._open: list[str] = []  # elements whose content is kept as it is

    def _markup(self, raw: str) -> None:
        self.parts.append(("markup", raw, raw))

    def handle_starttag(self, tag: str, attrs: list) -> None:  # noqa: D102
        self._markup(self.get_starttag_text() or "")
        if tag not in VOID and (tag in KEEP_CONTENT or ("translate", "no") in attrs):
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:  # noqa: D102
        self._markup(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:  # noqa: D102
        if tag in self._open:  # close it, and whatever was left open inside it
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag):]
        self._markup(f"</{tag}>")  # html.parser gives the name lowercased

    def handle_data(self, data: str) -> None:  # noqa: D102
        raw = data if self.cdata_elem else html.escape(data, quote=False)  # script/style: raw
        if self._open:
            self.parts.append(("keep", raw, raw))
        elif self.parts and self.parts[-1][0] == "text":  # extend the current run
            _, r, d = self.parts[-1]
            self.parts[-1] = ("text", r + raw, d + data)
        else:
            self.parts.append(("text", raw, data))

    def handle_comment(self, data: str) -> None:  # noqa: D102
        self._markup(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:  # noqa: D102
        self._markup(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:  # noqa: D102
        self._markup(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:  # noqa: D102
        self._markup(f"<![{data}]]>" if data.startswith("CDATA[") else f"<![{data}]>")


def split_html(document: str) -> list[tuple[str, str, str]]:
    """(kind, raw, decoded) parts of a document; kind is "markup", "text" or "keep".

    Raises ValueError for markup the parser cannot read (such as ``<![x[``)."""
    splitter = _Splitter()
    try:
        splitter.feed(document)
        splitter.close()
    except (AssertionError, ValueError) as exc:  # html.parser's _markupbase asserts
        raise ValueError(f"cannot parse the HTML ({exc or type(exc).__name__})") from None
    return splitter.parts


class HtmlDocuments:
    """Documents split into parts; :attr:`runs` are the texts to translate, in order."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.parts = [split_html(document) for document in documents]
        # a run is one line: the line breaks and indentation of the source are layout
        self.runs = [" ".join(decoded.split()) for parts in self.parts
                     for kind, _, decoded in parts if kind == "text" and decoded.strip()]

    def rebuild(self, translations: Sequence[str | None]) -> list[str]:
        """The documents with run ``i`` replaced by ``translations[i]`` (escaped; ``None``
        keeps the run as it was written)."""
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
                translation = next(translated)
                if translation is None:
                    pieces.append(raw)
                    continue
                lead = decoded[:len(decoded) - len(decoded.lstrip())]
                trail = decoded[len(decoded.rstrip()):]
                pieces.append(lead + html.escape(translation, quote=False) + trail)
            out.append("".join(pieces))
        return out


class HtmlDocument(Document):
    """An HTML file (UTF-8): its text runs are the units, located by run number."""

    def __init__(self, data: bytes, name: str) -> None:
        self.name = name
        text = utf8(data, name)
        try:
            self._doc = HtmlDocuments([text])
        except ValueError as exc:
            raise DataError(f"{name}: {exc}") from None
        self._text = text
        self.units = [Unit(run, f"text run {i + 1}") for i, run in enumerate(self._doc.runs)]

    def render(self, translations: Sequence[str | None]) -> bytes:
        """The document with each translated run in place (``None``: the run as it was)."""
        self._check(translations)
        if all(t is None for t in translations):
            return self._text.encode("utf-8")
        return self._doc.rebuild(translations).pop().encode("utf-8")
