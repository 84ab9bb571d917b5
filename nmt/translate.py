"""Translation API: ``Translator.load(model_dir).translate(lines)``, and the line contract.

Lines are encoded with the model's SentencePiece model, sorted by length into token-budget
batches, decoded greedily (beam size 1) or with beam search, and put back in input order.
Exactly one result per input line: an empty or whitespace-only line gives an empty
translation without running the model, and a line longer than the model's limit
(``data.max_len`` pieces) is translated from its truncated form and reported in
:attr:`Translator.truncated`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nmt.batching import TokenBatchSampler, collate
from nmt.checkpoint import load_model_dir
from nmt.config import Config
from nmt.device import autocast, resolve_device, resolve_precision
from nmt.model import Seq2Seq
from nmt.search import beam_search, greedy
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Truncation:
    """A line shortened to the model's limit: 0-based index, pieces before and after."""

    index: int
    pieces: int
    kept: int


class Translator:
    """A loaded model directory, ready to translate lists of lines."""

    def __init__(self, model: Seq2Seq, config: Config, src_tok: Tokenizer, tgt_tok: Tokenizer,
                 device: torch.device, dtype: torch.dtype | None) -> None:
        self.model, self.config = model.eval(), config
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.device, self.dtype = device, dtype
        self.truncated: list[Truncation] = []

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto",
             precision: str = "fp32") -> Translator:
        """Load a model directory (weights, config, tokenizers) for translation."""
        dev = resolve_device(device)
        model, config, src_tok, tgt_tok = load_model_dir(model_dir, dev)
        return cls(model, config, src_tok, tgt_tok, dev, resolve_precision(precision, dev))

    # ----------------------------------------------------------------- encoding the input

    def _encode(self, lines: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """Indices of the non-empty lines and their source ids (pieces + EOS), truncated."""
        limit = self.config.data.max_len
        self.truncated = []
        indices, ids = [], []
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            pieces = self.src_tok.encode(line.strip(), add_eos=False)
            if len(pieces) > limit:
                self.truncated.append(Truncation(index, len(pieces), limit))
                pieces = pieces[:limit]
            indices.append(index)
            ids.append([*pieces, self.src_tok.eos_id])
        return indices, ids

    def _batches(self, ids: list[list[int]], batch_tokens: int) -> list[np.ndarray]:
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        budget = max(batch_tokens, int(lengths.max(initial=1)))
        return TokenBatchSampler(lengths, None, budget, shuffle=False).batches()

    # ----------------------------------------------------------------- translating

    @torch.no_grad()
    def translate_nbest(self, lines: Sequence[str], beam_size: int | None = None,
                        n_best: int = 1, length_penalty: float | None = None,
                        max_len_a: float | None = None, max_len_b: int | None = None,
                        batch_tokens: int | None = None,
                        progress: Callable[[int], None] | None = None,
                        ) -> list[list[tuple[str, float]]]:
        """Up to ``n_best`` (translation, score) pairs per line, best first, in input order.

        Settings left as None come from the model's ``decoding`` config. The score is the
        length-normalised log-probability (beam search), or 0.0 with greedy decoding; an
        empty line gets ``n_best`` empty translations.
        """
        dec = self.config.decoding
        beam = beam_size or dec.beam_size
        alpha = dec.length_penalty if length_penalty is None else length_penalty
        a = dec.max_len_a if max_len_a is None else max_len_a
        b = dec.max_len_b if max_len_b is None else max_len_b
        if n_best > beam:
            from nmt.errors import ConfigError

            raise ConfigError(f"n-best ({n_best}) cannot exceed the beam size ({beam})")
        results: list[list[tuple[str, float]]] = [[("", 0.0)] * n_best for _ in lines]
        indices, ids = self._encode(lines)
        for batch_rows in self._batches(ids, batch_tokens or dec.batch_tokens):
            batch = collate([ids[i] for i in batch_rows], None, batch_rows).to(self.device)
            with autocast(self.device, self.dtype):
                if beam == 1 and n_best == 1:
                    outputs = [[(seq, 0.0)] for seq in
                               greedy(self.model, batch.src, batch.src_lengths, a, b)]
                else:
                    outputs = [[(h.tokens, h.score) for h in hyps] for hyps in beam_search(
                        self.model, batch.src, batch.src_lengths, beam_size=beam, alpha=alpha,
                        max_len_a=a, max_len_b=b, min_len=dec.min_len, n_best=n_best,
                        no_repeat_ngram=dec.no_repeat_ngram)]
            for row, hyps in zip(batch_rows.tolist(), outputs, strict=True):
                results[indices[row]] = [(self.tgt_tok.decode(t), s) for t, s in hyps]
            if progress is not None:
                progress(len(batch_rows))
        return results

    def translate(self, lines: Sequence[str], **options: object) -> list[str]:
        """The best translation of each line, in input order (options as translate_nbest)."""
        return [hyps[0][0] for hyps in self.translate_nbest(lines, **options)]

    @torch.no_grad()
    def encode_sentences(self, lines: Sequence[str], batch_tokens: int | None = None) -> np.ndarray:
        """(N, 2H) float32 sentence vectors: the top encoder layer's final forward and
        backward hidden states, rows in input order (an empty line encodes as EOS alone)."""
        limit = self.config.data.max_len
        ids = [[*self.src_tok.encode(line.strip(), add_eos=False)[:limit], self.src_tok.eos_id]
               for line in lines]
        out = np.zeros((len(lines), self.model.encoder.output_size), dtype=np.float32)
        if not ids:
            return out
        for rows in self._batches(ids, batch_tokens or self.config.decoding.batch_tokens):
            batch = collate([ids[i] for i in rows], None, rows).to(self.device)
            with autocast(self.device, self.dtype):
                vectors = self.model.encode_sentences(batch.src, batch.src_lengths)
            out[rows] = vectors.float().cpu().numpy()
        return out
