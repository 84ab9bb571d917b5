"""Sources: every kind of parallel corpus, loaded as a ``datasets.Dataset`` of (src, tgt) text.

Every source becomes a ``datasets.Dataset`` with two string columns, ``src`` and ``tgt``:

- ``text``: two line-aligned files ``PREFIX.SRC_LANG`` and ``PREFIX.TGT_LANG``. Lines are split
  on ``\\n`` only (``\\r\\n`` endings are accepted), so Unicode line separators inside a segment
  never shift the alignment. Different line counts are an error naming both counts.
- ``tsv``: ``source<TAB>target`` a line.
- ``jsonl``: a JSON object a line, nested (``{"translation": {"en": .., "de": ..}}``) or flat.
- ``tmx``, ``xliff``, ``po``: translation memories, read by :mod:`nmt.data.memories`.
- ``hub``: ``datasets.load_dataset(name, config, split=...)``; nested or flat schema as declared.
- ``disk``: a ``DatasetDict`` saved with ``save_to_disk``; nested or flat schema as declared.

Local files are read by generators through ``Dataset.from_generator``, which writes Arrow files to
the cache; memory stays flat however large the corpus. :func:`fingerprint` names a loaded
dataset's content for the caches downstream (:mod:`nmt.data.id_cache`, :mod:`nmt.data.prepare`)
through public ``datasets`` API only. Cleaning and encoding live in :mod:`nmt.data.id_cache`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nmt.config import DATASET_FORMATS, FILE_FORMATS, DataConfig
from nmt.errors import DataError, HubUnreachableError, NMTError
from nmt.fileio import sha256_text

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
HUB_PROBE_SECONDS = 3.0


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


def _gen_memory(kind: str, path: str, signature: str, src_lang: str,
                tgt_lang: str) -> Iterator[dict[str, str]]:
    from nmt.data.memories import read_memory

    yield from read_memory(kind, path, src_lang, tgt_lang)


def load_memory(path: str, cfg: DataConfig, cache_dir: Path) -> datasets.Dataset:
    """A TMX, XLIFF or PO file (``cfg.format``) as a (src, tgt) Dataset."""
    file = _require_file(Path(path), f"{cfg.format.upper()} file")
    return _from_generator(_gen_memory, {"kind": cfg.format, "path": str(file),
                                         "signature": _signature(file),
                                         "src_lang": cfg.src_lang, "tgt_lang": cfg.tgt_lang},
                           cache_dir)


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
    if isinstance(given.get("train"), list) and cfg.format in DATASET_FORMATS:
        raise DataError(f"data.train lists {len(given['train'])} sources: a list is for "
                        f"local files (data.format {', '.join(FILE_FORMATS)}), not {cfg.format}")
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
        if isinstance(location, list):  # several sources read as one corpus, in order
            import datasets

            parts = [_load_file(one, cfg, cache_dir) for one in location]
            out[split] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
            continue
        out[split] = _load_file(location, cfg, cache_dir)
    return out


def _load_file(location: str, cfg: DataConfig, cache_dir: Path) -> datasets.Dataset:
    """One local source of a file format as a (src, tgt) Dataset."""
    if cfg.format == "text":
        return load_text_files(location, cfg.src_lang, cfg.tgt_lang, cache_dir)
    if cfg.format == "tsv":
        return load_tsv(location, cache_dir)
    if cfg.format == "jsonl":
        return load_jsonl(location, cfg, cache_dir)
    return load_memory(location, cfg, cache_dir)


# --------------------------------------------------------------------------- fingerprints


def fingerprint(ds: datasets.Dataset) -> str:
    """A hex SHA-256 that names the rows of a loaded dataset: a cache key for later stages.

    A dataset backed by Arrow files (what the loaders make: ``from_generator`` and ``map``
    write them) is named by its files' paths, sizes and modification times, its row count and
    its columns. The file names already follow the source (local files: a hash of their paths,
    sizes and mtimes; hub and disk: the dataset's revision or saved state), and a rewritten
    file has a new size or mtime, so a change of data gives a new fingerprint while a second
    load of the same data gives the same one, without reading the rows. A dataset held in
    memory (an empty split), or one that shows fewer rows than its table holds (a selection),
    is named by its content instead: its rows streamed as Arrow IPC through SHA-256.
    """
    files = [Path(f["filename"]) for f in ds.cache_files]
    head = json.dumps({"rows": len(ds), "columns": ds.column_names})
    if files and len(ds) == ds.data.num_rows:
        return sha256_text(head, _signature(*files))
    return sha256_text(head, _content_digest(ds))


class _HashSink:
    """A write-only file object that hashes what is written to it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _content_digest(ds: datasets.Dataset) -> str:
    """Hex SHA-256 of a dataset's rows (in its order) and schema, written as one Arrow stream."""
    import pyarrow as pa

    # [:] reads the rows as the dataset shows them (a selection gathered); one chunk a column,
    # so that equal content gives equal bytes however it was chunked
    table = ds.with_format("arrow")[:] if len(ds) else ds.data.table.slice(0, 0)
    sink = _HashSink()
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return sink.digest.hexdigest()
