"""XLIFF 1.2 and 2.0: each untranslated source gets a ``<target>``, marked as a machine's.

The file is read twice: by defusedxml first (entity declarations and external references are
refused, as for every file a user receives from others), then by expat, whose byte offsets let
the translation be written into the original bytes, so everything else in the file stays byte
for byte as it was (declaration, comments, attribute quoting, namespaces, indentation).

- **1.2**: a ``<trans-unit>`` whose ``<target>`` is missing or empty gets ``<target
  state="needs-review-translation" state-qualifier="mt-suggestion">`` after its ``<source>``
  (or in place of the empty one, its other attributes kept), indented as the source is.
- **2.0**: a ``<segment>`` whose ``<target>`` is missing or empty gets one, and the segment
  ``state="initial" subState="nmt:mt"`` (not yet reviewed; a machine wrote it); the segment's
  start tag is written anew for that (its other attributes kept, in order). ``<ignorable>``
  elements are left. In both, ``translate="no"`` on a file, group or unit leaves all it
  holds, and a CDATA section in a source is translated as a run of its own (written back
  escaped).

Inline elements stay in place: the text between them is translated run by run (as the HTML
format does), and the target is the source's own markup with the runs replaced. The contents of
native-code elements (1.2 ``bpt``, ``ept``, ``ph``, ``it``) are copied as they are. With
``retranslate`` a target that has text is replaced too. Only UTF-8 files are read.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.parsers import expat

from nmt.documents.units import Document, Unit
from nmt.errors import DataError

NS12 = "urn:oasis:names:tc:xliff:document:1.2"
NS20 = "urn:oasis:names:tc:xliff:document:2.0"
#: Elements whose whole content is native code, copied untranslated (XLIFF 1.2).
NATIVE = frozenset({"bpt", "ept", "ph", "it"})
XML_NS = "http://www.w3.org/XML/1998/namespace"


def tag_end(data: bytes, start: int) -> int:
    """The offset just past the start (or end) tag that begins at ``data[start] == b'<'``: the
    first ``>`` outside a quoted attribute value."""
    quote = 0
    for i in range(start + 1, len(data)):
        byte = data[i]
        if quote:
            quote = 0 if byte == quote else quote
        elif byte in b"\"'":
            quote = byte
        elif byte == ord(">"):
            return i + 1
    raise DataError("unterminated tag")


@dataclass
class _Source:
    """One ``<source>``: its byte spans, the text runs inside, and where its target goes."""

    where: str
    start: int = 0                  # of "<source"
    inner: tuple[int, int] = (0, 0)  # the content between the tags
    end: int = 0                    # just past "</source>"
    qname: bytes = b"source"        # as written, with its prefix
    runs: list[tuple[int, int, str]] = field(default_factory=list)  # raw span, decoded text
    target: tuple[int, int] | None = None  # the existing <target> element's span
    target_attrs: list[str] = field(default_factory=list)  # and its attributes (expat's)
    target_text: str = ""
    segment: tuple[int, int, str, list[str]] | None = None  # 2.0: start tag span, name, attrs


class _Reader:
    """Expat handlers that collect the sources of a document (1.2 or 2.0)."""

    def __init__(self, data: bytes, retranslate: bool) -> None:
        self.data, self.retranslate = data, retranslate
        self.sources: list[_Source] = []
        self.version = ""
        self._stack: list[str] = []     # local names of the open elements
        self._starts: list[int] = []    # and the offsets of their start tags
        self._skip = 0                  # depth inside translate="no" / ignorable / native code
        self._source: _Source | None = None
        self._in = ""                   # "source" or "target" while inside one
        self._run: list = []            # [start, pieces] of the text run being read
        self._unit: tuple[str, str] = ("", "")   # (id, line) of the current unit
        self._segment: tuple[int, int, str, list[str]] | None = None
        self.parser = expat.ParserCreate(namespace_separator=" ")
        self.parser.ordered_attributes = True
        self.parser.buffer_text = False
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.text
        self.parser.StartCdataSectionHandler = self.cdata_start
        self.parser.EndCdataSectionHandler = self.cdata_end
        self._cdata = -1                # offset of "<![CDATA[" while inside one

    def _close_run(self, end: int | None = None) -> None:
        if self._run and self._source is not None and self._in == "source" and not self._skip:
            start, pieces = self._run
            self._source.runs.append((start, self.parser.CurrentByteIndex if end is None
                                      else end, "".join(pieces)))
        self._run = []

    def cdata_start(self) -> None:
        """A CDATA section is a run of its own, replaced whole (markers included)."""
        self._close_run()
        self._cdata = self.parser.CurrentByteIndex

    def cdata_end(self) -> None:
        if self._run:
            self._run[0] = self._cdata
        self._close_run(self.parser.CurrentByteIndex + len("]]>"))
        self._cdata = -1

    def start(self, name: str, attrs: list[str]) -> None:
        self._close_run()
        ns, _, local = name.rpartition(" ")
        values = dict(zip(attrs[::2], attrs[1::2], strict=True))
        here = self.parser.CurrentByteIndex
        if local == "xliff" and not self._stack:
            self.version = {NS12: "1.2", NS20: "2.0"}.get(ns, values.get("version", ""))
        self._stack.append(local)
        self._starts.append(here)
        if self._skip:
            self._skip += 1
            return
        if local in ("file", "group", "trans-unit", "unit") and values.get("translate") == "no":
            self._skip = 1  # the element and all it holds
        elif local in ("trans-unit", "unit"):
            self._unit = (values.get("id", ""), str(self.parser.CurrentLineNumber))
        elif local in ("ignorable", "alt-trans"):  # 2.0 ignorable text; 1.2 earlier matches
            self._skip = 1
        elif local == "segment":
            self._segment = (here, tag_end(self.data, here), name, attrs)
        elif local == "source" and self._in == "" and self._parent() in ("trans-unit",
                                                                            "segment"):
            ident, line = self._unit
            where = f"line {line}" + (f" (unit {ident})" if ident else "")
            self._source = _Source(where, start=here, segment=self._segment)
            self._source.inner = (tag_end(self.data, here), 0)
            self._source.qname = self.data[here + 1:self._source.inner[0]].split()[0].rstrip(
                b"/>")
            self._in = "source"
        elif local == "target" and self._in == "" and self._source is not None \
                and self._parent() in ("trans-unit", "segment"):
            self._source.target = (here, 0)
            self._source.target_attrs = attrs
            self._in = "target"
        elif self._in == "source" and local in NATIVE and self.version != "2.0":
            self._skip = 1

    def _parent(self) -> str:
        """The local name of the element that holds the one just opened."""
        return self._stack[-2] if len(self._stack) > 1 else ""

    def end(self, name: str) -> None:
        self._close_run()
        local = self._stack.pop()
        opened = self._starts.pop()
        start_end = tag_end(self.data, opened)
        if self.data[start_end - 2:start_end] == b"/>":  # an empty element: <x/>
            here = after = start_end
        else:
            here = self.parser.CurrentByteIndex  # of "</"
            after = tag_end(self.data, here)
        if self._skip:
            self._skip -= 1
            return
        if local == "source" and self._in == "source" and self._source is not None:
            self._source.inner = (self._source.inner[0], here)
            self._source.end = after
            self._in = ""
        elif local == "target" and self._in == "target" and self._source is not None:
            self._source.target = (self._source.target[0], after)
            self._in = ""
        elif local in ("trans-unit", "segment") and self._source is not None:
            self._finish()
        if local == "segment":
            self._segment = None

    def _finish(self) -> None:
        source, self._source = self._source, None
        if any(text.strip() for *_, text in source.runs) and (
                self.retranslate or not source.target_text.strip()):
            self.sources.append(source)

    def text(self, data: str) -> None:
        if self._in == "target" and self._source is not None and not self._skip:
            self._source.target_text += data
            return
        if not self._run:
            self._run = [self.parser.CurrentByteIndex, []]
        self._run[1].append(data)


class XliffDocument(Document):
    """An XLIFF 1.2 or 2.0 file's untranslated sources."""

    def __init__(self, data: bytes, name: str, retranslate: bool = False) -> None:
        import defusedxml.ElementTree as safe_xml
        from defusedxml import DefusedXmlException

        self.name, self.data = name, data
        try:
            data.decode("utf-8")
            safe_xml.fromstring(data, forbid_dtd=False, forbid_entities=True,
                                forbid_external=True)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: not UTF-8 (byte {exc.start}); only UTF-8 XLIFF is "
                            "read") from None
        except DefusedXmlException as exc:
            raise DataError(f"{name}: refused ({type(exc).__name__}: entity declarations and "
                            "external references are not read)") from None
        except Exception as exc:  # noqa: BLE001  ParseError and its kin
            raise DataError(f"{name}: not well-formed XML ({exc})") from None
        reader = _Reader(data, retranslate)
        reader.parser.Parse(data, True)
        if reader.version not in ("1.2", "2.0"):
            raise DataError(f"{name}: not XLIFF 1.2 or 2.0 (version {reader.version!r})")
        self.version = reader.version
        self.sources = reader.sources
        self.units = [Unit(text, source.where) for source in self.sources
                      for *_, text in source.runs if text.strip()]

    def _target(self, source: _Source, translations: list[str]) -> bytes:
        """The target element: the source's content with its runs translated."""
        pieces, at = [], source.inner[0]
        it = iter(translations)
        for start, end, text in source.runs:
            pieces.append(self.data[at:start])
            pieces.append(html.escape(next(it), quote=False).encode("utf-8")
                          if text.strip() else self.data[start:end])
            at = end
        pieces.append(self.data[at:source.inner[1]])
        opening, qname = self._target_tag(source)
        return opening + b"".join(pieces) + b"</" + qname + b">"

    def _target_tag(self, source: _Source) -> tuple[bytes, bytes]:
        """The target's start tag and name: an existing (empty) target's own, its attributes
        kept, or a new one named as the source is; in 1.2 with the machine's state."""
        state = (b' state="needs-review-translation" state-qualifier="mt-suggestion"'
                 if self.version == "1.2" else b"")
        if source.target is None:
            qname = source.qname[:-len(b"source")] + b"target"
            return b"<" + qname + state + b">", qname
        start = source.target[0]
        raw = self.data[start:tag_end(self.data, start)]
        body = raw[:-2] if raw.endswith(b"/>") else raw[:-1]
        qname = body[1:].split()[0]
        names = source.target_attrs[::2]
        if state and any(n.rpartition(" ")[2] in ("state", "state-qualifier") for n in names):
            kept = [(k, v) for k, v in zip(names, source.target_attrs[1::2], strict=True)
                    if k.rpartition(" ")[2] not in ("state", "state-qualifier")]
            body = b"<" + qname + "".join(
                f' {_xml_name(k, raw)}="{html.escape(v, quote=True)}"'
                for k, v in kept).encode("utf-8")
        return body.rstrip() + state + b">", qname

    def _segment_tag(self, source: _Source) -> bytes:
        """The 2.0 segment's start tag with state="initial" subState="nmt:mt"."""
        start, end, _, attrs = source.segment
        raw = self.data[start:end]
        qname = raw[1:].split()[0].rstrip(b"/>")
        values = [(k, v) for k, v in zip(attrs[::2], attrs[1::2], strict=True)
                  if k not in ("state", "subState")]
        values += [("state", "initial"), ("subState", "nmt:mt")]
        body = "".join(f' {_xml_name(k, raw)}="{html.escape(v, quote=True)}"'
                       for k, v in values)
        return b"<" + qname + body.encode("utf-8") + b">"

    def render(self, translations: Sequence[str | None]) -> bytes:
        """The file with a target written for each source whose runs were all translated."""
        self._check(translations)
        edits: list[tuple[int, int, bytes]] = []
        it = iter(translations)
        for source in self.sources:
            mine = [next(it) for *_, text in source.runs if text.strip()]
            if any(t is None for t in mine):
                continue
            target = self._target(source, mine)
            if source.target is not None:
                edits.append((*source.target, target))
            else:
                line_start = self.data.rfind(b"\n", 0, source.start) + 1
                indent = self.data[line_start:source.start]
                eol = b"\r\n" if self.data[line_start - 2:line_start] == b"\r\n" else b"\n"
                sep = eol + indent if not indent.strip() else b""
                edits.append((source.end, source.end, sep + target))
            if source.segment is not None:
                edits.append((source.segment[0], source.segment[1], self._segment_tag(source)))
        out, at = [], 0
        for start, end, new in sorted(edits):
            out += [self.data[at:start], new]
            at = end
        out.append(self.data[at:])
        return b"".join(out)


def _xml_name(expat_name: str, raw: bytes = b"") -> str:
    """An attribute name that expat gave as "namespace local", written as in the start tag
    ``raw`` (its prefix as the file wrote it; ``xml:`` for the XML namespace)."""
    ns, _, local = expat_name.rpartition(" ")
    if not ns:
        return local
    if ns == XML_NS:
        return f"xml:{local}"
    found = re.search(rb"([\w.-]+):" + re.escape(local.encode("utf-8")) + rb"\s*=", raw)
    return f"{found.group(1).decode('utf-8')}:{local}" if found else local
