"""Fused projection + label-smoothed cross-entropy equals the plain computation; the
validation sequence loss ignores padding."""

import pytest
import torch
import torch.nn.functional as F

from nmt.training.loss import linear_cross_entropy, sequence_loss


@pytest.mark.parametrize("smoothing, bias, chunk", [(0.0, True, 3), (0.1, True, 4),
                                                    (0.2, False, 1024)])
def test_matches_cross_entropy_values_and_gradients(smoothing, bias, chunk):
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 11, bias=bias)
    hidden = torch.randn(10, 6, requires_grad=True)
    target = torch.randint(0, 11, (10,))
    fused = linear_cross_entropy(hidden, layer, target, smoothing, chunk=chunk)
    (fused * 2).backward()
    grads = [hidden.grad.clone(), layer.weight.grad.clone()]
    grads += [layer.bias.grad.clone()] if bias else []
    hidden.grad = None
    layer.zero_grad()
    plain = F.cross_entropy(layer(hidden), target, label_smoothing=smoothing, reduction="sum")
    (plain * 2).backward()
    expected = [hidden.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_is_close_and_keeps_parameter_dtypes():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 50)
    hidden = torch.randn(40, 32, requires_grad=True)
    target = torch.randint(0, 50, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = linear_cross_entropy(hidden, layer, target, 0.1)
    fused.backward()
    assert fused.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32
    plain = F.cross_entropy(layer(hidden), target, label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(fused, plain, rtol=2e-2, atol=0)


def test_tied_weight_receives_both_gradients():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(9, 4)
    layer = torch.nn.Linear(4, 9)
    layer.weight = embed.weight
    tokens = torch.tensor([1, 2, 3])
    loss = linear_cross_entropy(embed(tokens), layer, torch.tensor([2, 3, 4]))
    loss.backward()
    fused_grad = embed.weight.grad.clone()
    embed.weight.grad = None
    F.cross_entropy(layer(embed(tokens)), torch.tensor([2, 3, 4]), reduction="sum").backward()
    torch.testing.assert_close(fused_grad, embed.weight.grad)


def test_label_smoothed_loss_ignores_padding():
    logits = torch.randn(2, 3, 7)
    gold = torch.tensor([[4, 5, 0], [6, 0, 0]])
    full = sequence_loss(logits, gold, 0.1)
    manual = sum(torch.nn.functional.cross_entropy(logits[b, t][None], gold[b, t][None],
                                                   label_smoothing=0.1)
                 for b, t in [(0, 0), (0, 1), (1, 0)])
    torch.testing.assert_close(full, manual)


@pytest.mark.parametrize("smoothing, chunk", [(0.0, 3), (0.1, 1024)])
def test_copy_loss_matches_cross_entropy_of_the_mixture(smoothing, chunk):
    """copy_cross_entropy (chunked, recomputed in backward) equals the label-smoothed
    cross-entropy of the mixture's log-probabilities, in value and gradients."""
    from nmt.models.decoder import copy_log_probs
    from nmt.training.loss import copy_cross_entropy

    torch.manual_seed(0)
    layer, gate = torch.nn.Linear(6, 11), torch.nn.Linear(6, 1)
    hidden = torch.randn(10, 6, requires_grad=True)
    scores = torch.randn(10, 4, requires_grad=True)  # attention weights come from a softmax
    weights = torch.softmax(scores, -1)
    src = torch.randint(0, 11, (10, 4))
    target = torch.randint(0, 11, (10,))
    params = [hidden, scores, layer.weight, layer.bias, gate.weight, gate.bias]

    def grads(loss):
        values = torch.autograd.grad(loss * 2, params, retain_graph=True)
        return loss.detach(), values

    fused, got = grads(copy_cross_entropy(hidden, weights, src, layer, gate, target, smoothing,
                                          chunk=chunk))
    log_p = copy_log_probs(layer(hidden), gate(hidden), weights, src)
    plain, want = grads(F.cross_entropy(log_p, target, label_smoothing=smoothing,
                                        reduction="sum"))
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _tiny_model(copy: bool, tie: bool):
    from nmt.config import ModelConfig
    from nmt.models.seq2seq import build_model

    torch.manual_seed(3)
    return build_model(ModelConfig(embed_size=8, hidden_size=8, decoder_hidden_size=8,
                                   dropout=0.0, copy_attention=copy, tie_embeddings=tie),
                       30, 30)


@pytest.mark.parametrize("copy, tie", [(False, False), (True, True)])
def test_sampled_softmax_over_every_piece_is_the_full_loss(copy, tie):
    """training.sampled_softmax: a sample that leaves no piece out gives the full loss and
    its gradients (with copy attention, tied embeddings, label smoothing); a small one
    normalises over the batch's own pieces (and, with copy, its source's) plus the sample
    (the other output rows get no gradient); eval mode keeps the full softmax."""
    from nmt.training.loss import TrainingLoss, candidate_ids

    model = _tiny_model(copy, tie)
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 0]])
    tgt = torch.tensor([[1, 10, 11, 12, 2], [1, 13, 10, 2, 0]])

    def loss_and_grads(sampled: int):
        model.zero_grad()
        loss = TrainingLoss(model, 0.1, 1.0, sampled)(src, torch.tensor([4, 3]), tgt)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    full, full_grads = loss_and_grads(0)
    every, every_grads = loss_and_grads(1000)
    torch.testing.assert_close(every, full, rtol=1e-5, atol=1e-5)
    for name, grad in full_grads.items():
        torch.testing.assert_close(every_grads[name], grad, rtol=1e-4, atol=1e-6)

    torch.manual_seed(0)
    ids = candidate_ids(tgt[:, 1:], 30, 5, src if copy else None)
    own = {0, 1, 2, 3, 10, 11, 12, 13} | ({5, 6, 7, 8, 9} if copy else set())
    assert ids.tolist() == sorted(set(ids.tolist())) and own <= set(ids.tolist())
    assert len(ids) == len(own) + 5
    small, _ = loss_and_grads(5)
    assert float(small) < float(full)  # fewer pieces share the probability
    if not tie:  # rows of pieces neither seen nor sampled get no gradient
        assert int((model.decoder.output.weight.grad.abs().sum(1) > 0).sum()) == len(ids)
    model.eval()
    torch.testing.assert_close(loss_and_grads(5)[0], full, rtol=1e-5, atol=1e-5)


def test_the_sampled_softmax_is_on_by_default_on_a_cpu():
    """training.sampled_softmax null: on (SAMPLED_CPU) on a CPU, where recipe runs measured it;
    off on CUDA; a value set in the config wins."""
    from nmt.training.loss import SAMPLED_CPU, sampled_size

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert sampled_size(None, cpu) == SAMPLED_CPU > 0
    assert sampled_size(None, cuda) == 0
    assert sampled_size(0, cpu) == 0 and sampled_size(7, cuda) == 7
