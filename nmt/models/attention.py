"""Attention over encoder outputs: none, dot and general (Luong), mlp (Bahdanau).

Every scorer takes decoder queries (B, T, Hd), encoder outputs (B, S, 2H) and a mask (B, S),
and returns the context (B, T, 2H) and the weights (B, T, S); padding gets weight zero. The
keys' projection depends only on the encoder outputs, so :meth:`Attention.project_keys` is
computed once per sentence and re-used at every decoding step.
"""

from __future__ import annotations

import torch
from torch import nn

from nmt.errors import ConfigError


class Attention(nn.Module):
    """Base: subclasses define ``project_keys`` and ``scores``."""

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """(B, S, 2H) -> what ``scores`` compares queries with (computed once per batch)."""
        return keys

    def scores(self, query: torch.Tensor, proj_keys: torch.Tensor) -> torch.Tensor:
        """(B, T, Hd) queries against projected keys -> (B, T, S) unnormalised scores."""
        raise NotImplementedError

    def forward(self, query: torch.Tensor, keys: torch.Tensor, proj_keys: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context (R, T, 2H) and weights (R, T, S) for queries (R, T, Hd).

        Keys, projected keys and mask may hold one row per group of ``R / N`` consecutive
        query rows (N, S, ...): the beams of a sentence share its encoder memory, which is then
        neither copied nor reordered during beam search.
        """
        rows, steps = query.shape[:2]
        memory_rows = keys.size(0)
        if rows != memory_rows:  # (R, T, Hd) -> (N, group * T, Hd): a sentence's beams together
            query = query.reshape(memory_rows, (rows // memory_rows) * steps, query.size(-1))
        scores = self.scores(query, proj_keys)  # (N, group * T, S)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(keys.dtype)
        context = torch.bmm(weights, keys)  # (N, group * T, 2H)
        return (context.reshape(rows, steps, context.size(-1)),
                weights.reshape(rows, steps, weights.size(-1)))


class DotAttention(Attention):
    """Luong dot: score = q . k (needs Hd == 2H)."""

    def scores(self, query: torch.Tensor, proj_keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, proj_keys.transpose(1, 2))


class GeneralAttention(Attention):
    """Luong general: score = q . W k."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)  # (B, S, Hd)

    def scores(self, query: torch.Tensor, proj_keys: torch.Tensor) -> torch.Tensor:
        return torch.bmm(query, proj_keys.transpose(1, 2))


class MLPAttention(Attention):
    """Bahdanau: score = v . tanh(W_q q + W_k k)."""

    def __init__(self, query_size: int, key_size: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or query_size
        self.key_proj = nn.Linear(key_size, hidden, bias=False)
        self.query_proj = nn.Linear(query_size, hidden, bias=True)
        self.v = nn.Linear(hidden, 1, bias=False)

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)  # (B, S, A)

    def scores(self, query: torch.Tensor, proj_keys: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(query)  # (B, T, A)
        hidden = torch.tanh(q[:, :, None, :] + proj_keys[:, None, :, :])  # (B, T, S, A)
        return self.v(hidden).squeeze(-1)  # (B, T, S)


def build_attention(kind: str, query_size: int, key_size: int) -> Attention | None:
    """The attention module named by ``kind`` (None for ``none``)."""
    if kind == "none":
        return None
    if kind == "dot":
        if query_size != key_size:
            raise ConfigError(f"model.attention 'dot' needs decoder_hidden_size ({query_size}) "
                              f"equal to 2 x hidden_size ({key_size}); use 'general' or 'mlp'")
        return DotAttention()
    if kind == "general":
        return GeneralAttention(query_size, key_size)
    if kind == "mlp":
        return MLPAttention(query_size, key_size)
    raise ValueError(f"unknown attention '{kind}'")
