"""Scoring with sacreBLEU: corpus BLEU, chrF and TER of detokenised hypotheses, with their
signatures, and the BLEU tokenizer for a target language.

Validation, ``nmt evaluate`` and the recipes' score stage all score here. Hypotheses and
references are plain text files, one segment a line; their line counts must agree (an error
names both), and invalid UTF-8 is reported with its line number. Only the standard library is
imported at module level (sacreBLEU when scoring runs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nmt.errors import ConfigError, DataError
from nmt.fileio import split_lines


@dataclass
class Scores:
    """Corpus-level scores and the sacreBLEU signatures that make them reproducible."""

    bleu: float
    chrf: float
    ter: float
    bleu_signature: str
    chrf_signature: str
    ter_signature: str
    sentences: int


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file, split on ``\\n`` only, without line endings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    return split_lines(path.read_bytes(), str(path))


#: BLEU tokenizers for scripts written without spaces (13a would score whole sentences as words).
_CJK_TOKENIZERS = {"zh": "zh", "ja": "char", "ko": "char", "th": "char", "my": "char",
                   "km": "char", "lo": "char"}


def bleu_tokenizer(lang: str | None) -> str:
    """sacreBLEU's tokenizer for a target language: zh, char for other unspaced scripts, 13a."""
    return _CJK_TOKENIZERS.get((lang or "").split("-")[0].split("_")[0].lower(), "13a")


def score(hyps: Sequence[str], refs: Sequence[Sequence[str]], hyp_name: str = "hypotheses",
          ref_names: Sequence[str] | None = None, tokenize: str = "13a") -> Scores:
    """BLEU, chrF and TER of ``hyps`` against one or more reference streams."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    names = ref_names or [f"references {i + 1}" for i in range(len(refs))]
    for name, ref in zip(names, refs, strict=True):
        if len(ref) != len(hyps):
            raise DataError(f"line counts differ: {hyp_name} has {len(hyps)} lines but {name} "
                            f"has {len(ref)}")
    hyps, refs = list(hyps), [list(r) for r in refs]
    try:
        bleu = BLEU(tokenize=tokenize)
    except Exception as exc:  # an unknown name, or a tokenizer whose extra is not installed
        raise DataError(f"sacreBLEU tokenizer '{tokenize}' is not available: {exc}") from None
    chrf, ter = CHRF(), TER()
    return Scores(bleu=bleu.corpus_score(hyps, refs).score,
                  chrf=chrf.corpus_score(hyps, refs).score,
                  ter=ter.corpus_score(hyps, refs).score,
                  bleu_signature=str(bleu.get_signature()),
                  chrf_signature=str(chrf.get_signature()),
                  ter_signature=str(ter.get_signature()), sentences=len(hyps))


def format_scores(scores: Scores, as_json: bool = False) -> str:
    """Scores as JSON or as three human-readable lines."""
    if as_json:
        return json.dumps(asdict(scores), indent=2)
    return "\n".join([f"BLEU = {scores.bleu:.2f}  ({scores.bleu_signature})",
                      f"chrF = {scores.chrf:.2f}  ({scores.chrf_signature})",
                      f"TER  = {scores.ter:.2f}  ({scores.ter_signature})"])


def evaluate_files(hyp: str | Path, refs: Sequence[str | Path], tokenize: str | None = None,
                   lang: str | None = None) -> Scores:
    """Score a hypothesis file against reference files; the BLEU tokenizer is ``tokenize``, or
    the one for the target language ``lang`` (13a when neither is given)."""
    if not refs:
        raise ConfigError("no reference file to score against")
    return score(read_lines(hyp), [read_lines(r) for r in refs], hyp_name=str(hyp),
                 ref_names=[str(r) for r in refs], tokenize=tokenize or bleu_tokenizer(lang))
