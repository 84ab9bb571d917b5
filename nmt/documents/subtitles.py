"""SubRip (``.srt``, the ``srt`` library) and WebVTT (``.vtt``, ``webvtt-py``) subtitles.

The parsers find the cues; each cue's text is then located in the original file (after its
timing line) and replaced there, so cue numbers, identifiers, timecodes, cue settings, ``NOTE``
and ``STYLE`` blocks and blank lines stay byte for byte as they were.

A sentence often runs over several cues ("I told you" / "to wait here."). Consecutive cues are
translated as one unit until a cue ends a sentence (``.``, ``!``, ``?``, ``…`` and their CJK
forms, maybe followed by a closing quote or bracket), at most :data:`MAX_GROUP` cues, and the
translation is spread back over them in proportion to the lengths of their source texts,
cutting between words; each cue keeps its number of lines, the words balanced between them
(a cue left without a word, when the translation is shorter than the cues, gets "…").
A cue with markup (``<i>``, ``<v Bob>``) is translated alone, so its tags stay in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nmt.documents.units import Document, Unit, utf8
from nmt.errors import DataError

MAX_GROUP = 4
ENDS_SENTENCE = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019\u00bb)\]]*$")


def spread(words: list[str], weights: Sequence[int]) -> list[list[str]]:
    """``words`` cut into ``len(weights)`` consecutive parts, part ``i`` ending where the
    share ``weights[:i+1]`` of the characters ends; each part keeps at least one word while
    there are enough."""
    total = sum(weights) or 1
    sizes = [len(w) + 1 for w in words]
    whole = sum(sizes) or 1
    parts: list[list[str]] = [[] for _ in weights]
    bounds, acc = [], 0
    for weight in weights:
        acc += weight
        bounds.append(acc / total * whole)
    at, part = 0.0, 0
    for index, (word, size) in enumerate(zip(words, sizes, strict=True)):
        left = len(words) - index          # words not yet placed
        parts_left = len(weights) - part - 1  # parts after this one
        middle = at + size / 2
        if part < len(weights) - 1 and parts[part] and (middle > bounds[part]
                                                        or left <= parts_left):
            part += 1
        parts[part].append(word)
        at += size
    return parts


def lines_of(words: list[str], count: int) -> str:
    """Words on ``count`` lines of balanced length (joined by ``\\n``)."""
    if count <= 1 or len(words) < 2:
        return " ".join(words)
    return "\n".join(" ".join(part) for part in spread(words, [1] * count) if part)


class SubtitleDocument(Document):
    """The cues of an SRT or WebVTT file, grouped into sentences."""

    def __init__(self, data: bytes, name: str, fmt: str) -> None:
        self.name = name
        self.text = utf8(data, name)
        cues = self._parse(fmt)
        # each cue's text: its span in the file, found after the cue's own timing line
        self.spans: list[tuple[int, int]] = []
        at = 0
        self.eol = "\r\n" if "\r\n" in self.text else "\n"
        for content in cues:
            arrow = self.text.find("-->", at)
            line_end = self.text.find("\n", arrow)
            # the parsers join a cue's lines with \n; the file may have \r\n
            written = re.compile(r"\r?\n".join(re.escape(x) for x in content.split("\n")))
            found = written.search(self.text, line_end) if arrow >= 0 and line_end >= 0 \
                else None
            if found is None:
                raise DataError(f"{name}: cannot find the text of cue {len(self.spans) + 1} "
                                "after its timing line")
            self.spans.append(found.span())
            at = found.end()
        self.groups: list[list[int]] = []
        current: list[int] = []
        for index, content in enumerate(cues):
            if not content.strip():
                continue
            if "<" in content:  # markup: a cue of its own
                self.groups += [current, [index]] if current else [[index]]
                current = []
                continue
            current.append(index)
            if ENDS_SENTENCE.search(content.strip()) or len(current) == MAX_GROUP:
                self.groups.append(current)
                current = []
        if current:
            self.groups.append(current)
        self.cues = cues
        self.units = [Unit(" ".join(" ".join(cues[i].split()) for i in group),
                           f"cue {group[0] + 1}" + (f"-{group[-1] + 1}" if len(group) > 1
                                                    else ""))
                      for group in self.groups]

    def _parse(self, fmt: str) -> list[str]:
        """The cue texts, in order, as written (tags included)."""
        if fmt == "srt":
            import srt

            try:
                return [cue.content for cue in srt.parse(self.text)]
            except srt.SRTParseError as exc:
                raise DataError(f"{self.name}: not SubRip: {exc}") from None
        import webvtt
        from webvtt.errors import MalformedFileError

        try:
            return [cue.raw_text for cue in webvtt.from_string(self.text.lstrip("\ufeff"))]
        except MalformedFileError as exc:
            raise DataError(f"{self.name}: not WebVTT: {exc}") from None

    def render(self, translations: Sequence[str | None]) -> bytes:
        """The file with each group's translation spread over its cues."""
        self._check(translations)
        new: dict[int, str] = {}
        for group, translation in zip(self.groups, translations, strict=True):
            if translation is None:
                continue
            if len(group) == 1:
                cue = self.cues[group[0]]
                new[group[0]] = lines_of(translation.split(), cue.count("\n") + 1)
                continue
            # characters and a separator per cue, as spread counts words: a translation that
            # is the source itself goes back to the cues it came from
            weights = [len(" ".join(self.cues[i].split())) + 1 for i in group]
            for index, words in zip(group, spread(translation.split(), weights), strict=True):
                # fewer words than cues: the subtitler's mark of a sentence that goes on
                new[index] = lines_of(words, self.cues[index].count("\n") + 1) or "\u2026"
        out, at = [], 0
        for index, (start, end) in enumerate(self.spans):
            if index in new:
                out += [self.text[at:start], new[index].replace("\n", self.eol)]
                at = end
        out.append(self.text[at:])
        return "".join(out).encode("utf-8")
