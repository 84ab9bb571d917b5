"""Model: shapes for each configuration, packing, bridge depth rule, step == full forward."""

import itertools

import pytest
import torch

from nmt.config import ModelConfig
from nmt.data.batching import pad
from nmt.errors import ConfigError
from nmt.models.encoder import Bridge, Encoder, WordDropout
from nmt.models.seq2seq import build_model, count_parameters

V_SRC, V_TGT = 23, 19


def tiny(**kw) -> ModelConfig:
    base = dict(embed_size=8, hidden_size=6, decoder_hidden_size=12, encoder_layers=1,
                decoder_layers=1, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [5, 2, 7, 1]
    src, src_len = pad([torch.randint(4, V_SRC, (n,), generator=g).tolist() for n in lengths])
    tgt, _ = pad([[2] + torch.randint(4, V_TGT, (n,), generator=g).tolist() + [3]
                  for n in (3, 6, 1, 4)])
    return src, src_len, tgt


CONFIGS = [dict(attention=a, input_feeding=f, encoder_layers=le, decoder_layers=ld)
           for a, f, (le, ld) in itertools.product(("none", "dot", "general", "mlp"),
                                                   (False, True), ((1, 1), (2, 1), (1, 3)))]


@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_shapes(kw):
    torch.manual_seed(0)
    model = build_model(tiny(**kw), V_SRC, V_TGT).eval()
    src, src_len, tgt = batch()
    enc = model.encode(src, src_len)
    assert enc.outputs.shape == (4, 7, 12)
    assert enc.h.shape == enc.c.shape == (2 * kw["encoder_layers"], 4, 6)
    state = model.init_state(enc)
    assert state.h.shape == state.c.shape == (kw["decoder_layers"], 4, 12)
    logits = model(src, src_len, tgt[:, :-1])
    assert logits.shape == (4, tgt.size(1) - 1, V_TGT)
    _, weights = model.decoder(tgt[:, :-1], model.init_state(enc))
    if kw["attention"] == "none":
        assert weights is None
    else:
        assert weights.shape == (4, tgt.size(1) - 1, 7)
        assert torch.allclose(weights.sum(-1), torch.ones(4, tgt.size(1) - 1))
        assert (weights[1, :, 2:] == 0).all()  # padding of the 2-token sentence gets no weight
    assert model.encode_sentences(src, src_len).shape == (4, 12)


@pytest.mark.parametrize("layers", [1, 2])
def test_packing_equals_encoding_each_sentence_alone(layers):
    torch.manual_seed(0)
    encoder = Encoder(V_SRC, 8, 6, num_layers=layers).eval()
    src, src_len, _ = batch()
    with torch.no_grad():
        enc = encoder(src, src_len)
        for i, n in enumerate(src_len.tolist()):
            alone = encoder(src[i:i + 1, :n], src_len[i:i + 1])
            torch.testing.assert_close(enc.outputs[i:i + 1, :n], alone.outputs, atol=1e-5, rtol=0)
            assert (enc.outputs[i, n:] == 0).all()
            torch.testing.assert_close(enc.h[:, i:i + 1], alone.h, atol=1e-5, rtol=0)
            torch.testing.assert_close(enc.c[:, i:i + 1], alone.c, atol=1e-5, rtol=0)


def test_sentence_vector_is_top_forward_and_backward_final_state():
    torch.manual_seed(0)
    encoder = Encoder(V_SRC, 8, 6, num_layers=2).eval()
    src, src_len, _ = batch()
    enc = encoder(src, src_len)
    vec = encoder.sentence_vectors(enc)
    # forward direction's final state is its output at the last real token ...
    for i, n in enumerate(src_len.tolist()):
        torch.testing.assert_close(vec[i, :6], enc.outputs[i, n - 1, :6])
        torch.testing.assert_close(vec[i, 6:], enc.outputs[i, 0, 6:])  # ... backward's at the first
    torch.testing.assert_close(vec, torch.cat([enc.h[2], enc.h[3]], dim=-1))


def test_bridge_joins_directions_and_follows_the_depth_rule():
    h = torch.arange(3 * 2 * 2 * 1, dtype=torch.float).view(6, 2, 1)  # (2L=6, B=2, H=1)
    joined = Encoder.join_directions(h)
    assert joined.shape == (3, 2, 2)
    assert joined[1, 0].tolist() == [h[2, 0, 0].item(), h[3, 0, 0].item()]
    fewer = Bridge("none", 3, 2, 2, 2)
    assert torch.equal(fewer(h, h)[0], joined[1:])  # top 2 encoder layers
    more = Bridge("none", 3, 5, 2, 2)
    assert torch.equal(more(h, h)[0], joined[[0, 1, 2, 2, 2]])
    linear = Bridge("linear", 3, 3, 2, 4)
    h0, c0 = linear(h, h * 2)
    assert h0.shape == (3, 2, 4) and not torch.equal(h0, c0) and h0.abs().max() <= 1


@pytest.mark.parametrize("layers", [1, 2])
def test_a_batch_without_padding_is_encoded_as_with_padding(layers):
    """Sentences of one length (a sentence alone, as a server admits them) take the encoder's
    short path: the same outputs, final states and mask, bit for bit, as the same sentences
    padded by one position (the sorted, segmented path)."""
    torch.manual_seed(0)
    encoder = Encoder(30, 8, 6, num_layers=layers).eval()
    src = torch.randint(4, 30, (3, 7))
    lengths = torch.full((3,), 7)
    with torch.no_grad():
        short = encoder(src, lengths)
        padded = encoder(torch.cat([src, torch.zeros(3, 1, dtype=torch.long)], 1), lengths)
    assert torch.equal(short.outputs, padded.outputs[:, :7])
    assert torch.equal(short.h, padded.h) and torch.equal(short.c, padded.c)
    assert torch.equal(short.mask, padded.mask[:, :7]) and bool(short.mask.all())


def test_decoder_starts_from_both_encoder_h_and_c():
    torch.manual_seed(0)
    model = build_model(tiny(attention="none"), V_SRC, V_TGT).eval()
    src, src_len, tgt = batch()
    enc = model.encode(src, src_len)
    base = model.decoder(tgt[:, :-1], model.init_state(enc))[0]
    for name in ("h", "c"):
        other = type(enc)(**{**enc.__dict__, name: enc.__dict__[name] + 0.5})
        assert not torch.allclose(base, model.decoder(tgt[:, :-1], model.init_state(other))[0])


@pytest.mark.parametrize("attention, feeding", list(itertools.product(
    ("none", "dot", "general", "mlp"), (False, True))))
def test_incremental_step_equals_full_forward(attention, feeding):
    torch.manual_seed(1)
    model = build_model(tiny(attention=attention, input_feeding=feeding, decoder_layers=2,
                             encoder_layers=2), V_SRC, V_TGT).eval()
    src, src_len, tgt = batch(3)
    with torch.no_grad():
        full = torch.log_softmax(model(src, src_len, tgt[:, :-1]), -1)
        state = model.init_state(model.encode(src, src_len))
        steps = []
        for t in range(tgt.size(1) - 1):
            log_probs, state = model.step(tgt[:, t], state)
            steps.append(log_probs)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


def test_reorder_selects_rows():
    torch.manual_seed(0)
    model = build_model(tiny(attention="general", input_feeding=True), V_SRC, V_TGT).eval()
    src, src_len, tgt = batch()
    state = model.init_state(model.encode(src, src_len))
    lp, state = model.step(tgt[:, 0], state)
    index = torch.tensor([2, 2, 0])
    picked = model.reorder(state, index)
    lp_picked, _ = model.step(tgt[index, 1], picked)
    lp_all, _ = model.step(tgt[:, 1], state)
    torch.testing.assert_close(lp_picked, lp_all[index])


def test_reorder_within_sentences_keeps_the_shared_memory():
    """Beams reordered within their sentences (as every beam search step reorders them) keep
    the memory shared whether the caller says so (``same_memory``, no check) or not, and step
    as rows given their own memory do."""
    torch.manual_seed(0)
    model = build_model(tiny(attention="general", input_feeding=True, copy_attention=True),
                        V_SRC, V_SRC).eval()
    src, src_len, _ = batch()
    with torch.no_grad():
        state = model.expand(model.init_state(model.encode(src, src_len)), 2)  # 8 rows, group 2
        _, state = model.step(torch.randint(4, V_SRC, (8,)), state)
        index = torch.tensor([1, 1, 2, 3, 5, 4, 7, 6])  # each pair from its sentence's beams
        told, checked = model.reorder(state, index, same_memory=True), model.reorder(state, index)
        for picked in (told, checked):
            assert picked.group == 2 and picked.keys is state.keys and picked.src is state.src
            torch.testing.assert_close(picked.h, state.h[:, index])
        perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])  # mixes sentences in pairs: memory per row
        alone = model.reorder(model.reorder(model.reorder(state, perm), torch.argsort(perm)),
                              index)
        assert alone.group == 1 and alone.keys.size(0) == 8
        tokens = torch.randint(4, V_SRC, (8,))
        torch.testing.assert_close(model.step(tokens, told)[0], model.step(tokens, alone)[0])


def test_scheduled_sampling_changes_inputs_only_below_ratio_one():
    torch.manual_seed(0)
    model = build_model(tiny(), V_SRC, V_TGT).eval()
    src, src_len, tgt = batch()
    gold = model(src, src_len, tgt[:, :-1])
    sampled = model(src, src_len, tgt[:, :-1], teacher_forcing_ratio=0.0)
    assert sampled.shape == gold.shape
    torch.testing.assert_close(sampled[:, 0], gold[:, 0])  # first input is always BOS
    assert not torch.allclose(sampled, gold)


def test_tied_embeddings_share_the_weight():
    model = build_model(tiny(embed_size=12, tie_embeddings=True), V_SRC, V_TGT)
    assert model.decoder.output.weight is model.decoder.embed.weight
    untied = build_model(tiny(embed_size=12), V_SRC, V_TGT)
    assert count_parameters(untied) - count_parameters(model) == V_TGT * 12


@pytest.mark.parametrize("kw, message", [
    (dict(attention="dot", decoder_hidden_size=10), "model.attention 'dot' needs"),
    (dict(bridge="none", decoder_hidden_size=10), "model.bridge 'none' needs"),
    (dict(tie_embeddings=True), "model.tie_embeddings needs"),
])
def test_inconsistent_sizes_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        build_model(tiny(**kw), V_SRC, V_TGT)


def test_word_dropout_drops_whole_tokens_in_training_only():
    layer = WordDropout(0.3).train()
    x = torch.randn(64, 50, 8)
    y = layer(x)
    dropped = (y == 0).all(-1)  # (B, T): whole embeddings zeroed, never part of one
    assert ((y == 0) == dropped[..., None]).all()
    assert 0.25 < float(dropped.float().mean()) < 0.35
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.7)
    assert torch.equal(layer.eval()(x), x)
    state = torch.get_rng_state()  # p = 0 draws nothing: runs without it are unchanged
    assert torch.equal(WordDropout(0.0).train()(x), x)
    assert torch.equal(torch.get_rng_state(), state)
    model = build_model(ModelConfig(embed_size=8, hidden_size=8, decoder_hidden_size=16,
                                    word_dropout=0.5, dropout=0.0), 20, 20).train()
    src, lengths, tgt = torch.randint(4, 20, (3, 6)), torch.tensor([6, 6, 6]), torch.randint(
        4, 20, (3, 5))
    assert not torch.equal(model(src, lengths, tgt), model(src, lengths, tgt))
    model.eval()
    assert torch.equal(model(src, lengths, tgt), model(src, lengths, tgt))


@pytest.mark.parametrize("attention, feeding", [("general", False), ("dot", True),
                                                ("mlp", False)])
def test_copy_attention_step_equals_forward_and_is_a_distribution(attention, feeding):
    """Copy attention (joint vocabulary): the teacher-forced mixture equals the step-by-step
    one search uses, each row sums to 1, and beams sharing a source row give the same
    log-probabilities as rows with their own copy."""
    torch.manual_seed(2)
    model = build_model(tiny(attention=attention, input_feeding=feeding, copy_attention=True),
                        V_SRC, V_SRC).eval()
    src, src_len, _ = batch(4)
    tgt, _ = pad([[2] + torch.randint(4, V_SRC, (n,)).tolist() + [3] for n in (3, 6, 1, 4)])
    with torch.no_grad():
        full = model(src, src_len, tgt[:, :-1])  # (B, T, V) log-probabilities
        torch.testing.assert_close(full.exp().sum(-1), torch.ones(full.shape[:2]))
        state = model.init_state(model.encode(src, src_len))
        steps = []
        for t in range(tgt.size(1) - 1):
            log_probs, state = model.step(tgt[:, t], state)
            steps.append(log_probs)
        torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)
        # 3 beams per sentence: memory rows shared (group 3) versus repeated per row
        shared = model.expand(model.init_state(model.encode(src, src_len)), 3)
        perm = torch.arange(12).view(4, 3).t().reshape(-1)  # mixes sentences: no groups left
        own = model.reorder(model.reorder(shared, perm), torch.argsort(perm))
        assert shared.src.size(0) == 4 and own.src.size(0) == 12
        tokens = torch.randint(4, V_SRC, (12,))
        torch.testing.assert_close(model.step(tokens, shared)[0], model.step(tokens, own)[0])


def test_copy_log_probs_mixes_generation_and_copying():
    """p_copy -> 0 gives the softmax; p_copy -> 1 gives the attention weights summed per source
    id; in between, the mixture; repeated source ids add their weights."""
    from nmt.models.decoder import copy_log_probs

    logits = torch.randn(2, 6)
    weights = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.8, 0.0]])
    src = torch.tensor([[4, 5, 4], [5, 3, 0]])
    generate = copy_log_probs(logits, torch.full((2, 1), -40.0), weights, src)
    torch.testing.assert_close(generate, torch.log_softmax(logits, -1))
    copy = copy_log_probs(logits, torch.full((2, 1), 40.0), weights, src).exp()
    expected = torch.tensor([[0, 0, 0, 0, 0.75, 0.25], [0, 0, 0, 0.8, 0, 0.2]])
    torch.testing.assert_close(copy, expected, atol=1e-6, rtol=0)
    half = copy_log_probs(logits, torch.zeros(2, 1), weights, src).exp()
    torch.testing.assert_close(half, 0.5 * torch.softmax(logits, -1) + 0.5 * expected)


def test_copy_log_probs_in_search_equal_those_with_autograd():
    """Without autograd (search) the mixture is computed in place: the same values, bit for
    bit, and the caller's logits untouched."""
    from nmt.models.decoder import copy_log_probs

    g = torch.Generator().manual_seed(0)
    logits, gate = torch.randn(6, 40, generator=g), torch.randn(6, 1, generator=g)
    weights = torch.softmax(torch.randn(6, 5, generator=g), -1)
    src = torch.randint(4, 40, (2, 5), generator=g)  # 3 rows (beams) per source row
    kept = logits.clone()
    with torch.no_grad():
        searched = copy_log_probs(logits, gate, weights, src)
    trained = copy_log_probs(logits.requires_grad_(), gate, weights, src)
    assert trained.requires_grad and not searched.requires_grad
    assert torch.equal(searched, trained.detach())
    assert torch.equal(logits.detach(), kept)


def test_copy_attention_needs_attention_and_a_joint_vocabulary():
    from nmt.config import load_config

    with pytest.raises(ConfigError, match="needs model.attention|copies through"):
        build_model(tiny(attention="none", copy_attention=True), V_SRC, V_SRC)
    with pytest.raises(ConfigError, match="share one vocabulary"):
        load_config(None, ["model.copy_attention=true", "tokenizer.joint=false"])
    with pytest.raises(ConfigError, match="copies through the attention"):
        load_config(None, ["model.copy_attention=true", "model.attention=none"])
    load_config(None, ["model.copy_attention=true"])  # joint vocabulary, general attention


@pytest.mark.parametrize("layers", [1, 2])
def test_scaled_init_sizes_embeddings_for_a_tied_output_and_opens_the_forget_gates(layers):
    torch.manual_seed(0)
    cfg = dict(embed_size=64, hidden_size=32, decoder_hidden_size=64, tie_embeddings=True,
               encoder_layers=layers, decoder_layers=layers)
    model = build_model(ModelConfig(init="scaled", **cfg), 3000, 3000)
    for embed in (model.encoder.embed, model.decoder.embed):
        assert abs(embed.weight[1:].std().item() - 64 ** -0.5) < 0.005
        assert not embed.weight[0].any()  # the padding row
    assert model.decoder.output.weight is model.decoder.embed.weight
    lstms = [m for m in model.modules() if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == 2 * layers + 1  # each encoder layer and direction, the decoder
    for lstm in lstms:
        h = lstm.hidden_size
        for name, param in lstm.named_parameters():
            if name.startswith("bias_"):
                gates = param.detach().view(4, h)  # input, forget, cell, output
                expected = 1.0 if name.startswith("bias_ih") else 0.0
                assert torch.equal(gates[1], torch.full((h,), expected)), name
                assert gates[0].abs().max() > 0  # the other gates keep PyTorch's
    torch.manual_seed(0)
    plain = build_model(ModelConfig(init="torch", **cfg), 3000, 3000)
    assert abs(plain.decoder.embed.weight[1:].std().item() - 1.0) < 0.02


@pytest.mark.skipif(not __import__("nmt.models.decoder").models.decoder.PACKED_PRODUCTS,
                    reason="this torch has no oneDNN linear on a packed weight")
def test_search_steps_use_the_output_weight_packed_once_and_follow_its_changes(monkeypatch):
    """Under no_grad on a CPU in fp32 a step's output layer is oneDNN's product on the weight
    packed once (the same logits up to rounding), packed again when the weight changes in
    place (a loaded or fine-tuned model) and forgotten with the weight; in training it is
    ``self.output``."""
    import gc

    from nmt.models import packed

    packs = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight",
                        lambda w: packs.append(w) or reorder(w))
    torch.manual_seed(2)
    model = build_model(tiny(attention="general", decoder_hidden_size=16), V_SRC, V_TGT).eval()
    out = model.decoder.output
    x = torch.randn(5, 16)
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(model.decoder._output_logits(x), out(x), atol=1e-5,
                                       rtol=0)
        assert len(packs) == 1  # packed once for three steps
        out.weight.mul_(2.0)  # changed in place: packed again, and the logits follow
        torch.testing.assert_close(model.decoder._output_logits(x), out(x), atol=1e-5, rtol=0)
        assert len(packs) == 2
    assert id(out.weight) in packed.CACHE
    model.train()  # forgotten: a fused optimizer's step changes the weight, not its version
    assert id(out.weight) not in packed.CACHE
    model.decoder._output_logits(x)  # training: self.output, nothing packed
    assert len(packs) == 2 and id(out.weight) not in packed.CACHE
    # the trainer's round: a fused optimizer's step (the weight's version unchanged), then eval
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    model(*batch(0)[:2], batch(0)[2][:, :-1]).sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.decoder._output_logits(x), out(x), atol=1e-5, rtol=0)
    assert len(packs) == 3
    key = id(out.weight)
    del model, out, opt
    packs.clear()
    gc.collect()
    assert key not in packed.CACHE


@pytest.mark.skipif(not __import__("nmt.models.encoder").models.encoder.PACKED_RNN,
                    reason="this torch has no oneDNN LSTM layer on weights laid out once")
def test_the_encoder_lays_its_lstm_weights_out_once_and_follows_their_changes(monkeypatch):
    """Under no_grad on a CPU in fp32 each direction runs oneDNN's LSTM on its weights laid out
    once: the same outputs and states, bit for bit, as nn.LSTM (a padded batch, run in length
    segments from each other's states, and a batch without padding); laid out again when a
    weight changes in place, forgotten at train() (a fused optimizer's step changes the
    weights, not their version) and with the weights; a sentence alone has a layout of its
    own."""
    import gc

    from nmt.models import encoder as enc
    from nmt.models import packed

    layouts = []
    reorder = torch.ops.mkldnn._reorder_mkldnn_rnn_layer_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_mkldnn_rnn_layer_weight",
                        lambda *args: layouts.append(args[6]) or reorder(*args))
    torch.manual_seed(3)
    model = build_model(tiny(encoder_layers=2), V_SRC, V_TGT).eval()
    src, src_len = batch(0)[:2]
    unpadded, unpadded_len = src[:, :3], torch.full((src.size(0),), 3)

    def both(encoder, s, n):
        with torch.no_grad():
            monkeypatch.setattr(enc, "PACKED_RNN", True)
            laid_out = encoder(s, n)
            monkeypatch.setattr(enc, "PACKED_RNN", False)
            plain = encoder(s, n)
            monkeypatch.setattr(enc, "PACKED_RNN", True)
        for field in ("outputs", "h", "c"):
            assert torch.equal(getattr(laid_out, field), getattr(plain, field)), field

    for _ in range(2):
        both(model.encoder, unpadded, unpadded_len)
    assert layouts == [None] * 4  # two layers x two directions, once
    for _ in range(2):  # a sentence alone: a layout of its own (oneDNN's for a batch of one)
        both(model.encoder, src[:1, :4], torch.tensor([4]))
    assert [size[:2] for size in layouts[4:]] == [[1, 4]] * 4  # made for (batch 1, 4 pieces)
    for _ in range(2):  # length segments, the last of one sentence: both layouts made
        both(model.encoder, src, src_len)
    assert len(layouts) == 8
    with torch.no_grad():
        model.encoder.layers[0][0].weight_hh_l0.mul_(0.5)  # changed in place: laid out again
    both(model.encoder, unpadded, unpadded_len)
    assert len(layouts) == 9
    model.train()
    assert not any(id(rnn.weight_ih_l0) in packed.CACHE for layer in model.encoder.layers
                   for rnn in layer)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    model(*batch(0)[:2], batch(0)[2][:, :-1]).sum().backward()
    opt.step()
    model.eval()
    both(model.encoder, unpadded, unpadded_len)  # after the trainer's round, the new weights
    assert len(layouts) == 13
    keys = [id(rnn.weight_ih_l0) for layer in model.encoder.layers for rnn in layer]
    del model, opt
    layouts.clear()
    gc.collect()
    assert not any(key in packed.CACHE for key in keys)
