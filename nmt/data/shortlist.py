"""Lexical shortlists: the target pieces a source sentence makes likely, so that search projects
each step onto a few hundred pieces instead of the whole target vocabulary.

A :class:`Shortlist` holds, for each source piece, the ``per_source`` target pieces most
probable as its translation, and the ``frequent`` most frequent target pieces. A batch's
vocabulary (:meth:`Shortlist.vocabulary`) is the union of its sentences' pieces' lists, the
frequent pieces, the special ids and, with a joint vocabulary, the source pieces themselves
(copied names and numbers; copy attention needs them).

The translation probabilities are IBM Model 1's (Brown et al. 1993), a few rounds of EM over
the training pairs' pieces with a NULL source word, as Marian's shortlists take theirs from an
aligner's lexical table. EM runs on the co-occurring (source, target) pairs only, as flat
arrays: memory grows with the corpus, not with the vocabularies' product, and
:func:`build_shortlist` samples sentences when the corpus would exceed ``max_links``.

The table lives in the model directory as ``shortlist.safetensors`` (:mod:`nmt.layout`):
``candidates`` (V_src, per_source) int32, PAD where a piece has fewer, and ``frequent`` (N,)
int32, with the settings in the metadata. It is data, read without executing anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nmt.data.tokenizer import PAD_ID, SPECIAL_IDS, Tokenizer
from nmt.errors import NMTError
from nmt.fileio import sha256_text, write_bytes_atomic

log = logging.getLogger(__name__)

#: Target pieces kept per source piece, and most frequent target pieces always in the list:
#: chosen by measurement (docs/benchmarks.md, "Lexical shortlists").
PER_SOURCE = 100
FREQUENT = 500
#: EM rounds of IBM Model 1 (the lists change little after the fourth).
ITERATIONS = 5
#: At most this many (source, target) links per EM round: larger corpora are sampled. Building
#: peaks at about 70 bytes a link over the process's own memory (measured: 1.4 GB for the 22M
#: links of the LibreOffice corpus), so at most about 1.4 GB.
MAX_LINKS = 20_000_000
NULL = PAD_ID  # the NULL source word (PAD never occurs inside a sentence)


@dataclass
class Restriction:
    """A batch's output vocabulary under a shortlist.

    Attributes:
        ids: (M,) sorted target ids, the union of the batch's shortlists, special ids first.
        allowed: (B, M) bool, the positions each sentence's own shortlist holds; None when
            every sentence may use all of them (one sentence).
    """

    ids: torch.Tensor
    allowed: torch.Tensor | None

    def to(self, device: torch.device) -> Restriction:
        """The same restriction on ``device``."""
        return Restriction(self.ids.to(device),
                           None if self.allowed is None else self.allowed.to(device))


@dataclass
class Shortlist:
    """Likely target pieces per source piece, and the frequent pieces.

    Attributes:
        candidates: (V_src, K) int64 target ids per source id, best first, PAD-padded.
        frequent: (N,) int64 the most frequent target ids.
        joint: source and target share one vocabulary (the source's own pieces join the list).
        target_size: V_tgt, the size of the target vocabulary.
    """

    candidates: torch.Tensor
    frequent: torch.Tensor
    joint: bool
    target_size: int

    def restriction(self, src: torch.Tensor) -> Restriction:
        """What a batch of sources (B, S) may produce: the sorted union of their shortlists
        (M,) and, for several sentences, which of those each sentence's own holds (B, M).

        The special ids are always in, and, being the smallest, keep their positions:
        position ``i < len(SPECIAL_IDS)`` holds id ``i``.
        """
        src = src.long().cpu()
        batch = src.size(0)
        member = torch.zeros(batch, self.target_size, dtype=torch.bool)
        member[:, :len(SPECIAL_IDS)] = True
        member[:, self.frequent] = True
        found = self.candidates[src.clamp(max=self.candidates.size(0) - 1)]  # (B, S, K)
        member.scatter_(1, found.reshape(batch, -1), True)
        if self.joint:  # the source's own pieces: copied names and numbers, copy attention
            member.scatter_(1, src.clamp(max=self.target_size - 1), True)
        ids = member.any(0).nonzero().squeeze(1)  # (M,), sorted
        return Restriction(ids, member[:, ids] if batch > 1 else None)

    def vocabulary(self, src: torch.Tensor) -> torch.Tensor:
        """The sorted target ids (M,) a batch of sources (B, S) may produce (the union)."""
        return self.restriction(src).ids

    def save(self, path: str | Path, **metadata: str) -> None:
        """Write ``shortlist.safetensors`` atomically."""
        data = st_save({"candidates": self.candidates.to(torch.int32).contiguous(),
                        "frequent": self.frequent.to(torch.int32).contiguous()},
                       metadata={"joint": str(self.joint), "target_size": str(self.target_size),
                                 **metadata})
        write_bytes_atomic(path, data)

    @classmethod
    def load(cls, path: str | Path, src_size: int, tgt_size: int,
             tokenizers: str | None = None) -> Shortlist:
        """Read a table written by :meth:`save`, checking it fits the model's vocabularies
        (and, given their :func:`tokenizer_key`, that it was made with those tokenizers)."""
        path = Path(path)
        try:
            tensors = st_load(path.read_bytes())
            meta = read_metadata(path)
            candidates, frequent = tensors["candidates"].long(), tensors["frequent"].long()
            joint, size = meta["joint"] == "True", int(meta["target_size"])
        except FileNotFoundError:
            raise NMTError(f"{path} does not exist: build it with nmt shortlist "
                           f"{path.parent}") from None
        except (SafetensorError, KeyError, ValueError, OSError) as exc:
            raise NMTError(f"{path} is not a shortlist table ({exc}): build it again with nmt "
                           f"shortlist {path.parent}") from None
        ids = torch.cat([candidates.reshape(-1), frequent.reshape(-1), torch.zeros(1).long()])
        if (candidates.dim() != 2 or candidates.size(0) != src_size or size != tgt_size
                or frequent.dim() != 1 or int(ids.max()) >= tgt_size or int(ids.min()) < 0):
            raise NMTError(f"{path} does not fit the model's vocabularies ({src_size} source, "
                           f"{tgt_size} target pieces): build it again with nmt shortlist "
                           f"{path.parent}")
        if tokenizers is not None and meta.get("tokenizers", tokenizers) != tokenizers:
            raise NMTError(f"{path} was made with other SentencePiece models than the model's: "
                           f"build it again with nmt shortlist {path.parent}")
        return cls(candidates, frequent, joint, size)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a table written by :meth:`Shortlist.save` (only its header is read)."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def tokenizer_key(src_tok: Tokenizer, tgt_tok: Tokenizer) -> str:
    """What a table records of the SentencePiece models it was made with."""
    return sha256_text(src_tok.fingerprint(), tgt_tok.fingerprint())[:20]


def ibm1(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], src_size: int,
         tgt_size: int, iterations: int = ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """IBM Model 1's t(target | source) on the co-occurring pairs, by EM.

    Args:
        sources, targets: the pairs' piece ids without special ids (a NULL source word is
            added to every sentence).
    Returns:
        (U,) int64 keys ``source * tgt_size + target`` of the co-occurring pairs, sorted, and
        (U,) float32 their probabilities t(target | source).
    """
    src_parts, tgt_parts, group_parts = [], [], []
    position = 0
    for s, t in zip(sources, targets, strict=True):
        if not len(t):
            continue
        s = np.concatenate([[NULL], np.asarray(s, dtype=np.int32)]).astype(np.int32)
        t = np.asarray(t, dtype=np.int32)
        src_parts.append(np.tile(s, len(t)))  # each target position sees every source word
        tgt_parts.append(np.repeat(t, len(s)))
        group_parts.append(np.repeat(np.arange(position, position + len(t), dtype=np.int32),
                                     len(s)))
        position += len(t)
    if not src_parts:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    keys = np.concatenate(src_parts).astype(np.int64)
    del src_parts
    keys *= tgt_size
    keys += np.concatenate(tgt_parts)
    del tgt_parts
    group = torch.from_numpy(np.concatenate(group_parts))  # (L,) int32 target position of links
    del group_parts
    pairs, index = torch.unique(torch.from_numpy(keys), return_inverse=True)  # (U,), (L,)
    del keys
    index = index.to(torch.int32)  # half the memory of the (L,) arrays
    pair_source = pairs // tgt_size  # (U,)
    prob = torch.ones(pairs.numel())
    for _ in range(iterations):
        link = prob[index]  # (L,) t(target | source) of each link
        total = torch.zeros(position).index_add_(0, group, link)  # per target position
        posterior = link / total[group]  # the expected alignment of each link
        counts = torch.zeros(pairs.numel()).index_add_(0, index, posterior)
        per_source = torch.zeros(src_size).index_add_(0, pair_source, counts)
        prob = counts / per_source[pair_source]
    return pairs, prob


def sample_pairs(links: np.ndarray, max_links: int = MAX_LINKS, seed: int = 0) -> np.ndarray:
    """Ascending indices of the pairs to build from, given each pair's (N,) links: all of them,
    or a random sample (``seed``) holding at most ``max_links`` links."""
    if int(links.sum()) <= max_links:
        return np.arange(len(links))
    order = np.random.default_rng(seed).permutation(len(links))
    return np.sort(order[np.cumsum(links[order]) <= max_links])


def build_shortlist(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                    src_size: int, tgt_size: int, joint: bool, per_source: int = PER_SOURCE,
                    frequent: int = FREQUENT, max_links: int = MAX_LINKS,
                    seed: int = 0) -> Shortlist:
    """A shortlist from training pairs of piece ids (special ids are ignored).

    Each source piece keeps its ``per_source`` most probable target pieces under IBM Model 1;
    the ``frequent`` most frequent target pieces are always in. When the pairs hold more than
    ``max_links`` (source, target) links, a random sample of them (``seed``) is used.
    """
    started = time.perf_counter()
    special = len(SPECIAL_IDS)
    src = [np.asarray(s, dtype=np.int64) for s in sources]
    tgt = [np.asarray(t, dtype=np.int64) for t in targets]
    src = [s[s >= special] for s in src]
    tgt = [t[t >= special] for t in tgt]
    counts = np.bincount(np.concatenate(tgt) if tgt else np.zeros(0, np.int64),
                         minlength=tgt_size)
    top = torch.from_numpy(np.argsort(-counts, kind="stable")[:frequent].copy())
    top = top[torch.from_numpy(counts)[top] > 0]
    order = sample_pairs(np.array([(len(s) + 1) * len(t) for s, t in zip(src, tgt, strict=True)],
                                  dtype=np.int64), max_links, seed)
    if len(order) < len(src):
        log.info("shortlist: %s of %s pairs sampled (%s links at most)", f"{len(order):,}",
                 f"{len(src):,}", f"{max_links:,}")
    pairs, prob = ibm1([src[i] for i in order], [tgt[i] for i in order], src_size, tgt_size)
    source, target = pairs // tgt_size, pairs % tgt_size
    # rank within each source piece by probability: sort by (source, -prob)
    ranked = np.lexsort((-prob.numpy(), source.numpy()))
    source, target = source[ranked], target[ranked]
    starts = torch.searchsorted(source, source, side="left")
    rank = torch.arange(source.numel()) - starts
    keep = (rank < per_source) & (source != NULL)
    candidates = torch.full((src_size, per_source), PAD_ID, dtype=torch.long)
    candidates[source[keep], rank[keep]] = target[keep]
    log.info("shortlist: %d target pieces per source piece, %d frequent, from %s pairs (%.1f s)",
             per_source, len(top), f"{len(order):,}", time.perf_counter() - started)
    return Shortlist(candidates, top, joint, tgt_size)
