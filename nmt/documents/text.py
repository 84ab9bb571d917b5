"""Plain text as a document (the server's ``.txt`` uploads): each non-blank line is a unit, and
line endings (``\\n``, ``\\r\\n``), blank lines and the final newline (or its absence) are kept.
``nmt translate`` reads text through its own line contract instead (one output line per input
line, streamed); the two agree on every line.
"""

from __future__ import annotations

from collections.abc import Sequence

from nmt.documents.units import Document, Unit, utf8


class TextDocument(Document):
    """The lines of a UTF-8 text file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.name = name
        text = utf8(data, name)
        self.lines = text.split("\n")
        self.rows = [i for i, line in enumerate(self.lines) if line.strip()]
        self.units = [Unit(self.lines[i].rstrip("\r"), f"line {i + 1}") for i in self.rows]

    def render(self, translations: Sequence[str | None]) -> bytes:
        """The text with each translated line in place, its line ending kept."""
        self._check(translations)
        lines = list(self.lines)
        for row, translation in zip(self.rows, translations, strict=True):
            if translation is not None:
                ending = "\r" if lines[row].endswith("\r") else ""
                lines[row] = translation.replace("\n", " ") + ending
        return "\n".join(lines).encode("utf-8")
