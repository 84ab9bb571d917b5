"""Glossaries: source terms whose given translations must appear in the output.

A glossary file is UTF-8 text, one entry per line: ``source term<TAB>target term``; blank lines
and lines starting with ``#`` are skipped. A source term is found in a line as a whole word
sequence, case and all (``File`` matches "the File menu", not "Profile" or "file"); where
terms overlap, the one that starts first wins, and of those that start there the longest. Each
term found gives the translator one constraint: its target term, encoded by the model's
target SentencePiece model, which :func:`~nmt.models.search.constrained_beam_search` places in
the output. A line with no term is searched as without a glossary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nmt.errors import DataError


@dataclass(frozen=True)
class Unplaced:
    """A glossary term that the output of a line does not hold (0-based line index)."""

    index: int
    source: str
    target: str


class Glossary:
    """Source term -> target term entries, found in lines by :meth:`find`."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        self.entries = {src.strip(): tgt.strip() for src, tgt in entries}
        if not self.entries:
            self._pattern = None
            return
        # longest first, so that "File Manager" wins over "File"; word edges on both sides
        terms = sorted(self.entries, key=len, reverse=True)
        self._pattern = re.compile(
            r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")(?!\w)")

    @classmethod
    def read(cls, path: str | Path) -> Glossary:
        """Read a TSV glossary; a line without exactly one tab, or with an empty side, is an
        error naming the line."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read the glossary {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"the glossary {path} is not UTF-8 (byte {exc.start})") from None
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise DataError(f"{path}: line {number}: expected 'source term<TAB>target "
                                f"term', got {line[:60]!r}")
            entries.append((fields[0], fields[1]))
        if not entries:
            raise DataError(f"{path}: the glossary has no entries")
        return cls(entries)

    def find(self, line: str) -> list[tuple[str, str]]:
        """The (source term, target term) entries found in a line, in order, each target term
        once."""
        if self._pattern is None:
            return []
        found, targets = [], set()
        for match in self._pattern.finditer(line):
            target = self.entries[match.group(0)]
            if target not in targets:
                targets.add(target)
                found.append((match.group(0), target))
        return found

    def __len__(self) -> int:
        return len(self.entries)
