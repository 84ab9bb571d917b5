"""Data stage: load a parallel corpus through Hugging Face ``datasets``, clean it, tokenise it.

Every source becomes a ``datasets.Dataset`` with two string columns, ``src`` and ``tgt``:

- ``text``: two line-aligned files ``PREFIX.SRC_LANG`` and ``PREFIX.TGT_LANG``. Lines are split
  on ``\\n`` only (``\\r\\n`` endings are accepted), so Unicode line separators inside a segment
  never shift the alignment. Different line counts are an error naming both counts.
- ``tsv``: ``source<TAB>target`` a line.
- ``jsonl``: a JSON object a line, nested (``{"translation": {"en": .., "de": ..}}``) or flat.
- ``hub``: ``datasets.load_dataset(name, config, split=...)``; nested or flat schema as declared.
- ``disk``: a ``DatasetDict`` saved with ``save_to_disk``; nested or flat schema as declared.

Local files are read by generators through ``Dataset.from_generator``, which writes Arrow files to
the cache; memory stays flat however large the corpus. Cleaning strips whitespace, drops empty
pairs, and (training split only) drops pairs over ``max_len`` tokens and pairs whose length
ratio exceeds ``max_ratio``; the counts of each are logged. The test split is never filtered, so
its lines stay aligned with the reference file.

Tokenised ids are cached as Arrow through ``Dataset.map`` under ``cache_dir``; the cache file name
is a hash of the data's fingerprint, the tokenizer model bytes and the cleaning settings, so a
second run re-uses it and a change of any of them makes a new one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.config import Config, DataConfig, to_dict
from nmt.errors import DataError, HubUnreachableError, NMTError
from nmt.fileio import sha256_text, write_text_atomic
from nmt.tokenizer import (
    Tokenizer,
    load_from_dir,
    load_pretrained,
    model_files,
    sample_lines,
    train_sentencepiece,
)

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
#: Bump when the encoded cache layout changes, so old caches are not re-used.
CACHE_VERSION = "1"
#: Reasons a pair is dropped, stored per row in the ``drop`` column.
KEEP, EMPTY, TOO_LONG, RATIO = 0, 1, 2, 3
REASONS = {EMPTY: "empty", TOO_LONG: "too long", RATIO: "length ratio"}
HUB_PROBE_SECONDS = 3.0
TOKENIZER_MARKER = "tokenizer.json"
#: Present in a run directory once a model has been trained there (written by the trainer).
TRAINER_STATE_FILE = "trainer_state.pt"


# --------------------------------------------------------------------------- local files


def _line_count(path: Path) -> int:
    """Lines in a file as ``\\n``-separated segments (a last line without ``\\n`` counts)."""
    count, last = 0, b"\n"
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _lines(path: str) -> Iterator[str]:
    """Decoded lines of a file, split on ``\\n`` only, without their line ending."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: line {number} is not valid UTF-8 ({exc.reason} at byte "
                                f"{exc.start}); fix or re-encode the file") from None
            yield line.rstrip("\n").rstrip("\r")


def _signature(*paths: Path) -> str:
    """Size and modification time of files: part of the cache key of generated datasets."""
    return ";".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths)


def _gen_text_pair(src: str, tgt: str, signature: str) -> Iterator[dict[str, str]]:
    for src_line, tgt_line in zip(_lines(src), _lines(tgt), strict=True):
        yield {"src": src_line, "tgt": tgt_line}


def _gen_tsv(path: str, signature: str) -> Iterator[dict[str, str]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            yield {"src": "", "tgt": ""}
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{path}: line {number} has {len(fields)} tab-separated fields; a TSV "
                            "corpus needs exactly two (source<TAB>target)")
        yield {"src": fields[0], "tgt": fields[1]}


def _gen_jsonl(path: str, signature: str, src_key: str, tgt_key: str,
               nested: str | None) -> Iterator[dict[str, str]]:
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        container = record.get(nested) if nested and isinstance(record, dict) else record
        if not isinstance(container, dict) or src_key not in container \
                or tgt_key not in container:
            where = f"'{nested}' with keys" if nested else "keys"
            raise DataError(f"{path}: line {number} lacks {where} '{src_key}' and '{tgt_key}' "
                            "(set data.translation_field / data.src_column / data.tgt_column)")
        yield {"src": _text(container[src_key]), "tgt": _text(container[tgt_key])}


def _text(value: Any) -> str:
    """A field as text; null becomes an empty string (the pair is then dropped and counted)."""
    return "" if value is None else str(value)


def _from_generator(generator: Any, gen_kwargs: dict[str, Any],
                    cache_dir: Path) -> datasets.Dataset:
    import datasets

    features = datasets.Features({"src": datasets.Value("string"),
                                  "tgt": datasets.Value("string")})
    try:
        return datasets.Dataset.from_generator(generator, features=features, gen_kwargs=gen_kwargs,
                                               cache_dir=str(cache_dir / "raw"))
    except ValueError as exc:
        if "corresponds to no data" not in str(exc):
            raise
        # datasets refuses to build a dataset from an empty generator: an empty split
        return datasets.Dataset.from_dict({"src": [], "tgt": []}, features=features)
    except Exception as exc:  # datasets wraps generator errors in DatasetGenerationError
        cause = exc
        while cause is not None and not isinstance(cause, NMTError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


def load_text_files(prefix: str, src_lang: str, tgt_lang: str, cache_dir: Path) -> datasets.Dataset:
    """Two line-aligned files ``PREFIX.SRC_LANG`` / ``PREFIX.TGT_LANG`` as a (src, tgt) Dataset."""
    src = _require_file(Path(f"{prefix}.{src_lang}"), "source file")
    tgt = _require_file(Path(f"{prefix}.{tgt_lang}"), "target file")
    n_src, n_tgt = _line_count(src), _line_count(tgt)
    if n_src != n_tgt:
        raise DataError(f"line counts differ: {src} has {n_src} lines but {tgt} has {n_tgt}; "
                        "parallel files must be line-aligned")
    return _from_generator(_gen_text_pair, {"src": str(src), "tgt": str(tgt),
                                            "signature": _signature(src, tgt)}, cache_dir)


def load_tsv(path: str, cache_dir: Path) -> datasets.Dataset:
    """A ``source<TAB>target`` file as a (src, tgt) Dataset."""
    file = _require_file(Path(path), "TSV file")
    return _from_generator(_gen_tsv, {"path": str(file), "signature": _signature(file)}, cache_dir)


def load_jsonl(path: str, cfg: DataConfig, cache_dir: Path) -> datasets.Dataset:
    """A JSON-lines file (nested or flat schema, as declared) as a (src, tgt) Dataset."""
    file = _require_file(Path(path), "JSON lines file")
    src_key, tgt_key = _columns(cfg)
    return _from_generator(_gen_jsonl, {"path": str(file), "signature": _signature(file),
                                        "src_key": src_key, "tgt_key": tgt_key,
                                        "nested": cfg.translation_field}, cache_dir)


# --------------------------------------------------------------------------- hub and disk


def _columns(cfg: DataConfig) -> tuple[str, str]:
    return cfg.src_column or cfg.src_lang, cfg.tgt_column or cfg.tgt_lang


def _pairs_nested(batch: dict[str, list], column: str, src: str, tgt: str) -> dict[str, list]:
    rows = batch[column]
    return {"src": [_text(row[src]) for row in rows], "tgt": [_text(row[tgt]) for row in rows]}


def _pairs_flat(batch: dict[str, list], src: str, tgt: str) -> dict[str, list]:
    return {"src": [_text(x) for x in batch[src]], "tgt": [_text(x) for x in batch[tgt]]}


def to_pairs(ds: datasets.Dataset, cfg: DataConfig, where: str) -> datasets.Dataset:
    """Map a hub-schema dataset (nested ``translation`` or flat columns) to (src, tgt) columns."""
    src, tgt = _columns(cfg)
    columns = ds.column_names
    if cfg.translation_field:
        column = cfg.translation_field
        if column not in columns:
            raise DataError(f"{where}: no column '{column}' (data.translation_field); columns are "
                            f"{columns}")
        keys = _struct_keys(ds.features[column])
        missing = [k for k in (src, tgt) if keys is not None and k not in keys]
        if missing:
            raise DataError(f"{where}: '{column}' has no language {missing[0]!r}; it has "
                            f"{sorted(keys)}; check data.src_lang / data.tgt_lang")
        function, kwargs = _pairs_nested, {"column": column, "src": src, "tgt": tgt}
    else:
        missing = [c for c in (src, tgt) if c not in columns]
        if missing:
            nested = [c for c in columns if _struct_keys(ds.features[c])]
            hint = (f"; the nested column {nested[0]!r} looks like a translation field: set "
                    f"data.translation_field: {nested[0]}") if nested else \
                "; set data.src_column / data.tgt_column"
            raise DataError(f"{where}: no column {missing[0]!r}; columns are {columns}{hint}")
        function, kwargs = _pairs_flat, {"src": src, "tgt": tgt}
    return ds.map(function, fn_kwargs=kwargs, batched=True, remove_columns=columns,
                  desc=f"{where}: select columns")


def _struct_keys(feature: Any) -> set[str] | None:
    """Language keys of a nested translation feature, or None when not nested."""
    import datasets

    if isinstance(feature, datasets.Translation):
        return set(feature.languages)
    if isinstance(feature, dict):
        return set(feature)
    return None


def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> tuple[bool, str]:
    """Whether the Hugging Face hub endpoint accepts a TCP connection within ``timeout`` seconds.

    Runs in a daemon thread so that a hanging DNS lookup cannot exceed the timeout either.
    """
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[str] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append("")
        except OSError as exc:
            result.append(str(exc) or type(exc).__name__)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        return False, f"no answer from {endpoint} within {timeout:.0f} s"
    return result[0] == "", f"{endpoint}: {result[0]}" if result[0] else endpoint


def _offline_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub(cfg: DataConfig, split_names: dict[str, str]) -> dict[str, datasets.Dataset]:
    """Splits of a hub dataset by name, through ``datasets.load_dataset``.

    Without network the hub is probed first (a few seconds at most) and a one-line error says
    how to use local files instead, rather than letting ``datasets`` retry for tens of seconds.
    With ``HF_HUB_OFFLINE=1`` the probe is skipped and the local Hugging Face cache is used.
    """
    import datasets

    name = cfg.dataset or ""
    local = Path(name).exists()
    if not local and not _offline_env():
        ok, reason = hub_reachable()
        if not ok:
            raise HubUnreachableError(
                f"cannot reach the Hugging Face hub to load '{name}' ({reason}). Use local files "
                "instead (data.format: text, tsv or jsonl, or disk for a dataset saved with "
                "save_to_disk), or, if the dataset is in your Hugging Face cache, set "
                "HF_HUB_OFFLINE=1")
    try:
        available = datasets.get_dataset_split_names(name, cfg.dataset_config,
                                                     revision=cfg.revision)
    except Exception as exc:  # datasets raises many kinds here; all mean "cannot load"
        raise DataError(f"cannot load '{name}' (config {cfg.dataset_config}): "
                        f"{_first_line(exc)}. Check data.dataset and data.dataset_config, or "
                        "use local files") from None
    out = {}
    for split, split_name in _present_splits(cfg, split_names, available, name).items():
        try:
            ds = datasets.load_dataset(name, cfg.dataset_config, split=split_name,
                                       revision=cfg.revision)
        except Exception as exc:
            raise DataError(f"cannot load split '{split_name}' of '{name}': "
                            f"{_first_line(exc)}") from None
        out[split] = to_pairs(ds, cfg, f"{name}[{split_name}]")
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _present_splits(cfg: DataConfig, split_names: dict[str, str], available: list[str],
                    where: str) -> dict[str, str]:
    """The requested splits that exist; a missing split is an error only if it was named."""
    present = {}
    for split, split_name in split_names.items():
        if split_name in available:
            present[split] = split_name
        elif getattr(cfg, split) or split == "train":
            raise DataError(f"{where}: no split '{split_name}' for data.{split}; splits are "
                            f"{list(available)}")
        else:
            log.info("data: %s has no '%s' split: running without data.%s", where, split_name,
                     split)
    return present


def load_disk(cfg: DataConfig, split_names: dict[str, str]) -> dict[str, datasets.Dataset]:
    """Splits of a ``DatasetDict`` saved with ``save_to_disk``."""
    import datasets

    path = Path(cfg.dataset or "")
    if not path.exists():
        raise DataError(f"dataset folder not found: {path}")
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({exc})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"{path}: holds a single Dataset; save a DatasetDict with named splits "
                        "(train, validation, test)")
    out = {}
    for split, split_name in _present_splits(cfg, split_names, list(loaded), str(path)).items():
        out[split] = to_pairs(loaded[split_name], cfg, f"{path}[{split_name}]")
    return out


def load_splits(cfg: DataConfig, cache_dir: Path,
                splits: tuple[str, ...] = SPLITS) -> dict[str, datasets.Dataset]:
    """The requested splits as (src, tgt) Datasets; splits without a source are left out.

    ``train`` is required; for ``hub``/``disk`` unset splits take their usual names
    (``train``, ``validation``, ``test``).
    """
    given = {s: getattr(cfg, s) for s in splits}
    if cfg.format in ("hub", "disk"):
        names = {s: given[s] or DEFAULT_SPLIT_NAMES[s] for s in splits}
        if cfg.format == "hub":
            return load_hub(cfg, names)
        return load_disk(cfg, names)
    if "train" in splits and not given["train"]:
        raise DataError(f"data.train is not set: give the training "
                        f"{'file prefix' if cfg.format == 'text' else 'file'}")
    out = {}
    for split, location in given.items():
        if not location:
            continue
        if cfg.format == "text":
            out[split] = load_text_files(location, cfg.src_lang, cfg.tgt_lang, cache_dir)
        elif cfg.format == "tsv":
            out[split] = load_tsv(location, cache_dir)
        else:
            out[split] = load_jsonl(location, cfg, cache_dir)
    return out


# --------------------------------------------------------------------------- cleaning and encoding


def _encode_batch(batch: dict[str, list], src_tok: Tokenizer, tgt_tok: Tokenizer, clean: bool,
                  max_len: int, max_ratio: float, ratio_min_len: int) -> dict[str, list]:
    """Strip, encode and mark the drop reason of a batch of pairs.

    ``src_ids``: pieces + EOS; ``tgt_ids``: BOS + pieces + EOS.
    """
    src = [s.strip() for s in batch["src"]]
    tgt = [t.strip() for t in batch["tgt"]]
    src_ids = src_tok.encode_batch(src, add_bos=False, add_eos=True)
    tgt_ids = tgt_tok.encode_batch(tgt, add_bos=True, add_eos=True)
    drop = []
    for s, t, si, ti in zip(src, tgt, src_ids, tgt_ids, strict=True):
        ns, nt = len(si) - 1, len(ti) - 2  # pieces without the specials
        if not s or not t:
            reason = EMPTY
        elif clean and max(ns, nt) > max_len:
            reason = TOO_LONG
        elif clean and ratio_min_len < max(ns, nt) > max_ratio * max(min(ns, nt), 1):
            reason = RATIO
        else:
            reason = KEEP
        drop.append(reason)
    return {"src": src, "tgt": tgt, "src_ids": src_ids, "tgt_ids": tgt_ids,
            "src_len": [len(x) for x in src_ids], "tgt_len": [len(x) for x in tgt_ids],
            "drop": drop}


@dataclass
class SplitStats:
    """What cleaning did to one split."""

    split: str
    total: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    src_tokens: int = 0
    tgt_tokens: int = 0

    def describe(self) -> str:
        drops = ", ".join(f"{n} {r}" for r, n in self.dropped.items() if n) or "none"
        return f"{self.split}: {self.kept}/{self.total} pairs kept (dropped: {drops})"


def encode_split(ds: datasets.Dataset, split: str, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 cfg: DataConfig, cache_dir: Path) -> tuple[datasets.Dataset, SplitStats]:
    """Tokenise and clean one split, with the result cached as Arrow under ``cache_dir``.

    ``train`` gets the full cleaning; ``valid`` loses only empty pairs; ``test`` keeps every
    line (its hypotheses must stay aligned with the reference file).
    """
    import datasets  # noqa: F401  (the Dataset methods below need it imported)

    clean = split == "train"
    settings = {"clean": clean, "max_len": cfg.max_len, "max_ratio": cfg.max_ratio,
                "ratio_min_len": cfg.ratio_min_len}
    key = sha256_text(CACHE_VERSION, ds._fingerprint, src_tok.fingerprint(),
                      tgt_tok.fingerprint(), json.dumps(settings, sort_keys=True))[:20]
    cache_dir.mkdir(parents=True, exist_ok=True)
    encoded = ds.map(
        _encode_batch, batched=True, batch_size=2000,
        fn_kwargs={"src_tok": src_tok, "tgt_tok": tgt_tok, **settings},
        remove_columns=ds.column_names, num_proc=cfg.num_proc if len(ds) > 10_000 else None,
        cache_file_name=str(cache_dir / f"{split}-{key}.arrow"), new_fingerprint=key,
        desc=f"encode {split}")
    reasons = encoded.data.column("drop").to_numpy()
    import numpy as np

    counts = np.bincount(reasons, minlength=len(REASONS) + 1)
    if split == "test":
        counts[:] = 0
        counts[KEEP] = len(encoded)
    keep = reasons == KEEP if split != "test" else np.ones(len(encoded), dtype=bool)
    kept = encoded
    if not keep.all():
        # an indices mapping over the encoded rows, not a second copy of them: no pass over
        # the ids here (batching.Corpus gathers the kept rows when training starts)
        kept = encoded.select(np.flatnonzero(keep), indices_cache_file_name=str(
            cache_dir / f"{split}-{key}-kept.indices.arrow"), new_fingerprint=key + "-kept")
    stats = SplitStats(split, len(encoded), len(kept),
                       {REASONS[r]: int(counts[r]) for r in REASONS})
    if len(kept):
        stats.src_tokens = int(encoded.data.column("src_len").to_numpy()[keep].sum())
        stats.tgt_tokens = int(encoded.data.column("tgt_len").to_numpy()[keep].sum())
    return kept, stats


# --------------------------------------------------------------------------- tokenizer stage


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
    pretrained = load_pretrained(cfg)
    if pretrained:
        _write_tokenizers(out, pretrained, {"key": "pretrained", "tokenizer": to_dict(cfg)})
        return pretrained
    settings = {"tokenizer": to_dict(cfg), "langs": [config.data.src_lang, config.data.tgt_lang]}
    key = sha256_text(CACHE_VERSION, train._fingerprint, json.dumps(settings, sort_keys=True))
    names = model_files(cfg.joint)
    marker = _read_marker(out)
    if marker and all((out / n).is_file() for n in names):
        if marker.get("key") == key:
            log.info("tokenizer: re-using %s", ", ".join(str(out / n) for n in names))
            return load_from_dir(out)
        if (out / TRAINER_STATE_FILE).is_file():
            if marker.get("settings") == settings:
                log.info("tokenizer: the corpus fingerprint changed, but a model trained in %s "
                         "uses this tokenizer: keeping it", out)
                return load_from_dir(out)
            raise DataError(f"{out} holds a trained model whose tokenizer was made with other "
                            "settings; use a new output_dir for a different tokenizer")
    start = time.perf_counter()
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
    _write_tokenizers(out, tokenizers, {"key": key, "settings": settings})
    log.info("tokenizer: trained %s in %.1f s", ", ".join(names), time.perf_counter() - start)
    return tokenizers


def _read_marker(out: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((out / TOKENIZER_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def _write_tokenizers(out: Path, tokenizers: tuple[Tokenizer, Tokenizer],
                      marker: dict[str, Any]) -> None:
    """Write the model file(s) of one layout, remove the other layout's, marker last."""
    joint = tokenizers[0] is tokenizers[1]
    (out / TOKENIZER_MARKER).unlink(missing_ok=True)
    for stale in model_files(not joint):
        (out / stale).unlink(missing_ok=True)
    names = model_files(joint)
    for name, tok in zip(names, dict.fromkeys(tokenizers), strict=True):
        tok.save(out / name)
    write_text_atomic(out / TOKENIZER_MARKER, json.dumps({**marker, "files": list(names)},
                                                         indent=2))


# --------------------------------------------------------------------------- the whole stage


@dataclass
class Prepared:
    """Encoded splits and the tokenizers that made them."""

    src_tok: Tokenizer
    tgt_tok: Tokenizer
    splits: dict[str, Any]
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


def cache_dir(config: Config) -> Path:
    """Where a run caches its Arrow files: ``data.cache_dir``, else ``OUTPUT_DIR/cache``."""
    return Path(config.data.cache_dir) if config.data.cache_dir else config.out / "cache"


def prepare(config: Config, splits: tuple[str, ...] = SPLITS) -> Prepared:
    """Load, clean and tokenise the corpus of a run (training the tokenizer if needed)."""
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
