"""Scoring with sacreBLEU: corpus BLEU, chrF and TER of detokenised hypotheses, with signatures;
and evaluating a model directory (translate a source file or a split of its config, keep the
hypotheses with a ``.json`` saying what made them, score them).

Hypotheses and references are plain text files, one segment a line; their line counts must
agree (an error names both), and invalid UTF-8 is reported with its line number. Only the
standard library is imported here; translating imports torch when it runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.errors import ConfigError, DataError
from nmt.fileio import split_lines

if TYPE_CHECKING:
    from nmt.config import Config
    from nmt.translate import Translator, Truncation


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


# --------------------------------------------------------------------------- a model directory


@dataclass
class ModelEvaluation:
    """What :func:`evaluate_model` did: the scores, the hypotheses file, the ``.json`` beside
    it (model hash, decoding settings, device, precision, speed) and the truncated sources."""

    scores: Scores
    hypotheses: Path
    meta: Path
    precision: str
    truncated: list[Truncation] = field(default_factory=list)


def meta_path(hyp_path: str | Path) -> Path:
    """The ``.json`` beside a hypotheses file: ``X.beam5.hyp`` -> ``X.beam5.json``."""
    hyp_path = Path(hyp_path)
    if hyp_path.suffix == ".json":
        return hyp_path.with_name(hyp_path.name + ".json")
    return hyp_path.with_suffix(".json")


def translate_to_file(translator: Translator, src: Sequence[str], hyp_path: str | Path,
                      meta: str | Path, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Translate ``src`` with the translator's ``decoding`` config (one best hypothesis a line)
    and write the hypotheses, then ``meta``: ``key`` plus the beam size, sentences, seconds,
    speed, device and precision. Returns what was written to ``meta``."""
    from nmt.device import precision_name
    from nmt.fileio import write_text_atomic

    src = list(src)
    start = time.perf_counter()
    hyps = translator.translate(src)
    seconds = time.perf_counter() - start
    write_text_atomic(hyp_path, "".join(h.replace("\n", " ") + "\n" for h in hyps))
    info = {**(key or {}), "beam_size": translator.config.decoding.beam_size,
            "sentences": len(src), "seconds": seconds,
            "sentences_per_s": len(src) / max(seconds, 1e-9), "device": str(translator.device),
            "precision": precision_name(translator.dtype)}
    write_text_atomic(meta, json.dumps(info, indent=2) + "\n")
    return info


def evaluate_model(model_dir: str | Path, src: str | Path | None = None,
                   refs: Sequence[str | Path] = (), split: str | None = None,
                   hyp_out: str | Path | None = None, decoding: dict[str, Any] | None = None,
                   device: str = "auto", precision: str = "auto", quantize: str | None = None,
                   tokenize: str | None = None, lang: str | None = None,
                   backend: str = "auto") -> ModelEvaluation:
    """Translate a source file (``src`` with reference files ``refs``) or a split of the model's
    config (``split``: valid or test, which brings its references), then score.

    The hypotheses go to ``hyp_out``, by default ``MODEL_DIR/NAME.beamK.hyp`` (NAME: the
    source file's name, or the split), with ``NAME.beamK.json`` beside them naming the model's
    hash, the decoding settings, device, precision and quantization. ``decoding`` overrides
    the model's decoding settings (None values are ignored). The BLEU tokenizer is
    ``tokenize``, else the one for ``lang``, else the one for the model's target language.
    ``model_dir`` may be an ONNX export (``backend``: see :meth:`Translator.load`).
    """
    from dataclasses import replace

    from nmt.config import to_dict
    from nmt.fileio import sha256_file, sha256_text
    from nmt.layout import RunDir
    from nmt.translate import Translator

    if (src is None) == (split is None):
        raise ConfigError("give a source file with its references, or a split (valid, test)")
    if split is not None and refs:
        raise ConfigError(f"the {split} split brings its own references: give no reference file")
    if src is not None and not refs:
        raise ConfigError(f"give the reference file(s) of {src}")
    run = RunDir(model_dir)
    translator = Translator.load(run.root, device, precision, quantize, backend)
    config = translator.config
    if split is not None:
        lines, references = _split_pairs(config, split)
        name, ref_names = split, [f"{split} references"]
    else:
        lines, references = read_lines(src), [read_lines(r) for r in refs]
        name, ref_names = Path(src).name, [str(r) for r in refs]
    for ref_name, ref in zip(ref_names, references, strict=True):
        if len(ref) != len(lines):  # before spending time on translating
            raise DataError(f"line counts differ: {src or split} has {len(lines)} lines but "
                            f"{ref_name} has {len(ref)}")
    overrides = {k: v for k, v in (decoding or {}).items() if v is not None}
    config.decoding = replace(config.decoding, **overrides)
    beam = config.decoding.beam_size
    hyp_path = Path(hyp_out) if hyp_out else run.hypotheses(name, beam)
    meta = meta_path(hyp_path)
    weights = run.manifest if translator.backend == "onnx" else run.model
    key = {"model_sha256": sha256_file(weights), "source": name,
           "source_sha256": sha256_text(*lines), "decoding": to_dict(config.decoding),
           "quantize": quantize, "backend": translator.backend}
    info = translate_to_file(translator, lines, hyp_path, meta, key)
    hyps = read_lines(hyp_path)
    scores = score(hyps, references, hyp_name=str(hyp_path), ref_names=ref_names,
                   tokenize=tokenize or bleu_tokenizer(lang or config.data.tgt_lang))
    return ModelEvaluation(scores, hyp_path, meta, info["precision"],
                           list(translator.truncated))


def _split_pairs(config: Config, split: str) -> tuple[list[str], list[list[str]]]:
    """Sources and references of a split named in a model's config (files or a hub dataset)."""
    from nmt.encoding import cache_dir
    from nmt.sources import load_splits

    pairs = load_splits(config.data, cache_dir(config), (split,))
    if split not in pairs:
        raise ConfigError(f"the model's config names no {split} split")
    return list(pairs[split]["src"]), [list(pairs[split]["tgt"])]
