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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nmt.data.tokenizer import PAD_ID

CHUNK = 1024


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
            compute_dtype: torch.dtype) -> torch.Tensor:
    """Float32 logits (n, V) of ``h @ w.T + b``; in fp32 the bias is added inside the GEMM."""
    if b is not None and compute_dtype == torch.float32:
        return torch.addmm(b, h, w.t())
    logits = torch.mm(h, w.t()).float()
    return logits + b if b is not None else logits


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for ``hidden``'s device, else its own dtype."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


@dataclass
class OutputRows:
    """Rows of the vocabulary projection (what the fused losses read of a layer): weight
    (M, D) and bias (M,) gathered from the full layer, gradients flowing back to it."""

    weight: torch.Tensor
    bias: torch.Tensor | None


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed CE of ``hidden @ weight.T + bias`` against ``target``."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                target: torch.Tensor, smoothing: float, compute_dtype: torch.dtype,
                chunk: int) -> torch.Tensor:
        # Per chunk of n tokens, with e = exp(logits - max) and s its row sums, softmax = e / s
        # and the gradient of the logits is  e / s - (1 - eps) onehot(gold) - eps / V.  The
        # (n, V) tensor is walked 5 times (max, subtract, exp, sum, and the bias gradient's
        # product); the 1 / s scaling and the constant -eps / V are applied to the (n, D) and
        # (V, D) sides instead, and the mean logit (the smoothing term) comes from h . mean(w).
        device_type = hidden.device.type
        with torch.autocast(device_type, enabled=False):
            h = hidden.to(compute_dtype)  # (N, D)
            w = weight.to(compute_dtype)  # (V, D)
            vocab = w.size(0)
            b = bias.float() if bias is not None else None
            w_sum = weight.float().sum(0)  # (D,): the mean logit is h . w_sum / V + mean(b)
            w_mean = w_sum / vocab
            b_mean = float(b.mean()) if b is not None else 0.0
            shift = smoothing / vocab
            grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            grad_b = torch.zeros(vocab, dtype=torch.float32, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, h.size(0), chunk):
                h_c, t_c = h[start:start + chunk], target[start:start + chunk]
                h32 = h_c.float()
                logits = _logits(h_c, w, b, compute_dtype)  # (n, V)
                gold = logits.gather(1, t_c[:, None]).squeeze(1)  # (n,)
                top = logits.amax(-1, keepdim=True)  # (n, 1)
                e = logits.sub_(top).exp_()  # (n, V), in place
                sums = e.sum(-1)  # (n,)
                lse = top.squeeze(1) + sums.log()
                mean = h32 @ w_mean + b_mean  # (n,) mean logit over the vocabulary
                # -log p(gold) and the mean of -log p over the vocabulary (the smoothing term)
                total += ((1 - smoothing) * (lse - gold) + smoothing * (lse - mean)).sum()
                inv = sums.reciprocal()  # (n,)
                e.scatter_add_(1, t_c[:, None], (-(1 - smoothing) * sums)[:, None])
                e_c = e.to(compute_dtype)
                grad_h[start:start + chunk] = torch.mm(e_c, w).float().mul_(inv[:, None])
                grad_w += torch.mm(e_c.t(), (h32 * inv[:, None]).to(compute_dtype)).float()
                grad_b += inv @ e
                if smoothing:  # the -eps / V of every logit's gradient, on the small sides
                    grad_h[start:start + chunk] -= shift * w_sum
                    grad_w -= shift * h32.sum(0)
                    grad_b -= shift * h_c.size(0)
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


def linear_cross_entropy(hidden: torch.Tensor, layer: torch.nn.Linear | OutputRows,
                         target: torch.Tensor,
                         label_smoothing: float = 0.0, chunk: int = CHUNK) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of ``layer(hidden)`` against ``target``.

    Args:
        hidden: (N, D) inputs of the projection, one row per real target token (no padding).
        layer: the vocabulary projection, weight (V, D) and bias (V,).
        target: (N,) gold ids.
    Returns:
        A scalar: the loss summed over the N tokens (divide by N for the per-token loss).
    """
    compute_dtype = _compute_dtype(hidden)
    return _LinearCrossEntropy.apply(hidden, layer.weight, layer.bias, target,
                                     float(label_smoothing), compute_dtype, chunk)


class _CopyCrossEntropy(torch.autograd.Function):
    """Summed label-smoothed CE of copy attention's mixture, gradients computed in forward.

    Per token: p = (1 - c) softmax(z) + c q, with z = hidden @ weight.T + bias, c =
    sigmoid(g), g = hidden @ gate_w.T + gate_b, and q the attention weights summed per source
    id. Only the K = S + 1 "special" words of a row (its source ids and its target) have
    p != (1 - c) softmax(z); every other word's terms follow from the softmax in closed form.
    So the (n, V) tensor is walked as in :class:`_LinearCrossEntropy` (max, subtract, exp, sum,
    scale, the bias gradient), and the mixture's logs, ratios and corrections live on (n, K).
    With rho = (1 - c) p_gen / p and sigma = c q / p (both in [0, 1], from log space) and
    coef = eps / V + (1 - eps) [w = gold], the gradients are
    dz_j = -coef_j rho_j - p_gen_j Dp,  Dp = -sum_w coef_w rho_w  (rho = 1 off the specials),
    dg = (1 - c) sum_w -coef_w sigma_w - c Dp,  da_s = -coef_w c / p_w  at w = src_s.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, attn: torch.Tensor, src: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor | None, gate_w: torch.Tensor,
                gate_b: torch.Tensor | None, target: torch.Tensor, smoothing: float,
                compute_dtype: torch.dtype, chunk: int) -> torch.Tensor:
        device_type = hidden.device.type
        with torch.autocast(device_type, enabled=False):
            h = hidden.to(compute_dtype)  # (N, D)
            w = weight.to(compute_dtype)  # (V, D)
            vocab, eps = w.size(0), smoothing
            b = bias.float() if bias is not None else None
            gw = gate_w.float().view(-1)  # (D,)
            gb = float(gate_b.detach()) if gate_b is not None else 0.0
            w_sum = weight.float().sum(0)  # (D,): sum of the logits is h . w_sum + sum(b)
            b_sum = float(b.sum()) if b is not None else 0.0
            shift = eps / vocab
            grads = {name: torch.zeros(t.shape, dtype=torch.float32, device=t.device)
                     for name, t in (("h", hidden), ("a", attn), ("w", weight),
                                     ("gw", gate_w))}
            grad_b = torch.zeros(vocab, dtype=torch.float32, device=weight.device)
            grad_gb = torch.zeros((), dtype=torch.float32, device=weight.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, h.size(0), chunk):
                part = slice(start, start + chunk)
                h_c, t_c, n = h[part], target[part], h[part].size(0)
                h32 = h_c.float()
                ids = torch.cat([src[part], t_c[:, None]], 1)  # (n, K): source ids, then gold
                att = torch.cat([attn[part].float(), attn.new_zeros(n, 1).float()], 1)
                z = _logits(h_c, w, b, compute_dtype)  # (n, V)
                z_k = z.gather(1, ids)  # (n, K)
                top = z.amax(-1, keepdim=True)
                e = z.sub_(top).exp_()  # (n, V), in place
                sums = e.sum(-1)
                lse = top.squeeze(1) + sums.log()  # (n,)
                g = h32 @ gw + gb  # (n,)
                lc, l1c, c = F.logsigmoid(g), F.logsigmoid(-g), torch.sigmoid(g)
                same = ids[:, :, None] == ids[:, None, :]  # (n, K, K)
                q_k = (same * att[:, None, :]).sum(-1)  # attention on each special's word
                earlier = torch.ones(ids.size(1), ids.size(1), dtype=torch.bool,
                                     device=ids.device).tril(-1)
                first = (~(same & earlier).any(-1)).float()  # each word counted once
                gen_k = l1c[:, None] + z_k - lse[:, None]  # log((1 - c) p_gen)
                copy_k = lc[:, None] + q_k.log()  # log(c q); -inf where q = 0
                logp_k = torch.logaddexp(gen_k, copy_k)
                sum_logp = (vocab * (l1c - lse) + (h32 @ w_sum + b_sum)
                            + (first * (logp_k - gen_k)).sum(-1))
                total += ((1 - eps) * -logp_k[:, -1] - shift * sum_logp).sum()
                rho, sigma = (gen_k - logp_k).exp(), (copy_k - logp_k).exp()
                coef = shift + (1 - eps) * (ids == t_c[:, None]).float()
                specials = first.sum(-1)
                dp = -(shift * (vocab - specials) + (first * coef * rho).sum(-1))  # (n,)
                dg = (1 - c) * -(first * coef * sigma).sum(-1) - c * dp  # (n,)
                grads["a"][part] = (-coef * (lc[:, None] - logp_k).exp())[:, :-1]
                # dz = -p_gen Dp - eps / V, corrected at the specials (first occurrences)
                e.mul_((-dp / sums)[:, None])
                e.scatter_add_(1, ids, first * (shift - coef * rho))
                e_c = e.to(compute_dtype)
                grads["h"][part] = (torch.mm(e_c, w).float() - shift * w_sum
                                    + dg[:, None] * gw)
                grads["w"] += torch.mm(e_c.t(), h_c).float() - shift * h32.sum(0)
                grad_b += e.sum(0) - shift * n
                grads["gw"] += (dg @ h32).view(grads["gw"].shape)
                grad_gb += dg.sum()
        ctx.save_for_backward(grads["h"], grads["a"], grads["w"], grad_b, grads["gw"],
                              grad_gb)
        ctx.dtypes = (hidden.dtype, attn.dtype, weight.dtype,
                      None if bias is None else bias.dtype, gate_w.dtype,
                      None if gate_b is None else gate_b.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN205 - autograd signature
        grad_h, grad_a, grad_w, grad_b, grad_gw, grad_gb = ctx.saved_tensors
        h_t, a_t, w_t, b_t, gw_t, gb_t = ctx.dtypes
        return ((grad_h * grad_out).to(h_t), (grad_a * grad_out).to(a_t), None,
                (grad_w * grad_out).to(w_t),
                None if b_t is None else (grad_b * grad_out).to(b_t),
                (grad_gw * grad_out).to(gw_t),
                None if gb_t is None else (grad_gb * grad_out).reshape(1).to(gb_t),
                None, None, None, None)


def copy_cross_entropy(hidden: torch.Tensor, weights: torch.Tensor, src: torch.Tensor,
                       layer: torch.nn.Linear | OutputRows, gate: torch.nn.Linear,
                       target: torch.Tensor,
                       label_smoothing: float = 0.0, chunk: int = CHUNK) -> torch.Tensor:
    """Summed label-smoothed cross-entropy of copy attention's mixture against ``target``.

    Args:
        hidden: (N, D) attentional states of the real target tokens.
        weights: (N, S) their attention weights; src: (N, S) their sentences' source ids.
        layer: the vocabulary projection; gate: the copy gate (D -> 1).
        target: (N,) gold ids.
    The mixture is :func:`nmt.models.decoder.copy_log_probs`; the smoothing term is the mean of
    ``-log p`` over the vocabulary, as in :func:`linear_cross_entropy`. Fused like it: tokens
    go in chunks, gradients are computed in forward, no (N, V) tensor is kept.
    """
    compute_dtype = _compute_dtype(hidden)
    return _CopyCrossEntropy.apply(hidden, weights, src, layer.weight, layer.bias, gate.weight,
                                   gate.bias, target, float(label_smoothing), compute_dtype,
                                   chunk)


def sequence_loss(logits: torch.Tensor, gold: torch.Tensor,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of logits (B, T, V) against gold ids (B, T); padding ignored."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), gold.reshape(-1),
                           ignore_index=PAD_ID, label_smoothing=label_smoothing,
                           reduction="sum")


#: ``training.sampled_softmax: null``: the pieces drawn besides a batch's own when a run trains
#: on a CPU, where recipe runs measured it (fp32, 30 minutes: 1.44x tokens/s, +2.5 test BLEU;
#: bf16, 15 minutes: +4.9 test BLEU).
SAMPLED_CPU = 200


def sampled_size(setting: int | None, device: torch.device) -> int:
    """The sampled softmax's draw of a run (0: the full softmax): ``training.sampled_softmax``
    when set, else :data:`SAMPLED_CPU` on a CPU and 0 elsewhere (not measured on GPUs)."""
    if setting is not None:
        return setting
    return SAMPLED_CPU if device.type == "cpu" else 0


def candidate_ids(gold: torch.Tensor, vocab: int, negatives: int,
                  src: torch.Tensor | None = None) -> torch.Tensor:
    """(M,) sorted target ids a sampled softmax normalises over: the special ids (PAD, UNK, BOS,
    EOS), every id in ``gold`` (and ``src``, with copy attention), and ``negatives`` more drawn
    uniformly without replacement from the other ids (torch's global generator, so a resumed
    run draws the same). M <= vocab."""
    device = gold.device
    parts = [torch.arange(4, device=device), gold.reshape(-1)]
    if src is not None:
        parts.append(src.reshape(-1))
    seen = torch.unique(torch.cat(parts))  # sorted
    rest = vocab - seen.numel()
    if negatives <= 0 or rest <= 0:
        return seen
    free = torch.ones(vocab, dtype=torch.bool, device=device)
    free[seen] = False
    others = free.nonzero().squeeze(1)  # (rest,)
    pick = torch.randperm(rest, device="cpu")[:negatives].to(device)
    return torch.cat([seen, others[pick]]).sort().values


class TrainingLoss(torch.nn.Module):
    """The summed, label-smoothed training loss of a batch as one module call.

    Wrapping the model this way lets :class:`~torch.nn.parallel.DistributedDataParallel` see
    the whole computation in ``forward`` (its gradient hooks need that). The vocabulary
    projection is fused with the loss over the real (non-padding) target tokens only
    (:func:`linear_cross_entropy`).

    ``sampled`` > 0 (``training.sampled_softmax``): in training mode the softmax runs over a
    subset of the target vocabulary only (Jean et al. 2015): the batch's own target pieces,
    with copy attention its source pieces, and ``sampled`` pieces drawn uniformly from the rest
    (:func:`candidate_ids`); the projection's other rows get no gradient from that batch. Label
    smoothing spreads over the subset. In eval mode, and with 0, the full softmax.
    """

    def __init__(self, model: torch.nn.Module, label_smoothing: float,
                 teacher_forcing_ratio: float, sampled: int = 0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing, self.teacher_forcing_ratio = label_smoothing, teacher_forcing_ratio
        self.sampled = sampled

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor,
                tgt: torch.Tensor) -> torch.Tensor:
        """Summed loss of source (B, S) and BOS + target + EOS (B, T + 1)."""
        tgt_in, gold = tgt[:, :-1], tgt[:, 1:]  # BOS + gold[:-1] -> gold
        real = gold != PAD_ID  # (B, T)
        features, weights = self.model.features(src, src_lengths, tgt_in,
                                                self.teacher_forcing_ratio)  # (B, T, Hd)
        layer, copy = self.model.output_layer, self.model.copy_gate is not None
        target = gold[real]  # (N,)
        rows = src[:, None, :].expand(-1, gold.size(1), -1)[real] if copy else None  # (N, S)
        if self.sampled > 0 and self.model.training:
            ids = candidate_ids(target, layer.weight.size(0), self.sampled,
                                src if copy else None)  # (M,)
            layer = OutputRows(layer.weight.index_select(0, ids),
                               None if layer.bias is None else layer.bias.index_select(0, ids))
            target = torch.searchsorted(ids, target)
            rows = torch.searchsorted(ids, rows) if copy else None
        if not copy:
            return linear_cross_entropy(features[real], layer, target, self.label_smoothing)
        return copy_cross_entropy(features[real], weights[real], rows, layer,
                                  self.model.copy_gate, target, self.label_smoothing)
