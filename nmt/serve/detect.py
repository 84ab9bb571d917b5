"""Language identification for ``POST /detect`` and ``source: auto``, offline.

The detector is py3langid (a maintained fork of langid.py: a naive Bayes model over byte
n-grams, 97 languages, its model stored as NumPy arrays in an LZMA file, so loading runs no
pickle), restricted to the languages the server can translate from, so every answer names a
language that has a model. It was chosen over lingua (more accurate on very short texts, but a
compiled package of about 100 MB of models) and langdetect (random unless seeded, unmaintained
since 2021) because it is small, fast to load (under a second, once, on first use) and gives
normalised probabilities: the confidence is that probability in percent, over the candidate
languages. A text with no letters gets equal confidences; a language code py3langid does not
know (a toy code, a language it lacks) is never detected, only chosen when it is the one
candidate.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any


class LanguageDetector:
    """Ranks candidate languages for texts; thread-safe, the model loaded once on first use."""

    _model: Any = None
    _codes: frozenset[str] = frozenset()  # every code of the model, before any restriction
    _restricted: tuple[str, ...] = ()  # the candidates the model is restricted to now
    _lock = threading.Lock()

    @classmethod
    def _load(cls) -> Any:
        """The model (loaded once; the caller holds the lock)."""
        if cls._model is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            cls._model = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            cls._codes = frozenset(cls._model.nb_classes)
        return cls._model

    @classmethod
    def known(cls, code: str) -> bool:
        """Whether py3langid can identify this language code."""
        with cls._lock:
            cls._load()
            return code in cls._codes

    def rank(self, text: str, candidates: Sequence[str]) -> list[tuple[str, float]]:
        """(code, confidence in percent) of each candidate for ``text``, best first.

        One candidate is returned with confidence 100 without running the model; candidates
        py3langid does not know get confidence 0 (and come last).
        """
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) == 1:
            return [(candidates[0], 100.0)]
        with self._lock:  # set_languages changes the shared model's state
            model = self._load()
            known = [c for c in candidates if c in self._codes]
            if len(known) < 2:
                ranked = [(c, 100.0 / max(len(known), 1)) for c in known]
            else:
                if tuple(known) != LanguageDetector._restricted:  # slicing copies the model
                    model.set_languages(known)
                    LanguageDetector._restricted = tuple(known)
                ranked = [(code, round(100.0 * float(p), 2)) for code, p in model.rank(text)]
        unknown = [(c, 0.0) for c in candidates if c not in known]
        if not known:  # nothing to tell them apart with
            return [(c, round(100.0 / len(candidates), 2)) for c in candidates]
        return ranked + unknown

    def detect(self, texts: Sequence[str], candidates: Sequence[str],
               top: int = 3) -> list[dict[str, Any]]:
        """LibreTranslate's ``/detect`` answer for one text or a list: up to ``top``
        ``{"confidence", "language"}``, best first; over a list, each language's confidence
        is its mean over the texts, weighted by their lengths."""
        totals: dict[str, float] = {}
        weight = 0.0
        for text in texts:
            size = max(len(text), 1)
            weight += size
            for code, confidence in self.rank(text, candidates):
                totals[code] = totals.get(code, 0.0) + confidence * size
        ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
        return [{"confidence": round(total / weight, 2), "language": code}
                for code, total in ranked]
