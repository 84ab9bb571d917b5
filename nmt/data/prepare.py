"""The prepare stage: load a corpus, train or load its tokenizer(s), clean and encode the splits.

:func:`prepare` runs the stage for a run directory: the splits come from :mod:`nmt.data.sources`,
the SentencePiece model(s) from :func:`prepare_tokenizers`, the encoded ids from
:mod:`nmt.data.id_cache`. Trained models are written into the run directory with a marker,
``tokenizer.json`` (:attr:`nmt.layout.RunDir.tokenizer_marker`), that holds a hash of the
training data's :func:`nmt.data.sources.fingerprint` and the tokenizer settings, so a later run with
the same data and settings re-uses them instead of training again. :func:`prepare_run_dir` is
``nmt prepare`` and the recipes' stage 1: :func:`prepare`, then the run's ``config.yaml``.

Fine-tuning (``training.init_from``): :func:`adopt_base_model` checks the base model
directory and takes its tokenizer settings into the config, and the tokenizer stage copies the
base's SentencePiece model(s) instead of training new ones; the trainer loads its weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt.config import (
    Config,
    TokenizerConfig,
    load_config,
    save_config,
    shape_differences,
    to_dict,
)
from nmt.data.id_cache import CACHE_VERSION, EncodedSplit, SplitStats, cache_dir, encode_split
from nmt.data.sources import SPLITS, fingerprint, load_splits
from nmt.data.tokenizer import (
    Tokenizer,
    load_from_dir,
    load_pretrained,
    model_files,
    sample_lines,
    train_sentencepiece,
)
from nmt.errors import ConfigError, DataError
from nmt.fileio import sha256_text, write_text_atomic
from nmt.layout import RunDir

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tokenizer stage


#: Tokenizer keys that act in training only (subword sampling): they leave the model as it is.
SAMPLING_KEYS = ("sample_alpha", "sample_nbest")


def model_settings(cfg: TokenizerConfig) -> dict:
    """The tokenizer settings that shape the SentencePiece model (the sampling keys left out,
    so switching subword regularisation on re-uses a trained tokenizer)."""
    return {k: v for k, v in to_dict(cfg).items() if k not in SAMPLING_KEYS}


#: ``tokenizer.vocab_size: null``: (fewest training pairs, vocabulary size), largest first.
#: 15-minute runs of ``recipes/from_files.py`` (docs/results.md, "Defaults for your own
#: corpus"): on 30,000 pairs (Bible en-es) 8,000 pieces beat 4,000 and 16,000; on 74,000 (UI
#: messages en-ru) 16,000 beat 8,000, 4,000 and 32,000; LibreOffice help (32,000 pairs) was
#: tuned at 8,000.
VOCAB_BY_PAIRS = ((50_000, 16_000), (0, 8_000))


def vocab_for_pairs(pairs: int) -> int:
    """The vocabulary size ``tokenizer.vocab_size: null`` gives a corpus of ``pairs`` pairs."""
    return next(size for least, size in VOCAB_BY_PAIRS if pairs >= least)


def prepare_tokenizers(config: Config, train: datasets.Dataset) -> tuple[Tokenizer, Tokenizer]:
    """Load the configured SentencePiece model(s), or train them on the training split.

    Trained models are written into the run directory with ``tokenizer.json`` (a hash of the
    training data and settings) beside them; a later run with the same data and settings
    re-uses them instead of training again. Once a model has been trained in the directory
    (``trainer_state.pt`` exists) its tokenizer is never replaced: it is re-used when the
    tokenizer settings are unchanged (even if the corpus files were touched), and other
    settings are refused.
    """
    out, cfg = config.out, config.tokenizer
    run = RunDir(out)
    if config.training.init_from:
        return _base_tokenizers(run, Path(config.training.init_from))
    pretrained = load_pretrained(cfg)
    if pretrained:
        _write_tokenizers(run, pretrained, {"key": "pretrained", "tokenizer": to_dict(cfg)})
        return pretrained
    settings = {"tokenizer": model_settings(cfg),
                "langs": [config.data.src_lang, config.data.tgt_lang]}
    key = sha256_text(CACHE_VERSION, fingerprint(train), json.dumps(settings, sort_keys=True))
    names = model_files(cfg.joint)
    marker = _read_marker(run)
    if marker and all((out / n).is_file() for n in names):
        if marker.get("key") == key:
            log.info("tokenizer: re-using %s", ", ".join(str(out / n) for n in names))
            return load_from_dir(out)
        if run.trainer_state.is_file():
            if marker.get("settings") == settings:
                log.info("tokenizer: the corpus fingerprint changed, but a model trained in %s "
                         "uses this tokenizer: keeping it", out)
                return load_from_dir(out)
            raise DataError(f"{out} holds a trained model whose tokenizer was made with other "
                            "settings; use a new output_dir for a different tokenizer")
    start = time.perf_counter()
    if cfg.vocab_size is None:
        cfg = dataclasses.replace(cfg, vocab_size=vocab_for_pairs(len(train)))
        log.info("tokenizer: a vocabulary of %s pieces for %s training pairs "
                 "(tokenizer.vocab_size: null picks it by the corpus's size: %s)",
                 f"{cfg.vocab_size:,}", f"{len(train):,}", ", ".join(
                     f"{size:,} from {least:,} pairs" for least, size in VOCAB_BY_PAIRS))
    # a seeded sample bounds memory and time on large corpora (joint: half the cap per side)
    cap = max(cfg.max_sentences // 2, 1) if cfg.joint else cfg.max_sentences
    subset = train.select(sample_lines(range(len(train)), cap, cfg.seed))
    sides = {side: [s.strip() for s in subset[side] if s.strip()] for side in ("src", "tgt")}
    if not sides["src"] or not sides["tgt"]:
        raise DataError("the training split has no non-empty pairs to train SentencePiece on")
    if cfg.joint:
        tok = train_sentencepiece(sides["src"] + sides["tgt"], cfg)
        tokenizers = (tok, tok)
    else:
        tokenizers = (train_sentencepiece(sides["src"], cfg),
                      train_sentencepiece(sides["tgt"], cfg))
    _write_tokenizers(run, tokenizers, {"key": key, "settings": settings})
    log.info("tokenizer: trained %s in %.1f s", ", ".join(names), time.perf_counter() - start)
    return tokenizers


def _base_tokenizers(run: RunDir, base: Path) -> tuple[Tokenizer, Tokenizer]:
    """A fine-tuning run's tokenizer: the base model's, copied into the run directory once.

    Once training has started the copy is used (a resumed run needs the base no longer); a
    copy of the same bytes is kept as it is (every torchrun process prepares); a directory
    holding a run trained with another tokenizer is refused."""
    marker = _read_marker(run)
    copied = bool(marker) and marker.get("key") == "init_from"
    if run.trainer_state.is_file():
        if not copied:
            raise DataError(f"{run.root} holds a run not started from a base model; a "
                            "fine-tuning run (training.init_from) needs a new output_dir")
        return load_from_dir(run.root)
    tokenizers = load_from_dir(base)
    names = model_files(tokenizers[0] is tokenizers[1])
    if copied and all((run.root / n).is_file() for n in names):
        here = load_from_dir(run.root)
        if [t.model_bytes for t in here] == [t.model_bytes for t in tokenizers]:
            return here
    _write_tokenizers(run, tokenizers, {"key": "init_from", "base": str(base)})
    log.info("tokenizer: the base model's, copied from %s", base)
    return tokenizers


def adopt_base_model(config: Config) -> Config | None:
    """Fine-tuning: check ``training.init_from`` and take its tokenizer settings into ``config``.

    Returns the config the settings came from (None without ``init_from``): the base model's,
    or, once training has started, the run's own ``config.yaml`` (so a resumed run needs the
    base no longer). The base must be a trained model directory whose model section has the
    shapes of ``config``'s (:data:`nmt.config.MODEL_SHAPE_KEYS`); ``config.tokenizer`` becomes
    the base's, keeping its own subword-sampling keys, so the run's ``config.yaml`` describes
    the tokenizer it uses. Idempotent.
    """
    where = config.training.init_from
    if not where:
        return None
    cfg = config.tokenizer
    if cfg.model or cfg.src_model or cfg.tgt_model:
        raise ConfigError("training.init_from takes the base model's SentencePiece model: drop "
                          "tokenizer.model / tokenizer.src_model / tokenizer.tgt_model")
    run, base = RunDir(config.out), RunDir(Path(where))
    if run.trainer_state.is_file() and run.config.is_file():
        source, what = load_config(run.config), f"the run in {run.root}"
        if not source.training.init_from:
            return None  # a run from scratch: resuming it with init_from is refused later
    else:
        if base.is_onnx_export():
            raise ConfigError(f"training.init_from={where} is an ONNX export: fine-tuning needs "
                              f"the model directory it was exported from (with "
                              f"{base.model.name})")
        if not base.config.is_file() or not base.model.is_file():
            raise ConfigError(f"training.init_from={where} is not a trained model directory "
                              f"(it needs {base.config.name} and {base.model.name}): give the "
                              "output_dir of nmt train or of a recipe")
        source, what = load_config(base.config), "the base model's"
        pair = (source.data.src_lang, source.data.tgt_lang)
        if pair != (config.data.src_lang, config.data.tgt_lang):
            log.warning("fine-tuning a %s->%s model as %s->%s: check data.src_lang and "
                        "data.tgt_lang", *pair, config.data.src_lang, config.data.tgt_lang)
    differ = shape_differences(config.model, source.model)
    if differ:
        listed = ", ".join(f"{k} {mine} (base {theirs})" for k, (mine, theirs) in differ.items())
        fix = " ".join(f"model.{k}={str(theirs).lower() if isinstance(theirs, bool) else theirs}"
                       for k, (_, theirs) in differ.items())
        raise ConfigError(f"training.init_from={where}: the config's model differs from "
                          f"{what} in {listed}; fine-tuning keeps its shapes: set {fix}")
    config.tokenizer = dataclasses.replace(source.tokenizer, model=None, src_model=None,
                                           tgt_model=None, sample_alpha=cfg.sample_alpha,
                                           sample_nbest=cfg.sample_nbest)
    return source


def _read_marker(run: RunDir) -> dict[str, Any] | None:
    try:
        marker = json.loads(run.tokenizer_marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def _write_tokenizers(run: RunDir, tokenizers: tuple[Tokenizer, Tokenizer],
                      marker: dict[str, Any]) -> None:
    """Write the model file(s) of one layout, remove the other layout's, marker last."""
    joint = tokenizers[0] is tokenizers[1]
    run.tokenizer_marker.unlink(missing_ok=True)
    for stale in model_files(not joint):
        (run.root / stale).unlink(missing_ok=True)
    names = model_files(joint)
    for name, tok in zip(names, dict.fromkeys(tokenizers), strict=True):
        tok.save(run.root / name)
    write_text_atomic(run.tokenizer_marker, json.dumps({**marker, "files": list(names)},
                                                       indent=2))


# --------------------------------------------------------------------------- the whole stage


@dataclass
class Prepared:
    """The encoded splits by name (``train``, ``valid``, ``test``) and their tokenizers."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    splits: dict[str, EncodedSplit]
    stats: dict[str, SplitStats]

    def summary(self) -> str:
        """A few lines for the terminal: pairs kept/dropped, vocabularies, mean lengths."""
        lines = [s.describe() for s in self.stats.values()]
        if self.src_tok is self.tgt_tok:
            lines.append(f"vocabulary: {self.src_tok.vocab_size} (joint)")
        else:
            lines.append(f"vocabulary: source {self.src_tok.vocab_size}, "
                         f"target {self.tgt_tok.vocab_size}")
        for s in self.stats.values():
            if s.kept:
                lines.append(f"{s.split}: {s.src_tokens / s.kept:.1f} source and "
                             f"{s.tgt_tokens / s.kept:.1f} target tokens per sentence "
                             "(with EOS, and BOS on the target)")
        return "\n".join(lines)


def prepare(config: Config, splits: tuple[str, ...] = SPLITS) -> Prepared:
    """Load, clean and tokenise the corpus of a run (training the tokenizer if needed; with
    ``training.init_from``, taking the base model's: see :func:`adopt_base_model`)."""
    adopt_base_model(config)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    cache = cache_dir(config)
    if "train" not in splits:
        splits = ("train", *splits)
    raw = load_splits(config.data, cache, splits)
    if len(raw["train"]) == 0:
        where = config.data.train or config.data.dataset
        raise DataError(f"the training split is empty ({where}): there is nothing to learn from")
    src_tok, tgt_tok = prepare_tokenizers(config, raw["train"])
    encoded, stats = {}, {}
    for split, ds in raw.items():
        encoded[split], stats[split] = encode_split(ds, split, src_tok, tgt_tok, config.data,
                                                    cache)
        log.info("data: %s", stats[split].describe())
    if stats["train"].kept == 0:
        raise DataError(f"cleaning dropped every training pair ({stats['train'].describe()}); "
                        "check the data, or raise data.max_len / data.max_ratio")
    return Prepared(src_tok, tgt_tok, encoded, stats)


def write_shortlist(train: EncodedSplit, src_tok: Tokenizer, tgt_tok: Tokenizer, path: Path,
                    per_source: int | None = None, frequent: int | None = None,
                    seed: int = 0) -> int:
    """Build the lexical shortlist of an encoded training split and write it to ``path`` (see
    :mod:`nmt.data.shortlist`); a large corpus is sampled to ``MAX_LINKS`` links before its
    ids are read. Returns the number of training pairs used."""
    from nmt.data.shortlist import (
        FREQUENT,
        PER_SOURCE,
        build_shortlist,
        sample_pairs,
        tokenizer_key,
    )

    per_source = PER_SOURCE if per_source is None else per_source
    frequent = FREQUENT if frequent is None else frequent
    src_len, tgt_len = train.lengths()  # specials included: an upper bound of the links
    rows = sample_pairs(src_len.astype(np.int64) * tgt_len, seed=seed)
    kept = train.kept if len(rows) == len(train) else train.kept.select(rows)
    shortlist = build_shortlist(kept["src_ids"], kept["tgt_ids"], src_tok.vocab_size,
                                tgt_tok.vocab_size, src_tok.model_bytes == tgt_tok.model_bytes,
                                per_source, frequent, seed=seed)
    shortlist.save(path, pairs=str(len(rows)), per_source=str(per_source),
                   frequent=str(frequent), tokenizers=tokenizer_key(src_tok, tgt_tok),
                   data=_data_key(train))
    log.info("shortlist: %s written (%s of %s training pairs)", path, f"{len(rows):,}",
             f"{len(train):,}")
    return len(rows)


def _data_key(train: EncodedSplit) -> str:
    """What a shortlist records of the encoded training split it was made from: the id
    cache's fingerprint (data, tokenizers and cleaning settings) and the rows kept."""
    return sha256_text(str(getattr(train.dataset, "_fingerprint", "")), str(len(train)))[:20]


def _shortlist_current(run: RunDir, prepared: Prepared) -> bool:
    """Whether the run's shortlist exists and was made from this data and these tokenizers."""
    from nmt.data.shortlist import read_metadata, tokenizer_key

    if not run.shortlist.is_file():
        return False
    try:
        meta = read_metadata(run.shortlist)
    except Exception:  # noqa: BLE001 - a damaged table is made again
        return False
    return (meta.get("tokenizers") == tokenizer_key(prepared.src_tok, prepared.tgt_tok)
            and meta.get("data") == _data_key(prepared.splits["train"]))


def prepare_run_dir(config: Config, keep_trained: bool = False) -> Prepared:
    """Stage 1, and ``nmt prepare``: load, clean and encode the corpus, train (or re-use) the
    tokenizer, and write ``config.yaml`` into ``config.out``.

    A directory that holds trained weights is refused before anything is written there (a new
    config would disagree with the weights and with ``--resume``); with ``keep_trained`` (a
    recipe run again) it is prepared for the later stages and its ``config.yaml`` kept.
    """
    run = RunDir(config.out)
    trained = run.holds_trained_model()
    if trained and not keep_trained:
        raise ConfigError(f"{run.root} already holds a trained model, described by its "
                          f"{run.config.name}: choose a new output_dir (--output-dir DIR)")
    prepared = prepare(config)
    if not trained:
        save_config(config, run.config)
    if not _shortlist_current(run, prepared):  # made anew when the data or tokenizers changed
        write_shortlist(prepared.splits["train"], prepared.src_tok, prepared.tgt_tok,
                        run.shortlist)
    return prepared
