"""gettext PO files (polib): the model fills each empty ``msgstr``, the rest stays as it was.

A unit is an entry's ``msgid``; an entry with a plural has two (``msgid``, ``msgid_plural``):
``msgstr[0]`` gets the first's translation and every other form (``nplurals`` of the
``Plural-Forms`` header, 2 without one) the second's. Translated entries, the header and
obsolete (``#~``) entries are left alone, unless ``retranslate`` (then every entry but the
header and obsolete ones is translated anew). A filled entry is flagged ``#, fuzzy`` so that a
translator reviews it, unless ``fuzzy=False``. polib reads the file; the filled ``msgstr``
blocks (formatted by polib as gettext's tools write them, wrapped at 79 columns) and flags are
written into the original lines, so the header, comments, references, contexts, obsolete
entries and the order stay byte for byte as they were.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import polib

from nmt.documents.units import Document, Unit, utf8
from nmt.errors import DataError

WRAP = 79  # gettext's msgmerge / msgcat width
NPLURALS = re.compile(r"nplurals\s*=\s*(\d+)")


def _empty(entry: polib.POEntry) -> bool:
    """No translation at all (polib's ``translated()`` also says no for a fuzzy one)."""
    if entry.msgid_plural:
        return not any(entry.msgstr_plural.values())
    return not entry.msgstr


class PoDocument(Document):
    """A PO file's entries to fill."""

    def __init__(self, data: bytes, name: str, retranslate: bool = False,
                 fuzzy: bool = True) -> None:
        self.name, self.fuzzy = name, fuzzy
        text = utf8(data, name, "; convert it first, for example msgconv -t UTF-8")
        self.bom = "\ufeff" if text.startswith("\ufeff") else ""  # kept, and out of the way
        text = text[len(self.bom):]
        # polib reads a string that names an existing file as that file: never hand it one
        content = text if "\n" in text else text + "\n"
        if os.path.exists(content):
            raise DataError(f"{name}: not a PO file")
        try:
            self.po = polib.pofile(content, wrapwidth=WRAP)
            self.text = text
        except (OSError, ValueError) as exc:
            raise DataError(f"{name}: cannot read the PO file: {exc}") from None
        match = NPLURALS.search(self.po.metadata.get("Plural-Forms", ""))
        self.nplurals = int(match.group(1)) if match else 2
        self.entries = [entry for entry in self.po
                        if not entry.obsolete and entry.msgid
                        and (retranslate or _empty(entry))]
        self.units = []
        for entry in self.entries:
            where = f"line {max(entry.linenum, 1)}"
            self.units.append(Unit(entry.msgid, where))
            if entry.msgid_plural:
                self.units.append(Unit(entry.msgid_plural, where + " (plural)"))

    def render(self, translations: Sequence[str | None]) -> bytes:
        """The PO file with the entries filled, written into the original lines: each filled
        entry's ``msgstr`` block is replaced (formatted by polib) and its flags line gains
        ``fuzzy``; every other line stays as it was."""
        self._check(translations)
        lines = self.text.splitlines(keepends=True)
        edits: list[tuple[int, int, list[str]]] = []  # [start, end) line ranges, new lines
        it = iter(translations)
        for entry in self.entries:
            one = next(it)
            many = next(it) if entry.msgid_plural else None
            if one is None or (entry.msgid_plural and many is None):
                continue  # both forms or neither
            filled = polib.POEntry(msgid=entry.msgid, msgid_plural=entry.msgid_plural)
            if entry.msgid_plural:
                filled.msgstr_plural = {0: one, **{k: many for k in range(1, self.nplurals)}}
            else:
                filled.msgstr = one
            new = filled.__unicode__(wrapwidth=WRAP).splitlines(keepends=True)
            new = new[next(i for i, x in enumerate(new) if x.startswith("msgstr")):]
            first = max(entry.linenum - 1, 0)
            msgid = next(i for i in range(first, len(lines)) if lines[i].startswith("msgid "))
            start = next(i for i in range(msgid, len(lines)) if lines[i].startswith("msgstr"))
            end = start + 1
            while end < len(lines) and (lines[end].startswith('"')
                                        or lines[end].startswith("msgstr[")):
                end += 1
            eol = "\r\n" if lines[start].endswith("\r\n") else "\n"  # the file's own
            new = [line.rstrip("\n") + eol for line in new]
            if not lines[end - 1].endswith("\n"):  # the file's last line: no newline
                new[-1] = new[-1].rstrip("\r\n")
            edits.append((start, end, new))
            if self.fuzzy and "fuzzy" not in entry.flags:
                edits.append(_fuzzy(lines, first, msgid))
        for start, end, new in sorted(edits, reverse=True):
            lines[start:end] = new
        return (self.bom + "".join(lines)).encode("utf-8")


def _fuzzy(lines: list[str], first: int, msgid: int) -> tuple[int, int, list[str]]:
    """The edit that flags an entry (lines ``first`` to ``msgid``) fuzzy: ``fuzzy`` first on
    its ``#,`` line, or a ``#, fuzzy`` line where gettext puts flags (before ``#|``,
    ``msgctxt`` and ``msgid``)."""
    for i in range(first, msgid):
        if lines[i].startswith("#,"):
            return i, i + 1, ["#, fuzzy," + lines[i][2:]]
    at = next(i for i in range(first, msgid + 1)
              if lines[i].startswith(("#|", "msgctxt", "msgid")))
    return at, at, ["#, fuzzy" + ("\r\n" if lines[at].endswith("\r\n") else "\n")]
