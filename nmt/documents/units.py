"""What every document format shares: units to translate, sentences, placeholders, the report.

A format reads a file into a :class:`Document`: its :attr:`~Document.units` are the texts to
translate, in file order (a PO entry's ``msgid``, an XLIFF segment's text run, an HTML text run,
a Markdown paragraph's run, the text of subtitle cues that make one sentence), and
:meth:`~Document.render` writes the file back with a translation, or ``None`` (left as it
was), for each unit. :func:`translate_document` translates the units:

1. each unit is split into sentences (pysbd, for the model's source language, or the
   language-neutral rule of :data:`SENTENCE_END` where pysbd has no rules for it); a sentence's
   inner whitespace (a paragraph's line breaks) becomes one space, since the model reads lines;
2. the distinct sentences of the whole document are translated in one call (lines in, lines
   out), so batching and sorting by length work across the file;
3. each unit is joined back with the whitespace that stood between and around its sentences;
4. a unit whose placeholders (:func:`placeholders`) do not come back as a multiset equal to the
   source's is left untranslated (``None``) and named in the report with its location.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nmt.errors import DataError

#: Sentence ends where pysbd has no rules for the language: after . ! ? … and their CJK forms,
#: before whitespace.
SENTENCE_END = re.compile(r"(?<=[.!?\u2026\u3002\uff01\uff1f])\s+")

#: Codes that must come back as they are: printf conversions (``%s``, ``%1$d``, ``%(name)s``,
#: ``%.2f``), Qt's ``%1``, braces (``{0}``, ``{name}``, ``{0:.2f}``, ``{}``), shell and template
#: variables (``${name}``, ``$(NAME)``), tags (``<b>``, ``</a>``, ``<br/>``), character
#: references (``&amp;``, ``&#169;``) and URLs.
PLACEHOLDER = re.compile(
    r"%\([A-Za-z_]\w*\)[-+#0]*\d*(?:\.\d+)?[diouxXeEfFgGcrs]"
    r"|%(?:\d+\$)?[-+#0]*\d*(?:\.\d+)?(?:hh|h|ll|l|L|z|j|t)?[diouxXeEfFgGcsp]"
    r"|%\d+"
    r"|\{[\w.:!\[\]-]*\}"
    r"|\$\{[^{}\s]+\}|\$\([A-Za-z_]\w*\)"
    r"|</?[A-Za-z][\w:.-]*(?:\s[^<>]*)?/?>"
    r"|&(?:[A-Za-z][A-Za-z0-9]*|#\d+|#[xX][0-9A-Fa-f]+);"
    r"|\b(?:https?|ftp)://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]")

Translate = Callable[[list[str]], list[str]]


def utf8(data: bytes, name: str, hint: str = "") -> str:
    """A file's bytes as text; not UTF-8 is a DataError naming the file and the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 (byte {exc.start}){hint}") from None


def placeholders(text: str) -> Counter:
    """The placeholders of a text, counted (their order may change in a translation)."""
    return Counter(PLACEHOLDER.findall(text))


@dataclass(frozen=True)
class Unit:
    """A text to translate and where it is, for reports: ``line 12``, ``cue 3`` ..."""

    text: str
    where: str


class Document(ABC):
    """A file split into units to translate and the bytes around them."""

    name: str
    units: list[Unit]
    #: what the format left untranslated for its own reasons (``location: why``)
    notes: Sequence[str] = ()

    @abstractmethod
    def render(self, translations: Sequence[str | None]) -> bytes:
        """The file with unit ``i`` translated as ``translations[i]``; ``None`` keeps it as it
        was. With every unit ``None`` the bytes are the input's."""

    def _check(self, translations: Sequence[str | None]) -> None:
        if len(translations) != len(self.units):
            raise ValueError(f"{len(self.units)} units, {len(translations)} translations")


@dataclass
class Report:
    """What :func:`translate_document` did: units translated, and those it left as they were
    because their placeholders did not survive (``location: what``)."""

    units: int = 0
    translated: int = 0
    placeholder_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kept = len(self.placeholder_errors)
        return (f"{self.translated} of {self.units} units translated"
                + (f", {kept} left untranslated (placeholders changed)" if kept else ""))


class SentenceSplitter:
    """Splits a text into pieces that put together give the text back exactly; each piece is
    one sentence with the whitespace after it."""

    def __init__(self, language: str | None) -> None:
        self._segmenter = None
        if language:
            import pysbd

            code = language.split("-")[0].split("_")[0].lower()
            if code in pysbd.languages.LANGUAGE_CODES:
                self._segmenter = pysbd.Segmenter(language=code, clean=False, char_span=True)

    def __call__(self, text: str) -> list[str]:
        if self._segmenter is not None:
            pieces = [text[s.start:s.end] for s in self._segmenter.segment(text)]
            if "".join(pieces) == text:
                return pieces
        # the rule: cut after each sentence end, keeping the whitespace with the sentence
        pieces, start = [], 0
        for match in SENTENCE_END.finditer(text):
            pieces.append(text[start:match.end()])
            start = match.end()
        return [*pieces, text[start:]] if start < len(text) else pieces or [text]


def _shape(piece: str) -> tuple[str, str, str]:
    """(leading whitespace, the sentence as one line, trailing whitespace)."""
    core = piece.strip()
    if not core:
        return piece, "", ""
    lead = piece[:len(piece) - len(piece.lstrip())]
    trail = piece[len(piece.rstrip()):]
    return lead, " ".join(core.split()), trail


class Plan:
    """A document's sentences to translate (:attr:`lines`, distinct, in one list) and how
    their translations become the units' (:meth:`finish`): the two halves of
    :func:`translate_document`, for a caller that translates in between on its own terms (the
    server awaits its batcher)."""

    def __init__(self, document: Document, language: str | None = None,
                 sentences: bool = True) -> None:
        split = SentenceSplitter(language) if sentences else (lambda text: [text])
        self.document = document
        self.shaped = [[_shape(piece) for piece in split(unit.text)] for unit in document.units]
        self.lines = sorted({core for pieces in self.shaped for _, core, _ in pieces if core})

    def finish(self, translations: Sequence[str]) -> tuple[list[str | None], Report]:
        """Each unit's translation (``None``: left as it was) from those of :attr:`lines`."""
        translated = dict(zip(self.lines, translations, strict=True))
        report = Report(units=len(self.document.units))
        out: list[str | None] = []
        for unit, pieces in zip(self.document.units, self.shaped, strict=True):
            text = "".join(lead + (translated[core] if core else "") + trail
                           for lead, core, trail in pieces)
            want, got = placeholders(unit.text), placeholders(text)
            if want != got:
                missing = ", ".join(sorted((want - got).elements()))
                extra = ", ".join(sorted((got - want).elements()))
                what = "; ".join(x for x in (f"missing {missing}" if missing else "",
                                              f"added {extra}" if extra else "") if x)
                report.placeholder_errors.append(f"{unit.where}: {what}")
                out.append(None)
            else:
                report.translated += 1
                out.append(text)
        return out, report


def translate_document(document: Document, translate: Translate, language: str | None = None,
                       sentences: bool = True) -> tuple[list[str | None], Report]:
    """Translations of the document's units (``None``: left as it was) and the report.

    ``translate`` maps lines to their translations (one each, in order); ``language`` (the
    model's source language) picks the sentence rules; ``sentences=False`` translates each
    unit as one line.
    """
    plan = Plan(document, language, sentences)
    return plan.finish(translate(plan.lines) if plan.lines else [])
