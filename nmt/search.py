"""Search over the model's incremental API (``encode``, ``init_state``, ``step``, ``reorder``).

This module holds batched greedy decoding, used by validation during training; beam search
joins it here. Search never reaches into the model's modules.
"""

from __future__ import annotations

import torch

from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """(B,) maximum output lengths ``a * src_len + b`` (at least 1)."""
    return (src_lengths.float() * a + b).long().clamp(min=1)


@torch.no_grad()
def greedy(model: torch.nn.Module, src: torch.Tensor, src_lengths: torch.Tensor,
           max_len_a: float = 1.5, max_len_b: int = 10) -> list[list[int]]:
    """Batched greedy decoding.

    Args:
        src: (B, S) source ids; src_lengths: (B,) their lengths.
    Returns:
        B lists of output ids, without BOS and EOS. A sentence stops at EOS or at its own
        maximum length; the loop stops when every sentence has stopped.
    """
    state = model.init_state(model.encode(src, src_lengths))
    limits = max_lengths(src_lengths, max_len_a, max_len_b).to(src.device)
    batch = src.size(0)
    tokens = torch.full((batch,), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
    steps = []
    for t in range(int(limits.max())):
        log_probs, state = model.step(tokens, state)  # (B, V)
        tokens = log_probs.argmax(-1).masked_fill(finished, PAD_ID)
        steps.append(tokens)
        finished |= (tokens == EOS_ID) | (t + 1 >= limits)
        if bool(finished.all()):
            break
    results = []
    for row in torch.stack(steps, 1).tolist():  # (B, T): cut at EOS; PAD only follows the end
        if EOS_ID in row:
            row = row[: row.index(EOS_ID)]
        results.append([i for i in row if i != PAD_ID])
    return results
