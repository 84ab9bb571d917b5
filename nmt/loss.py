"""Losses: the training loss of a batch, and the sequence loss validation reports.

:class:`TrainingLoss` is the summed, label-smoothed training loss of a batch as one module
call; :func:`sequence_loss` is the plain summed cross-entropy of logits (validation). With copy
attention the training loss is :func:`copy_cross_entropy`, of the generate / copy mixture.

The training loss fuses the vocabulary projection with label-smoothed cross-entropy.

Materialising logits for every target token of a batch (4,000 tokens x 8,000 pieces) costs
more than the projection itself on a CPU: a 128 MB float32 tensor, its log-softmax, and their
gradients. :func:`linear_cross_entropy` instead walks the tokens in chunks; for each chunk it
computes the logits, the loss and, right away, the gradients of the hidden states, weight and
bias, so no full-size logits tensor ever exists. Backward only scales the stored gradients.

Matrix products run in the autocast dtype when autocast is on (bf16 on capable CPUs), softmax
and the loss in float32. The loss equals ``F.cross_entropy(..., label_smoothing=eps,
reduction="sum")`` (a test checks values and gradients).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nmt.tokenizer import PAD_ID

CHUNK = 1024


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed CE of ``hidden @ weight.T + bias`` against ``target``."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                target: torch.Tensor, smoothing: float, compute_dtype: torch.dtype,
                chunk: int) -> torch.Tensor:
        device_type = hidden.device.type
        with torch.autocast(device_type, enabled=False):
            h = hidden.to(compute_dtype)  # (N, D)
            w = weight.to(compute_dtype)  # (V, D)
            vocab = w.size(0)
            grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_b = torch.zeros(vocab, dtype=torch.float32, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, h.size(0), chunk):
                h_c, t_c = h[start:start + chunk], target[start:start + chunk]
                logits = torch.mm(h_c, w.t()).float()  # (n, V)
                if bias is not None:
                    logits += bias.float()
                lse = torch.logsumexp(logits, dim=-1)  # (n,)
                gold = logits.gather(1, t_c[:, None]).squeeze(1)
                # -log p(gold) and the mean of -log p over the vocabulary (the smoothing term)
                smooth = lse - logits.mean(-1)
                total += ((1 - smoothing) * (lse - gold) + smoothing * smooth).sum()
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place: (n, V)
                grad.scatter_add_(1, t_c[:, None], grad.new_full((t_c.size(0), 1),
                                                                 -(1 - smoothing)))
                grad -= smoothing / vocab
                grad_b += grad.sum(0)
                grad = grad.to(compute_dtype)
                grad_h[start:start + chunk] = torch.mm(grad, w).float()
                grad_w += torch.mm(grad.t(), h_c).float()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN205 - autograd signature
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        return ((grad_h * grad_out).to(h_dtype), (grad_w * grad_out).to(w_dtype),
                None if b_dtype is None else (grad_b * grad_out).to(b_dtype),
                None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, layer: torch.nn.Linear, target: torch.Tensor,
                         label_smoothing: float = 0.0, chunk: int = CHUNK) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``layer(hidden)`` against ``target``.

    Args:
        hidden: (N, D) inputs of the projection, one row per real target token (no padding).
        layer: the vocabulary projection, weight (V, D) and bias (V,).
        target: (N,) gold ids.
    Returns:
        A scalar: the loss summed over the N tokens (divide by N for the per-token loss).
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = hidden.dtype
    return _LinearCrossEntropy.apply(hidden, layer.weight, layer.bias, target,
                                     float(label_smoothing), compute_dtype, chunk)


def copy_cross_entropy(hidden: torch.Tensor, weights: torch.Tensor, src: torch.Tensor,
                       layer: torch.nn.Linear, gate: torch.nn.Linear, target: torch.Tensor,
                       label_smoothing: float = 0.0, chunk: int = CHUNK) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of copy attention's mixture against ``target``.

    Args:
        hidden: (N, D) attentional states of the real target tokens.
        weights: (N, S) their attention weights; src: (N, S) their sentences' source ids.
        layer: the vocabulary projection; gate: the copy gate (D -> 1).
        target: (N,) gold ids.
    The mixture is :func:`nmt.decoder.copy_log_probs`; the smoothing term is the mean of
    ``-log p`` over the vocabulary, as in :func:`linear_cross_entropy`. Tokens go in chunks,
    each recomputed in backward (activation checkpointing), so no (N, V) tensor is kept.
    """
    from torch.utils.checkpoint import checkpoint

    from nmt.decoder import copy_log_probs

    def chunk_loss(h: torch.Tensor, w: torch.Tensor, s: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
        log_p = copy_log_probs(layer(h), gate(h), w, s)  # (n, V) float32
        nll = -log_p.gather(1, t[:, None]).squeeze(1)
        return ((1 - label_smoothing) * nll - label_smoothing * log_p.mean(-1)).sum()

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.size(0), chunk):
        part = slice(start, start + chunk)
        total = total + checkpoint(chunk_loss, hidden[part], weights[part], src[part],
                                   target[part], use_reentrant=False)
    return total


def sequence_loss(logits: torch.Tensor, gold: torch.Tensor,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of logits (B, T, V) against gold ids (B, T); padding ignored."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), gold.reshape(-1),
                           ignore_index=PAD_ID, label_smoothing=label_smoothing,
                           reduction="sum")


class TrainingLoss(torch.nn.Module):
    """The summed, label-smoothed training loss of a batch as one module call.

    Wrapping the model this way lets :class:`~torch.nn.parallel.DistributedDataParallel` see
    the whole computation in ``forward`` (its gradient hooks need that). The vocabulary
    projection is fused with the loss over the real (non-padding) target tokens only
    (:func:`linear_cross_entropy`).
    """

    def __init__(self, model: torch.nn.Module, label_smoothing: float,
                 teacher_forcing_ratio: float) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing, self.teacher_forcing_ratio = label_smoothing, teacher_forcing_ratio

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor,
                tgt: torch.Tensor) -> torch.Tensor:
        """Summed loss of source (B, S) and BOS + target + EOS (B, T + 1)."""
        tgt_in, gold = tgt[:, :-1], tgt[:, 1:]  # BOS + gold[:-1] -> gold
        real = gold != PAD_ID  # (B, T)
        features, weights = self.model.features(src, src_lengths, tgt_in,
                                                self.teacher_forcing_ratio)  # (B, T, Hd)
        if self.model.copy_gate is None:
            return linear_cross_entropy(features[real], self.model.output_layer, gold[real],
                                        self.label_smoothing)
        rows = src[:, None, :].expand(-1, gold.size(1), -1)  # (B, T, S): each token's source
        return copy_cross_entropy(features[real], weights[real], rows[real],
                                  self.model.output_layer, self.model.copy_gate, gold[real],
                                  self.label_smoothing)
