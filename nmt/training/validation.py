"""Validation during training: loss, perplexity, and greedy BLEU / chrF on the validation set.

The hypotheses come from the one decoding path (:func:`nmt.models.search.decode_all`, greedy,
with the run's length limits), and are scored with sacreBLEU as ``nmt evaluate`` scores them.
"""

from __future__ import annotations

import math

import torch

from nmt.config import Config
from nmt.data.batching import Corpus, TokenBatchSampler
from nmt.data.tokenizer import Tokenizer
from nmt.device import autocast
from nmt.models.search import decode_all
from nmt.scoring import bleu_tokenizer, score
from nmt.training.loss import sequence_loss


@torch.no_grad()
def validate(model: torch.nn.Module, corpus: Corpus, refs: list[str], tgt_tok: Tokenizer,
             config: Config, device: torch.device, dtype: torch.dtype | None,
             batch_tokens: int) -> dict[str, float]:
    """``valid_loss`` (per target token), ``valid_ppl``, ``bleu`` and ``chrf`` of ``model``.

    The loss runs over batches of ``batch_tokens`` (at least the longest example), the greedy
    search over ``decoding.batch_tokens``.
    """
    model.eval()
    total, tokens = 0.0, 0
    budget = max(batch_tokens, int(corpus.tgt_lengths.max(initial=1)),
                 int(corpus.src_lengths.max(initial=1)))
    for indices in TokenBatchSampler(corpus.src_lengths, corpus.tgt_lengths, budget,
                                     shuffle=False).batches():
        batch = corpus.batch(indices).to(device)
        with autocast(device, dtype):
            logits = model(batch.src, batch.src_lengths, batch.tgt[:, :-1])  # (B, T, V)
        total += sequence_loss(logits, batch.tgt[:, 1:]).item()
        tokens += batch.ntokens
    greedy = config.decoding.updated(beam_size=1, n_best=1)
    hyps = [tgt_tok.decode(h[0].tokens) for h in decode_all(
        model, corpus.sources(), greedy, device, dtype)]
    scores = score(hyps, [refs], tokenize=bleu_tokenizer(config.data.tgt_lang))
    loss = total / max(tokens, 1)
    return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50)), "bleu": scores.bleu,
            "chrf": scores.chrf}
