"""Encoding: clean and tokenise a split, with the encoded ids cached as Arrow.

Cleaning strips whitespace, drops empty pairs, and (training split only) drops pairs over
``max_len`` tokens and pairs whose length ratio exceeds ``max_ratio``; the counts of each are
kept in :class:`SplitStats`. The test split is never filtered, so its lines stay aligned with
the reference file.

Tokenised ids are cached as Arrow through ``Dataset.map`` under ``cache_dir``; the cache file name
is a hash of the data's :func:`nmt.data.sources.fingerprint`, the tokenizer model bytes and the
cleaning settings, so a second run re-uses it and a change of any of them makes a new one. The
cache holds every row with its drop reason; the kept rows travel beside it as row numbers in an
:class:`EncodedSplit`, so that keeping them copies nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt.config import Config, DataConfig
from nmt.data.sources import fingerprint
from nmt.data.tokenizer import Tokenizer
from nmt.fileio import sha256_text
from nmt.layout import RunDir

if TYPE_CHECKING:
    import datasets

#: Bump when the encoded cache layout changes, so old caches are not re-used.
CACHE_VERSION = "1"
#: Reasons a pair is dropped, stored per row in the ``drop`` column.
KEEP, EMPTY, TOO_LONG, RATIO = 0, 1, 2, 3
REASONS = {EMPTY: "empty", TOO_LONG: "too long", RATIO: "length ratio"}


def cache_dir(config: Config) -> Path:
    """Where a run caches its Arrow files: ``data.cache_dir``, else ``OUTPUT_DIR/cache``."""
    return Path(config.data.cache_dir) if config.data.cache_dir else RunDir(config.out).cache


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


@dataclass(eq=False)
class EncodedSplit:
    """One encoded split: every encoded row, and the row numbers that cleaning kept.

    It reads like the ``Dataset`` of its kept rows: ``len(split)``, ``split["tgt"]`` (a column),
    ``split[i]`` (a row as a dict). :class:`nmt.data.batching.Corpus` gathers its kept ids.

    Attributes:
        dataset: every row of the split, encoded (``src``, ``tgt``, ``src_ids``, ``tgt_ids``,
            ``src_len``, ``tgt_len``, ``drop``); its rows are its Arrow table's rows (no
            selection), memory-mapped from the cache.
        rows: (N,) int64 row numbers of ``dataset`` that cleaning kept, ascending.
    """

    dataset: datasets.Dataset
    rows: np.ndarray

    def __post_init__(self) -> None:
        if len(self.dataset) != self.dataset.data.num_rows:
            raise ValueError("EncodedSplit.dataset must show every row of its table (give the "
                             "kept rows as EncodedSplit.rows, not as a selection)")

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def kept(self) -> datasets.Dataset:
        """The kept rows as a ``Dataset`` (a selection held in memory; the ids are not copied)."""
        if len(self.rows) == len(self.dataset):  # ascending and complete: every row
            return self.dataset
        return self.dataset.select(self.rows, keep_in_memory=True)

    def __getitem__(self, key: int | str) -> Any:
        """A kept row (``int``: a dict) or a column of the kept rows (``str``)."""
        return self.kept[key]

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(N,) source and (N,) target lengths of the kept rows, specials included."""
        table = self.dataset.data
        return (table.column("src_len").to_numpy()[self.rows],
                table.column("tgt_len").to_numpy()[self.rows])


def encode_split(ds: datasets.Dataset, split: str, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 cfg: DataConfig, cache_dir: Path) -> tuple[EncodedSplit, SplitStats]:
    """Tokenise and clean one split, with the result cached as Arrow under ``cache_dir``.

    ``train`` gets the full cleaning; ``valid`` loses only empty pairs; ``test`` keeps every
    line (its hypotheses must stay aligned with the reference file).
    """
    import datasets  # noqa: F401  (the Dataset methods below need it imported)

    clean = split == "train"
    settings = {"clean": clean, "max_len": cfg.max_len, "max_ratio": cfg.max_ratio,
                "ratio_min_len": cfg.ratio_min_len}
    key = sha256_text(CACHE_VERSION, fingerprint(ds), src_tok.fingerprint(),
                      tgt_tok.fingerprint(), json.dumps(settings, sort_keys=True))[:20]
    cache_dir.mkdir(parents=True, exist_ok=True)
    encoded = ds.map(
        _encode_batch, batched=True, batch_size=2000,
        fn_kwargs={"src_tok": src_tok, "tgt_tok": tgt_tok, **settings},
        remove_columns=ds.column_names, num_proc=cfg.num_proc if len(ds) > 10_000 else None,
        cache_file_name=str(cache_dir / f"{split}-{key}.arrow"), new_fingerprint=key,
        desc=f"encode {split}")
    reasons = encoded.data.column("drop").to_numpy()
    counts = np.bincount(reasons, minlength=len(REASONS) + 1)
    if split == "test":
        counts[:] = 0
        counts[KEEP] = len(encoded)
    keep = reasons == KEEP if split != "test" else np.ones(len(encoded), dtype=bool)
    # row numbers, not a second copy of the rows: no pass over the ids here
    # (batching.Corpus gathers the kept rows when training starts)
    kept = EncodedSplit(encoded, np.flatnonzero(keep).astype(np.int64))
    stats = SplitStats(split, len(encoded), len(kept),
                       {REASONS[r]: int(counts[r]) for r in REASONS})
    if len(kept):
        src_len, tgt_len = kept.lengths()
        stats.src_tokens, stats.tgt_tokens = int(src_len.sum()), int(tgt_len.sum())
    return kept, stats
