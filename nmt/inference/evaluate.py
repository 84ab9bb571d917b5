"""Evaluating a model directory: translate a source file or a split named in its config, keep
the hypotheses with a ``.json`` beside them saying what made them (model hash, decoding
settings, device, precision, speed), and score them with :mod:`nmt.scoring`.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt.config import Config, DecodingConfig, to_dict
from nmt.device import precision_name
from nmt.errors import ConfigError, DataError
from nmt.fileio import sha256_file, sha256_text, write_text_atomic
from nmt.inference.glossary import Glossary, Unplaced
from nmt.inference.translator import Translator, Truncation
from nmt.layout import RunDir
from nmt.scoring import Scores, bleu_tokenizer, read_lines, score


@dataclass
class ModelEvaluation:
    """What :func:`evaluate_model` did: the scores, the hypotheses file, the ``.json`` beside
    it (model hash, decoding settings, device, precision, speed) and the truncated sources."""

    scores: Scores
    hypotheses: Path
    meta: Path
    precision: str
    truncated: list[Truncation] = field(default_factory=list)
    unplaced: list[Unplaced] = field(default_factory=list)


def meta_path(hyp_path: str | Path) -> Path:
    """The ``.json`` beside a hypotheses file: ``X.beam5.hyp`` -> ``X.beam5.json``."""
    hyp_path = Path(hyp_path)
    if hyp_path.suffix == ".json":
        return hyp_path.with_name(hyp_path.name + ".json")
    return hyp_path.with_suffix(".json")


def translate_to_file(translator: Translator, src: Sequence[str], hyp_path: str | Path,
                      meta: str | Path, key: dict[str, Any] | None = None,
                      options: DecodingConfig | None = None,
                      glossary: Glossary | None = None) -> dict[str, Any]:
    """Translate ``src`` with ``options`` (default: the model's ``decoding`` config; one best
    hypothesis a line) and write the hypotheses, then ``meta``: ``key`` plus the beam size,
    sentences, seconds, speed, device and precision. Returns what was written to ``meta``."""
    options = options or translator.config.decoding
    src = list(src)
    start = time.perf_counter()
    hyps = translator.translate(src, options, glossary=glossary)
    seconds = time.perf_counter() - start
    write_text_atomic(hyp_path, "".join(h.replace("\n", " ") + "\n" for h in hyps))
    info = {**(key or {}), "beam_size": options.beam_size,
            "sentences": len(src), "seconds": seconds,
            "sentences_per_s": len(src) / max(seconds, 1e-9), "device": str(translator.device),
            "precision": precision_name(translator.dtype)}
    write_text_atomic(meta, json.dumps(info, indent=2) + "\n")
    return info


def evaluate_model(model_dir: str | Path, src: str | Path | None = None,
                   refs: Sequence[str | Path] = (), split: str | None = None,
                   hyp_out: str | Path | None = None,
                   decoding: Mapping[str, Any] | None = None,
                   device: str = "auto", precision: str = "auto", quantize: str | None = None,
                   tokenize: str | None = None, lang: str | None = None,
                   backend: str = "auto",
                   glossary: str | Path | None = None,
                   shortlist: bool = False) -> ModelEvaluation:
    """Translate a source file (``src`` with reference files ``refs``) or a split of the model's
    config (``split``: valid or test, which brings its references), then score.

    The hypotheses go to ``hyp_out``, by default ``MODEL_DIR/NAME.beamK.hyp`` (NAME: the
    source file's name, or the split), with ``NAME.beamK.json`` beside them naming the model's
    hash, the decoding settings, device, precision and quantization. ``decoding`` overrides
    some of the model's decoding settings (checked as the config is; None values ignored). The
    BLEU tokenizer is ``tokenize``, else the one for ``lang``, else the one for the model's
    target language.
    ``model_dir`` may be an ONNX export (``backend``: see :meth:`Translator.load`).
    ``glossary``: a TSV glossary whose terms the translations must hold (see
    :mod:`nmt.inference.glossary`); its hash goes into the ``.json``. ``shortlist``: search
    over the model's lexical shortlist (:meth:`Translator.use_shortlist`).
    """
    if (src is None) == (split is None):
        raise ConfigError("give a source file with its references, or a split (valid, test)")
    if split is not None and refs:
        raise ConfigError(f"the {split} split brings its own references: give no reference file")
    if src is not None and not refs:
        raise ConfigError(f"give the reference file(s) of {src}")
    terms = Glossary.read(glossary) if glossary else None
    run = RunDir(model_dir)
    translator = Translator.load(run.root, device, precision, quantize, backend)
    if shortlist:
        translator.use_shortlist(run.root)
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
    options = translator.options({"n_best": 1, **(decoding or {})})  # one hypothesis a line
    beam = options.beam_size
    hyp_path = Path(hyp_out) if hyp_out else run.hypotheses(
        f"{name}.shortlist" if shortlist else name, beam)
    meta = meta_path(hyp_path)
    weights = run.manifest if translator.backend == "onnx" else run.model
    key = {"model_sha256": sha256_file(weights), "source": name,
           "source_sha256": sha256_text(*lines), "decoding": to_dict(options),
           "quantize": quantize, "backend": translator.backend, "shortlist": shortlist}
    if glossary:
        key["glossary_sha256"] = sha256_file(glossary)
    if shortlist:
        key["shortlist_sha256"] = sha256_file(run.shortlist)
    info = translate_to_file(translator, lines, hyp_path, meta, key, options, terms)
    hyps = read_lines(hyp_path)
    scores = score(hyps, references, hyp_name=str(hyp_path), ref_names=ref_names,
                   tokenize=tokenize or bleu_tokenizer(lang or config.data.tgt_lang))
    return ModelEvaluation(scores, hyp_path, meta, info["precision"],
                           list(translator.truncated), list(translator.unplaced))


def make_shortlist(model_dir: str | Path, per_source: int, frequent: int) -> tuple[Path, int]:
    """``nmt shortlist``: build a model directory's lexical shortlist from the training split
    its config names (encoded with its own SentencePiece model(s), the id cache re-used) and
    write it there. Returns the path and the number of training pairs used."""
    from nmt.config import load_config
    from nmt.data.id_cache import cache_dir, encode_split
    from nmt.data.prepare import write_shortlist
    from nmt.data.sources import load_splits
    from nmt.data.tokenizer import load_from_dir

    run = RunDir(model_dir)
    if run.is_onnx_export():
        raise ConfigError(f"{run.root} is an ONNX export: make the shortlist in the model "
                          "directory it came from, then export again")
    if not run.config.is_file():
        raise ConfigError(f"{run.root} is not a model directory (no {run.config.name})")
    config = load_config(run.config, values={"output_dir": str(run.root)})
    src_tok, tgt_tok = load_from_dir(run.root)  # the model's own, never trained again here
    with tempfile.TemporaryDirectory(prefix="nmt-shortlist-") as scratch:
        # the run's id cache when it has one; else encoded into a scratch directory, so that
        # a model directory a user moved around does not grow a cache
        cache = cache_dir(config)
        if not cache.is_dir():
            cache = Path(scratch)
        raw = load_splits(config.data, cache, ("train",))
        train, _ = encode_split(raw["train"], "train", src_tok, tgt_tok, config.data, cache)
        if not len(train):
            raise DataError(f"the training split of {run.config} is empty after cleaning: no "
                            "shortlist can be made from it")
        used = write_shortlist(train, src_tok, tgt_tok, run.shortlist, per_source, frequent)
    return run.shortlist, used


def _split_pairs(config: Config, split: str) -> tuple[list[str], list[list[str]]]:
    """Sources and references of a split named in a model's config (files or a hub dataset)."""
    from nmt.data.id_cache import cache_dir
    from nmt.data.sources import load_splits

    pairs = load_splits(config.data, cache_dir(config), (split,))
    if split not in pairs:
        raise ConfigError(f"the model's config names no {split} split")
    return list(pairs[split]["src"]), [list(pairs[split]["tgt"])]
