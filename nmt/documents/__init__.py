"""The documents room: files translated with their structure kept (``nmt translate -i FILE``).

A format module reads a file into a :class:`~nmt.documents.units.Document`: the texts to
translate (its *units*, in file order, each with a location such as ``line 12``) and a way to
write the file back with each unit's translation in place and every other byte as it was.
:func:`~nmt.documents.units.translate_document` does the rest, the same for every format:
splits units into sentences (pysbd), translates them with a given function (lines in, lines
out: the room never loads a model), joins them back with the original whitespace and keeps a
unit whose placeholders (``%s``, ``{0}``, ``<b>``, ``&amp;`` ...) did not come back intact
untranslated, counted in the report.

- :mod:`~nmt.documents.units`: the document contract, sentences, placeholders, the report;
- :mod:`~nmt.documents.po`: gettext PO (polib): empty ``msgstr`` filled, plural forms too;
- :mod:`~nmt.documents.xliff`: XLIFF 1.2 and 2.0: ``<target>`` written, inline codes kept;
- :mod:`~nmt.documents.html`: HTML (the server's ``format: html`` uses the same module);
- :mod:`~nmt.documents.markdown`: Markdown (markdown-it-py): code, URLs and link targets kept;
- :mod:`~nmt.documents.subtitles`: SubRip and WebVTT: timings kept, sentences across cues;
- :mod:`~nmt.documents.text`: plain text, line by line (the server's ``.txt`` uploads).

Imports the shared modules only; the inference, serve and cli rooms use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nmt.errors import ConfigError

if TYPE_CHECKING:
    from nmt.documents.units import Document

#: ``--format`` values, and the file suffixes that select them.
FORMATS = ("text", "po", "xliff", "html", "md", "srt", "vtt")
SUFFIXES = {".txt": "text", ".po": "po", ".pot": "po", ".xlf": "xliff", ".xliff": "xliff",
            ".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".srt": "srt",
            ".vtt": "vtt"}


def format_of(path: str | Path | None, given: str | None = None) -> str:
    """The document format: ``given`` (``--format``) if set, else from the file's suffix
    (``text`` for any other suffix, and for stdin)."""
    if given:
        if given not in FORMATS:
            raise ConfigError(f"--format {given}: choose one of {', '.join(FORMATS)}")
        return given
    if path is None:
        return "text"
    return SUFFIXES.get(Path(path).suffix.lower(), "text")


def read_document(data: bytes, fmt: str, name: str = "input", **options: bool) -> Document:
    """The :class:`~nmt.documents.units.Document` of a file's bytes in format ``fmt``; a file
    the format's parser cannot read raises DataError naming ``name``.
    ``options``: ``retranslate`` (po, xliff) and ``fuzzy`` (po)."""
    if fmt == "text":
        from nmt.documents.text import TextDocument as cls
    elif fmt == "po":
        from nmt.documents.po import PoDocument as cls
    elif fmt == "xliff":
        from nmt.documents.xliff import XliffDocument as cls
    elif fmt == "html":
        from nmt.documents.html import HtmlDocument as cls
    elif fmt == "md":
        from nmt.documents.markdown import MarkdownDocument as cls
    elif fmt in ("srt", "vtt"):
        from nmt.documents.subtitles import SubtitleDocument

        return SubtitleDocument(data, name, fmt)
    else:
        raise ConfigError(f"no document reader for format {fmt!r}")
    return cls(data, name, **options)
