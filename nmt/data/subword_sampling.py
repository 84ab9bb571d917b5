"""Subword regularisation: a new SentencePiece segmentation of the training pairs every epoch.

With ``tokenizer.sample_alpha`` > 0 each training epoch sees the pairs cut into pieces anew
(Kudo 2018, "Subword Regularization"): unigram models sample among the ``sample_nbest`` best
segmentations (-1: all) with smoothing ``sample_alpha``; BPE models drop merges with probability
``sample_alpha`` (BPE-dropout, Provilkov et al. 2020). Validation and test keep the best
segmentation, as translation does.

Reproducibility. SentencePiece draws from a thread-local ``std::mt19937`` that a thread seeds,
from a process-wide seed, the first time it samples. So every epoch's segmentation is made in
a thread of its own that first sets the seed derived from ``(training seed, epoch, side)``: an
epoch's pieces depend on nothing that ran before, a resumed run makes the same ones, and
several processes (torchrun) make the same ones without talking to each other. The seed is
process-wide, so setting it and the draws it seeds hold a process-wide lock: two segmentations
made at once (two trainers, or two corpora in one test) cannot seed each other's threads.

Speed. The next epoch is segmented in the background while the current one trains; the
training loop only waits when an epoch ends before its successor is ready. The work goes in
chunks of ``CHUNK`` lines (each with its own seed), so :meth:`SampledEpochs.close` stops it
between two chunks: a process must not exit while a SentencePiece thread is still running
(the C++ runtime aborts it, exit code 134, after a run that went well).

Limits. A sampled sequence longer than ``data.max_len`` pieces takes the best segmentation of
that sentence instead, so the cleaning limits (and the batch budget) still hold.
"""

from __future__ import annotations

import threading

import numpy as np
import sentencepiece as spm

from nmt.data.batching import Corpus, TokenBatchSampler
from nmt.data.id_cache import EncodedSplit
from nmt.data.tokenizer import Tokenizer
from nmt.errors import ConfigError

# held from setting SentencePiece's process-wide seed until the draws it seeds are done
_SEED_LOCK = threading.Lock()


def check_sampling(alpha: float, nbest: int) -> None:
    """Refuse ``tokenizer.sample_nbest`` values that would not sample (0 and 1)."""
    if alpha > 0 and nbest in (0, 1):
        raise ConfigError(f"tokenizer.sample_nbest={nbest} leaves one segmentation to choose "
                          "from, so nothing is sampled: use -1 (all segmentations) or 2 or "
                          "more (e.g. 64)")


# lines segmented per SentencePiece call: the background work stops between two of them
CHUNK = 20_000


def epoch_seed(seed: int, epoch: int, side: int, chunk: int = 0) -> int:
    """The SentencePiece seed of one epoch, side (0: source, 1: target) and chunk, a uint32."""
    return int(np.random.SeedSequence([seed, epoch, side, chunk]).generate_state(1)[0])


class Stopped(Exception):
    """The background segmentation was stopped by :meth:`SampledEpochs.close`."""


class SampledEpochs:
    """Training corpora with a sampled segmentation per epoch.

    Args:
        split: the encoded training split (its texts and best segmentation).
        src_tok, tgt_tok: the tokenizers that sample.
        alpha, nbest: ``tokenizer.sample_alpha`` and ``tokenizer.sample_nbest``.
        seed: ``training.seed``.
        max_len: ``data.max_len``: longer samples take the best segmentation, as do those
            longer than ``max_tokens`` (the batch budget) with their specials.
        best: the split's :class:`~nmt.data.batching.Corpus` if the caller has it (not gathered
            twice).
    """

    def __init__(self, split: EncodedSplit, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 alpha: float, nbest: int, seed: int, max_len: int, max_tokens: int,
                 best: Corpus | None = None) -> None:
        check_sampling(alpha, nbest)
        self.best = best if best is not None else Corpus(split)  # the trainer's, when given
        self.max_tokens = max_tokens
        self.src_texts, self.tgt_texts = list(split["src"]), list(split["tgt"])
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.alpha, self.nbest, self.seed, self.max_len = alpha, nbest, seed, max_len
        self._ready: dict[int, Corpus] = {}
        self._thread: tuple[int, threading.Thread, dict] | None = None
        self._stop = threading.Event()

    def corpus(self, epoch: int) -> Corpus:
        """The corpus of ``epoch`` (made now if it is not ready); starts segmenting the next."""
        if epoch not in self._ready:
            self._wait(epoch)
        corpus = self._ready[epoch]
        self._ready = {epoch: corpus}  # older epochs are done with
        if self._thread is None or self._thread[0] != epoch + 1:
            self._start(epoch + 1)
        return corpus

    def close(self) -> None:
        """Stop the background segmentation (after its current chunk) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread[1].join()
            self._thread = None
        self._stop.clear()  # corpus() may still be called: it segments again

    def _start(self, epoch: int) -> None:
        self._join()
        out: dict = {}
        # not a daemon: the interpreter waits for it at exit rather than kill it mid-call
        thread = threading.Thread(target=self._segment, args=(epoch, out),
                                  name=f"nmt-subword-sampling-{epoch}")
        thread.start()
        self._thread = (epoch, thread, out)

    def _wait(self, epoch: int) -> None:
        if self._thread is None or self._thread[0] != epoch:
            self._start(epoch)
        self._join()

    def _join(self) -> None:
        """Wait for the running segmentation; keep its corpus, or raise what it raised."""
        if self._thread is None:
            return
        epoch, thread, out = self._thread
        thread.join()
        self._thread = None
        if "error" in out:
            raise out["error"]
        self._ready[epoch] = out["corpus"]

    def _segment(self, epoch: int, out: dict) -> None:
        """Thread body: sample both sides of every pair, a chunk at a time (each SentencePiece
        call draws in a fresh C++ thread, seeded from the process-wide seed set just before)."""
        try:
            sides: list[list[list[int]]] = [[], []]
            for side, (tok, texts, bos) in enumerate(((self.src_tok, self.src_texts, False),
                                                      (self.tgt_tok, self.tgt_texts, True))):
                for chunk, start in enumerate(range(0, len(texts), CHUNK)):
                    if self._stop.is_set():
                        raise Stopped
                    with _SEED_LOCK:
                        spm.set_random_generator_seed(epoch_seed(self.seed, epoch, side, chunk))
                        sides[side] += tok.sample_batch(texts[start:start + CHUNK], self.alpha,
                                                        self.nbest, add_bos=bos)
            out["corpus"] = self._build(*sides)
        except BaseException as exc:  # handed to the training thread by _join
            out["error"] = exc

    def _build(self, src: list[list[int]], tgt: list[list[int]]) -> Corpus:
        """A corpus of the samples; samples over ``max_len`` pieces take the best ids."""
        best = self.best
        for i in range(len(src)):
            if (len(src[i]) - 1 > self.max_len or len(tgt[i]) - 2 > self.max_len
                    or max(len(src[i]), len(tgt[i])) > self.max_tokens):
                src[i] = best.src_values[best.src_offsets[i]:best.src_offsets[i + 1]]
                tgt[i] = best.tgt_values[best.tgt_offsets[i]:best.tgt_offsets[i + 1]]
        return Corpus.from_ids(src, tgt)


class SampledBatches:
    """Each epoch's batches over its sampled corpus: :class:`~nmt.data.batching.TokenBatchSampler`'s
    batches (same budget and seed) of :meth:`SampledEpochs.corpus`. ``corpus`` is the corpus
    whose indices the last :meth:`batches` call returned."""

    def __init__(self, epochs: SampledEpochs, max_tokens: int, seed: int) -> None:
        self.epochs, self.max_tokens, self.seed = epochs, max_tokens, seed
        self.corpus = epochs.best

    def close(self) -> None:
        """Stop segmenting the next epoch in the background (see :meth:`SampledEpochs.close`)."""
        self.epochs.close()

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches (arrays of example indices into ``corpus``) of ``epoch``."""
        self.corpus = self.epochs.corpus(epoch)
        return TokenBatchSampler(self.corpus.src_lengths, self.corpus.tgt_lengths,
                                 self.max_tokens, seed=self.seed).batches(epoch)
