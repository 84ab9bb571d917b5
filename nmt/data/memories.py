"""Translation memories as corpora: TMX, XLIFF (1.2 and 2.0) and gettext PO files.

Each reader yields ``{"src", "tgt"}`` rows for :mod:`nmt.data.sources`, in file order, and
keeps a :class:`Tally` of what it did, logged once the file is read:

- **Languages** are matched by their primary subtag (``de-DE``, ``de_DE`` and ``de`` all match
  ``data.tgt_lang: de``; ``de-AT`` does not match ``de-DE``). A TMX unit takes the variants of
  the two languages; an XLIFF file or PO catalogue written the other way round (its source
  language is ``data.tgt_lang``) is read swapped; other languages are an error naming them.
- **Inline tags** (TMX ``bpt ept ph it ut hi``, XLIFF 1.2 ``g x bx ex bpt ept ph it mrk``,
  XLIFF 2.0 ``pc ph sc ec sm em mrk``) are stripped and counted: the native codes they carry
  (``<b>``, ``{1}``) are dropped, the text that ``hi``, ``g``, ``pc`` and ``mrk`` enclose is kept.
  PO has no inline markup of its own; its strings are kept as they are.
- **Whitespace** runs (line breaks included) become one space, so one unit is one line.
- **Units missing a side** (no variant in a language, an empty or absent target, an
  untranslated PO entry) are counted and skipped; so are PO entries marked ``fuzzy`` (a guess
  of gettext's, not a translation) and obsolete ones.
- **A malformed file** is a :class:`~nmt.errors.DataError` with the file and position.

XML goes through defusedxml (no entity declarations or external references from a file a user
received; a plain ``<!DOCTYPE>`` line is fine), read incrementally with each unit dropped once
read, so a large TMX stays out of memory; PO through polib.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt.errors import DataError

log = logging.getLogger(__name__)

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
XLIFF_12 = "urn:oasis:names:tc:xliff:document:1.2"
XLIFF_20 = "urn:oasis:names:tc:xliff:document:2.0"

#: Inline elements whose content is native code (dropped with them), per format.
_CODE_TAGS = {"tmx": {"bpt", "ept", "ph", "it", "ut"},
              "xliff": {"bpt", "ept", "ph", "it", "x", "bx", "ex", "sc", "ec", "sm", "em"}}
#: Inline elements that enclose translatable text (kept, the tag itself stripped).
_TEXT_TAGS = {"tmx": {"hi", "sub"}, "xliff": {"g", "mrk", "pc", "sub"}}

_SPACES = re.compile(r"\s+")


@dataclass
class Tally:
    """What reading one file did: units read and kept, tags stripped, units skipped by why."""

    path: str
    units: int = 0
    kept: int = 0
    tags: int = 0
    tagged_segments: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def describe(self) -> str:
        """One line for the log."""
        parts = [f"{self.kept:,} of {self.units:,} units kept"]
        if self.tags:
            parts.append(f"{self.tags:,} inline tags stripped from {self.tagged_segments:,} "
                         "segments")
        parts += [f"{n:,} skipped: {why}" for why, n in sorted(self.skipped.items())]
        return f"{self.path}: " + "; ".join(parts)


def _subtags(code: str) -> tuple[str, str | None]:
    """(language, region) of a code such as ``de``, ``de_DE``, ``zh-Hans-CN`` (a four-letter
    script subtag is passed over)."""
    parts = code.strip().replace("_", "-").lower().split("-")
    region = next((p for p in parts[1:] if len(p) != 4), None)
    return parts[0], region


def language_matches(code: str | None, wanted: str) -> bool:
    """Whether a file's language code names the configured language (by primary subtag;
    two regions must agree when both are given)."""
    if not code:
        return False
    (have, have_region), (want, want_region) = _subtags(code), _subtags(wanted)
    return have == want and (not have_region or not want_region or have_region == want_region)


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _local(tag: Any) -> str:
    """An element's name without its namespace."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def inline_text(element: Any, kind: str, tally: Tally) -> str:
    """The text of a segment element with its inline tags stripped (counted in ``tally``)."""
    code, keep = _CODE_TAGS[kind], _TEXT_TAGS[kind]
    tags = 0

    def walk(node: Any) -> str:
        nonlocal tags
        parts = [node.text or ""]
        for child in node:
            name = _local(child.tag)
            if name == "cp" and child.get("hex"):  # XLIFF 2.0: a code point XML cannot hold
                parts.append(_code_point(child.get("hex"), tally.path))
            elif name in code:
                tags += 1
            elif name in keep:
                tags += 1
                parts.append(walk(child))
            else:  # an unknown element: keep its text, count it as a tag
                tags += 1
                parts.append(walk(child))
            parts.append(child.tail or "")
        return "".join(parts)

    text = walk(element)
    if tags:
        tally.tags += tags
        tally.tagged_segments += 1
    return _clean(text)


def _code_point(text: str, path: str) -> str:
    try:
        return chr(int(text, 16))
    except (ValueError, OverflowError):
        raise DataError(f"{path}: <cp hex=\"{text}\"> is not a code point") from None


def _elements(path: str, units: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """``(event, element)`` of an incremental parse (``start`` and ``end``); each unit named
    in ``units`` is detached from its parent once the caller has read it, so the tree never
    holds more than one unit however large the file."""
    stack: list[Any] = []
    for event, element in _iterparse(path, ("start", "end")):
        if event == "start":
            stack.append(element)
            yield event, element
            continue
        stack.pop()
        yield event, element
        if stack and _local(element.tag) in units:
            stack[-1].remove(element)


def _iterparse(path: str, events: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """defusedxml's incremental parse, with malformed XML turned into a one-line error.

    A document type declaration is allowed (TMX tools write ``<!DOCTYPE tmx SYSTEM
    "tmx14.dtd">``), but entity declarations and external references are refused."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import iterparse

    try:
        yield from iterparse(path, events=events, forbid_dtd=False, forbid_entities=True,
                             forbid_external=True)
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        reason = str(exc).split(":")[0]
        raise DataError(f"{path}: malformed XML at line {line}, column {column + 1} "
                        f"({reason}); fix the file or export it again") from None
    except DefusedXmlException as exc:
        raise DataError(f"{path}: refused ({type(exc).__name__}: {exc}); translation memories "
                        "may not declare entities or refer to external ones") from None


# --------------------------------------------------------------------------- TMX


def read_tmx(path: str, src_lang: str, tgt_lang: str, tally: Tally) -> Iterator[dict[str, str]]:
    """The (src, tgt) pairs of a TMX file's translation units (``tu``)."""
    seen: set[str] = set()
    for event, element in _elements(path, ("tu",)):
        if event != "end" or _local(element.tag) != "tu":
            continue
        tally.units += 1
        sides: dict[str, str] = {}
        for tuv in element:
            if _local(tuv.tag) != "tuv":
                continue
            lang = tuv.get(XML_LANG) or tuv.get("lang") or ""
            seen.add(lang)
            side = "src" if language_matches(lang, src_lang) else \
                "tgt" if language_matches(lang, tgt_lang) else None
            seg = next((child for child in tuv if _local(child.tag) == "seg"), None)
            if side and seg is not None and side not in sides:
                sides[side] = inline_text(seg, "tmx", tally)
        if not sides.get("src") or not sides.get("tgt"):
            tally.skip("a language missing or empty")
            continue
        tally.kept += 1
        yield sides
    if tally.units and not tally.kept and not all(
            any(language_matches(lang, want) for lang in seen) for want in (src_lang, tgt_lang)):
        raise DataError(f"{path}: no unit has the languages {src_lang} and {tgt_lang}; the file "
                        f"has {', '.join(sorted(seen)) or 'no xml:lang'}: check data.src_lang "
                        "and data.tgt_lang")


# --------------------------------------------------------------------------- XLIFF


def _direction(path: str, source: str | None, target: str | None, src_lang: str,
               tgt_lang: str) -> bool:
    """Whether a file's (source, target) languages are the config's reversed (then swap).
    A file that names no language is taken as written."""
    if not source or (language_matches(source, src_lang)
                      and (not target or language_matches(target, tgt_lang))):
        return False
    if language_matches(source, tgt_lang) and (not target or language_matches(target, src_lang)):
        return True
    raise DataError(f"{path}: the file translates {source} into {target or '?'}, not "
                    f"{src_lang} into {tgt_lang}: check data.src_lang and data.tgt_lang")


def read_xliff(path: str, src_lang: str, tgt_lang: str,
               tally: Tally) -> Iterator[dict[str, str]]:
    """The (src, tgt) pairs of an XLIFF 1.2 file (``trans-unit``) or 2.0 file (``unit``, its
    segments joined in order)."""
    swap = False
    for event, element in _elements(path, ("trans-unit", "unit")):
        name = _local(element.tag)
        if event == "start":
            if name == "xliff" and element.get("srcLang"):  # 2.0: languages on the root
                swap = _direction(path, element.get("srcLang"), element.get("trgLang"),
                                  src_lang, tgt_lang)
            elif name == "file" and element.get("source-language"):  # 1.2: on each file
                swap = _direction(path, element.get("source-language"),
                                  element.get("target-language"), src_lang, tgt_lang)
            continue
        if name not in ("trans-unit", "unit"):
            continue
        tally.units += 1
        if name == "trans-unit":
            source = next((c for c in element if _local(c.tag) == "source"), None)
            target = next((c for c in element if _local(c.tag) == "target"), None)
            pair = [inline_text(x, "xliff", tally) if x is not None else ""
                    for x in (source, target)]
        else:
            pair = _unit_20(element, tally)
        if swap:
            pair.reverse()
        if not pair[0] or not pair[1]:
            tally.skip("no source or no target")
            continue
        tally.kept += 1
        yield {"src": pair[0], "tgt": pair[1]}


def _unit_20(unit: Any, tally: Tally) -> list[str]:
    """An XLIFF 2.0 unit's source and target: its segments and ignorables joined in order
    (empty target when a segment has none)."""
    sources, targets, complete = [], [], True
    for part in unit:
        if _local(part.tag) not in ("segment", "ignorable"):
            continue
        source = next((c for c in part if _local(c.tag) == "source"), None)
        target = next((c for c in part if _local(c.tag) == "target"), None)
        if source is not None:
            sources.append(inline_text(source, "xliff", tally))
        if target is not None:
            targets.append(inline_text(target, "xliff", tally))
        elif _local(part.tag) == "segment":
            complete = False
    return [_clean(" ".join(sources)), _clean(" ".join(targets)) if complete else ""]


# --------------------------------------------------------------------------- PO


def read_po(path: str, src_lang: str, tgt_lang: str, tally: Tally) -> Iterator[dict[str, str]]:
    """The (msgid, msgstr) pairs of a gettext catalogue, plural forms paired with the plural
    msgid; read swapped when its ``Language`` is ``data.src_lang``."""
    import polib

    try:
        catalogue = polib.pofile(path, wrapwidth=0)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        line = re.search(r"\(line (\d+)\)", str(exc))
        what = f"a syntax error at line {line.group(1)}" if line else str(exc)
        raise DataError(f"{path}: not a valid PO file ({what}); fix the file or export it "
                        "again") from None
    language = catalogue.metadata.get("Language", "")
    if not language or language_matches(language, tgt_lang):
        swap = False  # msgids in the source language (gettext's are English by convention)
    elif language_matches(language, src_lang):
        swap = True  # a catalogue in the source language: its msgids are the targets
    else:
        raise DataError(f"{path}: a catalogue in {language}, neither {tgt_lang} "
                        f"(data.tgt_lang) nor {src_lang} (data.src_lang): check the languages")
    for entry in catalogue:
        tally.units += 1
        if entry.obsolete:
            tally.skip("obsolete")
            continue
        if "fuzzy" in entry.flags:
            tally.skip("fuzzy")
            continue
        if entry.msgid_plural:
            forms = entry.msgstr_plural
            pairs = [(entry.msgid, forms.get(0, "")), (entry.msgid_plural, forms.get(1, ""))]
        else:
            pairs = [(entry.msgid, entry.msgstr)]
        pairs = [(_clean(a), _clean(b)) for a, b in pairs if _clean(a) and _clean(b)]
        if not pairs:
            tally.skip("untranslated")
            continue
        tally.kept += 1
        for source, target in pairs:
            yield {"src": target, "tgt": source} if swap else {"src": source, "tgt": target}


READERS = {"tmx": read_tmx, "xliff": read_xliff, "po": read_po}


def read_memory(kind: str, path: str, src_lang: str, tgt_lang: str) -> Iterator[dict[str, str]]:
    """The pairs of a translation memory of ``kind`` (tmx, xliff, po); logs its tally."""
    if not Path(path).is_file():
        raise DataError(f"{kind.upper()} file not found: {path}")
    tally = Tally(path)
    try:
        yield from READERS[kind](path, src_lang, tgt_lang, tally)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    log.info("data: %s", tally.describe())
