"""Typed configuration: dataclasses for every stage, loaded from YAML and validated.

A run is described by one YAML file with the sections ``data``, ``tokenizer``, ``model``,
``training`` and ``decoding`` (plus a few top-level keys). Loading goes through
``yaml.safe_load`` only, then every key is checked against the dataclasses below:

- an unknown key is refused with the closest valid key named (``hiden_size`` -> ``hidden_size``);
- a value of the wrong type is refused (``beam_size: five``);
- a value out of range or not among the allowed choices is refused (``beam_size: 0``).

``key=value`` overrides on the command line (``model.hidden_size=512``) are merged over the
file before validation. A resolved config written back with :func:`save_config` reloads to an
equal object. Each field's ``metadata`` carries its help text and limits; the config
reference (docs/config.md) is generated from it (:func:`describe`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from nmt.errors import ConfigError
from nmt.fileio import write_text_atomic
from nmt.layout import FORMAT_VERSION


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A config dataclass's field types, resolved once (options are checked on every
    translate call and server batch, so this stays off that path)."""
    return typing.get_type_hints(cls)


def _f(default: Any, help: str, *, min: float | None = None, max: float | None = None,
       choices: Sequence[Any] | None = None, min_exclusive: bool = False) -> Any:
    """A dataclass field with help text and validation limits in its metadata."""
    meta = {"help": help, "min": min, "max": max, "choices": choices,
            "min_exclusive": min_exclusive}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


#: Corpus kinds read from local files (``data.train`` etc. are paths or prefixes).
FILE_FORMATS = ("text", "tsv", "jsonl", "tmx", "xliff", "po")
#: Corpus kinds that are Hugging Face datasets (``data.dataset`` names one).
DATASET_FORMATS = ("hub", "disk")
#: Every value of ``data.format``: the one list the config, the command line and reports use.
DATA_FORMATS = FILE_FORMATS + DATASET_FORMATS


@dataclass
class DataConfig:
    """Where the parallel corpus comes from, how it maps to (source, target), and its cleaning."""

    src_lang: str = _f("en", "Source language code; also the default source column name.")
    tgt_lang: str = _f("de", "Target language code; also the default target column name.")
    format: str = _f("text", "Corpus kind: `text` (two line-aligned files PREFIX.SRC and "
                     "PREFIX.TGT), `tsv` (source<TAB>target per line), `jsonl` (one JSON object a "
                     "line), `tmx`, `xliff` (1.2 or 2.0) and `po` (translation memories: languages "
                     "matched as `de-DE` to `de`, inline tags stripped, units missing a side "
                     "skipped, all counted in the log), `hub` (a Hugging Face hub dataset by "
                     "name), `disk` (a dataset saved with `save_to_disk`).",
                     choices=DATA_FORMATS)
    dataset: str | None = _f(None, "Hub dataset name (`bentrevett/multi30k`) for `hub`, or the "
                             "folder for `disk`.")
    dataset_config: str | None = _f(None, "Hub dataset configuration (`de-en`, "
                                    "`iwslt2017-de-en`); null when it has none.")
    revision: str | None = _f(None, "Hub dataset revision (branch, tag or commit); null: latest.")
    train: str | list[str] | None = _f(None, "Training split: a split name for `hub`/`disk` "
                                       "(default `train`), else a file path (`tsv`, `jsonl`, "
                                       "`tmx`, `xliff`, `po`) or prefix (`text`); a list of "
                                       "files or prefixes is read as one corpus, in order "
                                       "(for example your data and a base model's, to keep "
                                       "what it knew when fine-tuning).")
    valid: str | None = _f(None, "Validation split, as `train` (default split name `validation`).")
    test: str | None = _f(None, "Test split, as `train` (default split name `test`).")
    translation_field: str | None = _f(None, "Nested schema: the column holding "
                                       "`{src_lang: ..., tgt_lang: ...}` (wmt, iwslt, opus use "
                                       "`translation`). Null: flat columns.")
    src_column: str | None = _f(None, "Flat schema: source column (default: `src_lang`).")
    tgt_column: str | None = _f(None, "Flat schema: target column (default: `tgt_lang`).")
    max_len: int = _f(128, "Training pairs with more SentencePiece tokens than this on either "
                      "side are dropped.", min=1)
    max_ratio: float = _f(4.0, "Training pairs whose longer side has more than this many times "
                          "the tokens of the shorter side are dropped (only when the longer side "
                          "has more than `ratio_min_len` tokens).", min=1.0)
    ratio_min_len: int = _f(8, "The length ratio filter ignores pairs whose longer side has at "
                            "most this many tokens (short labels vary a lot in ratio).", min=0)
    cache_dir: str | None = _f(None, "Where tokenised ids are cached as Arrow files "
                               "(default: `OUTPUT_DIR/cache`).")
    num_proc: int = _f(1, "Processes for tokenising with `Dataset.map`.", min=1)


@dataclass
class TokenizerConfig:
    """SentencePiece training (or loading of existing models)."""

    type: str = _f("unigram", "SentencePiece model type.", choices=("unigram", "bpe"))
    vocab_size: int | None = _f(8000, "Vocabulary size of each SentencePiece model, specials "
                                "included. null: by the training corpus's size, 8,000 below "
                                "50,000 pairs and 16,000 from there on (measured on two "
                                "corpora nobody tuned on, docs/results.md; "
                                "`recipes/from_files.yaml` uses it).", min=8)
    joint: bool = _f(True, "One model for source and target (true) or one each (false).")
    character_coverage: float = _f(1.0, "Share of characters covered by the vocabulary "
                                   "(0.9995 for CJK-heavy text).", min=0.5, max=1.0)
    byte_fallback: bool = _f(True, "Spell characters outside the vocabulary as UTF-8 bytes "
                             "instead of <unk>, so any text round-trips. Needs vocab_size > 260.")
    normalization: str = _f("nmt_nfc", "Normalisation rule, stored in the model: `nmt_nfc` "
                            "(ours: NFC, controls removed, spaces collapsed; keeps \"…\", "
                            "\"²\", no-break spaces and every other character NFKC rewrites, "
                            "so the output can reproduce them) or one of SentencePiece's "
                            "(`nmt_nfkc`, its default, maps \"…\" to \"...\").",
                            choices=("nmt_nfc", "nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf",
                                     "identity"))
    max_sentences: int = _f(2_000_000, "Cap on training sentences: a seeded random sample of "
                            "this many is used on larger corpora.", min=1)
    hard_vocab_limit: bool = _f(True, "Fail when the corpus cannot fill `vocab_size` (true) or "
                                "accept a smaller vocabulary (false).")
    threads: int = _f(0, "Threads for SentencePiece training (0: all cores).", min=0)
    seed: int = _f(1, "Seed of the sentence sample and of SentencePiece's own sampling.", min=0)
    sample_alpha: float = _f(0.0, "Subword regularisation (0: off): each training epoch "
                             "segments the pairs anew. Unigram: sampling smoothing (0.1 to 0.5 "
                             "usual; lower samples more widely); BPE: the BPE-dropout rate (0.1 "
                             "usual). Validation, test and translation keep the best "
                             "segmentation.", min=0.0, max=1.0)
    sample_nbest: int = _f(-1, "Unigram subword regularisation: sample among this many best "
                           "segmentations (-1: all of them).", min=-1)
    model: str | None = _f(None, "Existing joint SentencePiece model to use instead of training.")
    src_model: str | None = _f(None, "Existing source SentencePiece model (with `tgt_model`).")
    tgt_model: str | None = _f(None, "Existing target SentencePiece model (with `src_model`).")


@dataclass
class ModelConfig:
    """Dimensions and options of the encoder, bridge, attention and decoder."""

    embed_size: int = _f(256, "Embedding size of source and target tokens.", min=1)
    hidden_size: int = _f(256, "Encoder LSTM units per direction.", min=1)
    encoder_layers: int = _f(1, "Encoder LSTM layers.", min=1)
    decoder_hidden_size: int = _f(512, "Decoder LSTM units.", min=1)
    decoder_layers: int = _f(1, "Decoder LSTM layers.", min=1)
    attention: str = _f("general", "Attention over encoder outputs: none, dot, general (Luong), "
                        "mlp (Bahdanau).", choices=("none", "dot", "general", "mlp"))
    bridge: str = _f("linear", "Encoder final (h, c) to decoder initial state: `linear` "
                     "(Linear + tanh) or `none` (joined states passed through; sizes must match).",
                     choices=("linear", "none"))
    input_feeding: bool = _f(False, "Feed the previous attentional state to the decoder input "
                             "(forces a step-by-step loop in training).")
    tie_embeddings: bool = _f(False, "Tie the output projection to the target embedding.")
    copy_attention: bool = _f(False, "Pointer-generator: the output distribution mixes the "
                              "softmax with the attention weights scattered onto the source "
                              "token ids, gated by a learned p_copy, so names can pass through "
                              "untouched. Needs attention and a joint vocabulary "
                              "(tokenizer.joint).")
    dropout: float = _f(0.2, "Dropout probability.", min=0.0, max=0.99)
    init: str = _f("torch", "Initialisation of a new model: `torch` (PyTorch's own: "
                   "embeddings N(0, 1)) or `scaled` (embeddings N(0, 1/embed_size), fit for a "
                   "tied output layer, and LSTM forget-gate biases at 1: +8 test BLEU on the "
                   "LibreOffice recipe, which sets it, but slower to start on small untied "
                   "models).", choices=("torch", "scaled"))
    word_dropout: float = _f(0.0, "Training only: probability of dropping a whole source or "
                             "target token (its embedding set to zero, the rest scaled by "
                             "1 / (1 - p)), as Sennrich & Zhang (2019). 0: off.",
                             min=0.0, max=0.99)


@dataclass
class TrainingConfig:
    """Optimisation, schedule, precision and checkpointing."""

    seed: int = _f(42, "Random seed of initialisation, batch order and dropout.", min=0)
    batch_tokens: int = _f(4000, "Token budget of a batch: examples x longest side, padding "
                           "included.", min=1)
    accumulate: int = _f(1, "Batches whose gradients are summed before an update.", min=1)
    lr: float = _f(1e-3, "Adam learning rate (peak rate with warmup).", min=0.0,
                   min_exclusive=True)
    weight_decay: float = _f(0.0, "Adam weight decay.", min=0.0)
    clip_norm: float = _f(1.0, "Gradient-norm clipping threshold (0: off).", min=0.0)
    label_smoothing: float = _f(0.1, "Label smoothing of the cross-entropy.", min=0.0, max=0.99)
    schedule: str = _f("plateau", "Learning-rate schedule: `plateau` (lower the rate when "
                       "validation BLEU stalls), `inverse_sqrt` (warmup, then 1/sqrt(step)), "
                       "`cosine` (warmup, then half a cosine down to `min_lr` as the budget of "
                       "max_steps / max_epochs / max_minutes is spent, whichever ends first) "
                       "or `constant`.",
                       choices=("plateau", "inverse_sqrt", "cosine", "constant"))
    warmup_steps: int = _f(1000, "Warmup steps of `inverse_sqrt` and `cosine`.", min=0)
    plateau_factor: float = _f(0.5, "`plateau`: factor applied to the rate when validation BLEU "
                               "stalls.", min=0.0, max=1.0, min_exclusive=True)
    plateau_patience: int = _f(2, "`plateau`: validations without improvement before decay.",
                               min=0)
    min_lr: float = _f(1e-6, "Lower bound of the learning rate.", min=0.0)
    max_steps: int | None = _f(None, "Stop after this many updates (null: no limit).", min=1)
    max_epochs: int | None = _f(20, "Stop after this many epochs (null: no limit).", min=1)
    max_minutes: float | None = _f(None, "Stop after this much wall-clock time (null: no limit).",
                                   min=0.0, min_exclusive=True)
    valid_every: int = _f(1000, "Validate every N updates.", min=1)
    valid_after: float = _f(0.0, "Skip the validations before this share of the budget "
                            "(max_steps / max_epochs / max_minutes, whichever is furthest "
                            "along) is spent; a checkpoint is still written every valid_every "
                            "updates and training always ends with a validation. 0: validate "
                            "from the first valid_every.", min=0.0, max=1.0)
    patience: int = _f(10, "Stop after N validations without BLEU improvement (0: never).", min=0)
    sampled_softmax: int | None = _f(
        None, "Training loss over part of the target vocabulary (Jean et al. 2015): each "
        "batch's own target pieces (and source pieces, with copy attention) plus this many "
        "drawn at random from the rest; less work per token in the output layer. null "
        "(default): 200 on a CPU (the recipe in fp32: 1.44x target tokens/s, +2.5 test BLEU; "
        "in bf16: 1.18x, +4.9 at 15 minutes), the full softmax on CUDA (not measured); 0: "
        "the full softmax. Validation and search always use the full softmax.", min=0)
    teacher_forcing_ratio: float = _f(1.0, "Share of decoder inputs taken from the gold target "
                                      "(< 1: scheduled sampling).", min=0.0, max=1.0)
    precision: str = _f("auto", "auto (bf16 autocast where it beats fp32: on CPUs with AMX, or "
                        "with AVX-512-BF16 when a short probe measures it faster; AMP on CUDA; "
                        "a resumed run keeps the precision it started with), fp32 or bf16.",
                        choices=("auto", "fp32", "bf16"))
    device: str = _f("auto", "auto, cpu or cuda.", choices=("auto", "cpu", "cuda"))
    keep_last: int = _f(3, "Checkpoints kept besides the best one (which is never deleted).",
                        min=1)
    ema_decay: float = _f(0.0, "Keep an exponential moving average of the weights with this "
                          "decay per update (0: off; e.g. 0.998 puts half the weight on the last "
                          "350 updates). Validation scores the average and model.safetensors "
                          "keeps it; training goes on with the raw weights.", min=0.0,
                          max=0.9999)
    average_last: int = _f(0, "After training, average the weights of the last N checkpoints "
                           "(every valid_every updates; 0 or 1: off) and keep the average as "
                           "the model when its validation BLEU is higher than the best so far.",
                           min=0)
    max_bad_updates: int = _f(5, "Consecutive updates with a non-finite loss or gradient that "
                              "are skipped (and logged) before training stops with an error.",
                              min=1)
    log_every: int = _f(100, "Log training loss every N updates.", min=1)
    init_from: str | None = _f(None, "Fine-tuning: a trained model directory whose weights and "
                               "SentencePiece model start this run, with a fresh optimizer "
                               "and schedule. The model section must have its shapes (a "
                               "mismatch is refused); its tokenizer settings replace this "
                               "config's (the sampling keys stay).")


#: The model keys that shape the weights: a fine-tuning run (``training.init_from``) must
#: agree with its base model on each. (Dropout, word dropout and ``init`` may differ.)
MODEL_SHAPE_KEYS = ("embed_size", "hidden_size", "encoder_layers", "decoder_hidden_size",
                    "decoder_layers", "attention", "bridge", "input_feeding", "tie_embeddings",
                    "copy_attention")


def shape_differences(mine: ModelConfig, base: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """The :data:`MODEL_SHAPE_KEYS` on which two model sections differ: key -> (mine, base)."""
    return {key: (getattr(mine, key), getattr(base, key)) for key in MODEL_SHAPE_KEYS
            if getattr(mine, key) != getattr(base, key)}


#: Values of ``decoding.long_lines``.
LONG_LINES = ("split", "truncate")

#: Values of ``decoding.stopping``.
STOPPING = ("early", "exact")


@dataclass(frozen=True)
class DecodingConfig:
    """Search settings for validation and translation: the one decoding-options type.

    Frozen and checked when made (a value out of range is a :class:`ConfigError` naming the
    key), so options that reach the search are valid; :meth:`updated` makes a checked copy."""

    beam_size: int = _f(5, "Beam size (1: greedy).", min=1)
    length_penalty: float = _f(1.0, "GNMT length penalty alpha: score / ((5 + len) / 6)^alpha.",
                               min=0.0)
    max_len_a: float = _f(1.5, "Maximum output length is a * source length + b.", min=0.0)
    max_len_b: int = _f(10, "Maximum output length is a * source length + b.", min=0)
    min_len: int = _f(0, "Minimum output length in tokens.", min=0)
    n_best: int = _f(1, "Hypotheses returned per sentence (<= beam_size).", min=1)
    batch_tokens: int = _f(8000, "Source-token budget of a translation batch.", min=1)
    no_repeat_ngram: int = _f(0, "Block repeated n-grams of this size (0: off).", min=0)
    word_reward: float = _f(0.0, "Beam search: added to a finished hypothesis's log-probability "
                            "per output token before the length penalty; > 0 favours longer "
                            "outputs (a remedy for short translations).")
    long_lines: str = _f("split", "A line of more than data.max_len source pieces: `split` "
                         "translates it in parts (whole sentences, else runs of words) joined "
                         "with a space; `truncate` translates its first data.max_len pieces.",
                         choices=LONG_LINES)
    stopping: str = _f("early", "Beam search: when a sentence that holds beam_size finished "
                       "hypotheses stops. `early`: when none of its open ones would beat the "
                       "beam_size-th best of them by ending at the next step (1.4x faster on "
                       "the LibreOffice test set, the same BLEU); `exact`: when none could at "
                       "any length up to the limit (then the result is what searching every "
                       "beam to its limit would find). Glossary searches stop `exact`.",
                       choices=STOPPING)

    def __post_init__(self) -> None:
        _check_fields(self, "decoding.{}".format)
        _check_n_best(self, "decoding.{}".format)

    @staticmethod
    def check_overrides(values: Mapping[str, Any],
                        label: Callable[[str], str] = "decoding.{}".format) -> dict[str, Any]:
        """Decoding settings given one by one (flags, a request, an API call), each checked as
        the config checks it; None values (not given) are dropped. ``label(key)`` names a key in
        messages (``--beam-size`` on the command line)."""
        fields = {f.name: f for f in dataclasses.fields(DecodingConfig)}
        hints = _hints(DecodingConfig)
        checked: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(_unknown_key_message(label(key), key, fields))
            if value is not None:
                checked[key] = _check_value(label(key), value, hints[key], fields[key].metadata)
        return checked

    def updated(self, values: Mapping[str, Any] | None = None,
                label: Callable[[str], str] = "decoding.{}".format,
                **more: Any) -> DecodingConfig:
        """A copy with ``values`` (and keyword ``more``) replacing settings, checked as the
        config is (None values are ignored); this config is left as it is."""
        checked = self.check_overrides({**(values or {}), **more}, label)
        if not checked:
            return self
        raw = {**dataclasses.asdict(self), **checked}
        _check_n_best(types.SimpleNamespace(**raw), label)  # named as the caller names keys
        return DecodingConfig(**raw)


@dataclass
class Config:
    """A whole run: output directory plus one section per stage."""

    name: str = _f("run", "Name of the run, shown in logs and model cards.")
    output_dir: str = _f("runs/run", "Run directory: tokenizer, caches, checkpoints, model.")
    format_version: int = _f(FORMAT_VERSION, "Layout version of configs and model directories "
                             "written by this toolkit.", min=1)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    @property
    def out(self) -> Path:
        """The run directory as a Path."""
        return Path(self.output_dir)


# --------------------------------------------------------------------------- building


def from_dict(raw: Mapping[str, Any] | None, cls: type = Config, where: str = "") -> Any:
    """Build and validate a config dataclass from a plain mapping (missing keys keep defaults)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping of keys to values, "
                          f"got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(_unknown_key_message(path, str(key), fields))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = from_dict(value, hint, path)
        else:
            values[key] = _check_value(path, value, hint, fields[key].metadata)
    config = cls(**values)
    if cls is Config:
        _check_cross_fields(config)
    return config


def _unknown_key_message(path: str, key: str, fields: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{path}'{hint} (valid keys here: {', '.join(fields)})"


def _check_value(path: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """Check a scalar against its type hint and its metadata limits; return it (int -> float)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        listed = next((a for a in args if typing.get_origin(a) is list), None)
        if listed is not None and isinstance(value, list):  # X | list[X]: each item an X
            (item,) = typing.get_args(listed)
            if not value:
                raise ConfigError(f"{path}: an empty list; give at least one value or null")
            return [_check_value(f"{path}[{i}]", v, item, meta) for i, v in enumerate(value)]
        (hint,) = [a for a in args if a is not listed]  # Optional[X], or X | list[X]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = _parse_float(value, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_show(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_show(value)}")
    else:  # pragma: no cover - guards against a new field type without a checker
        raise TypeError(f"no validator for {path} of type {hint}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint_text = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{path}: '{value}' is not one of {', '.join(map(str, choices))}"
                          f"{hint_text}")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and (value < low or (meta.get("min_exclusive") and value == low)):
        relation = "greater than" if meta.get("min_exclusive") else "at least"
        raise ConfigError(f"{path}: must be {relation} {low}, got {value}")
    if high is not None and value > high:
        raise ConfigError(f"{path}: must be at most {high}, got {value}")
    return value


def _check_fields(config: Any, label: Callable[[str], str]) -> None:
    """Check every field of a config dataclass in place (ints given for floats become floats)."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = _check_value(label(f.name), getattr(config, f.name), hints[f.name], f.metadata)
        object.__setattr__(config, f.name, value)


def _check_n_best(decoding: Any, label: Callable[[str], str]) -> None:
    if decoding.n_best > decoding.beam_size:
        raise ConfigError(f"{label('n_best')} ({decoding.n_best}) cannot exceed "
                          f"{label('beam_size')} ({decoding.beam_size})")


def _parse_float(text: str, path: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{path}: expected a number, got {_show(text)}") from None


def _check_cross_fields(config: Config) -> None:
    """Rules that involve more than one key."""
    data, tok = config.data, config.tokenizer
    if data.format in DATASET_FORMATS and not data.dataset:
        raise ConfigError(f"data.dataset: required when data.format is '{data.format}' "
                          "(a hub name such as bentrevett/multi30k, or a folder for 'disk')")
    if data.format in FILE_FORMATS and data.dataset:
        raise ConfigError(f"data.dataset: only used with format 'hub' or 'disk'; with "
                          f"'{data.format}' give file paths in data.train/valid/test")
    if data.src_lang == data.tgt_lang and not (data.src_column and data.tgt_column):
        raise ConfigError(f"data.src_lang and data.tgt_lang are both '{data.src_lang}': give "
                          "two languages, or distinct data.src_column and data.tgt_column")
    if tok.model and (tok.src_model or tok.tgt_model):
        raise ConfigError("tokenizer.model (joint) cannot be combined with "
                          "tokenizer.src_model/tgt_model (separate): use one or the other")
    if bool(tok.src_model) != bool(tok.tgt_model):
        raise ConfigError("tokenizer.src_model and tokenizer.tgt_model go together: give both")
    if tok.byte_fallback and tok.vocab_size is not None and tok.vocab_size <= 260:
        raise ConfigError(f"tokenizer.vocab_size: {tok.vocab_size} leaves no room beside the 256 "
                          "byte pieces of byte_fallback; use more than 260 or set "
                          "tokenizer.byte_fallback: false")
    model = config.model
    separate = tok.src_model or (not tok.model and not tok.joint)
    if model.copy_attention and separate:
        raise ConfigError("model.copy_attention copies source token ids into the output, so "
                          "source and target must share one vocabulary: set tokenizer.joint: "
                          "true (or give one tokenizer.model), or turn copy_attention off")
    if model.copy_attention and model.attention == "none":
        raise ConfigError("model.copy_attention copies through the attention weights: set "
                          "model.attention (general, dot or mlp) or turn copy_attention off")
    train = config.training
    if train.valid_after and train.max_steps is None and train.max_epochs is None \
            and train.max_minutes is None:
        raise ConfigError("training.valid_after is a share of the budget, and this run has none: "
                          "set training.max_steps, max_epochs or max_minutes, or valid_after: 0")
    if train.max_steps is None and train.max_epochs is None and train.max_minutes is None \
            and train.patience == 0:
        raise ConfigError("training has no stopping rule: set training.max_steps, max_epochs, "
                          "max_minutes or patience")
    if train.schedule == "cosine" and train.max_steps is None and train.max_epochs is None \
            and train.max_minutes is None:
        raise ConfigError("training.schedule 'cosine' decays over the training budget: set "
                          "training.max_steps, max_epochs or max_minutes")
    if train.batch_tokens < data.max_len + 2:
        raise ConfigError(f"training.batch_tokens ({train.batch_tokens}) must hold the longest "
                          f"allowed example: data.max_len + 2 = {data.max_len + 2} (BOS and EOS)")
    if config.format_version > FORMAT_VERSION:
        raise ConfigError(f"format_version {config.format_version} was written by a newer "
                          f"version of nmt (this one reads up to {FORMAT_VERSION}): upgrade nmt")


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


# --------------------------------------------------------------------------- files and overrides


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["model.hidden_size=512", "data.src_lang=de"]`` into a nested dict.

    Values are parsed as YAML scalars (``512`` -> int, ``true`` -> bool, ``null`` -> None).
    """
    import yaml

    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}' is not of the form section.key=value "
                              "(for example model.hidden_size=512)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return nested


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` over ``base`` (update wins); returns ``base``."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` (never executes code)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, "
                          f"got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> Config:
    """Load a YAML config (or defaults when ``path`` is None) with overrides on top.

    ``overrides`` are dotlist strings parsed as YAML scalars; ``values`` is a nested mapping of
    values taken as they are (for command-line flags: ``--src-lang no`` stays the string "no").
    """
    raw = read_yaml(path) if path is not None else {}
    merge(raw, parse_overrides(overrides))
    merge(raw, values or {})
    return from_dict(raw)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain nested dicts (YAML/JSON ready)."""
    return dataclasses.asdict(config)


def dump_yaml(config: Config) -> str:
    """The config as YAML text, sections in definition order."""
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, dump_yaml(config))


def describe() -> list[tuple[str, str, str]]:
    """(key, default, help) for every config key, for the config reference (docs/config.md)."""
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((prefix + f.name, "null" if default is None else repr(default),
                         f.metadata.get("help", "")))

    walk(Config, "")
    return rows

