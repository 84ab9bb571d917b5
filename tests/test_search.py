"""Search: beam 1 equals greedy (with min_len and n-gram blocking too), a wide beam finds the
exhaustive best, scores are the model's log-probabilities, a sentence's result does not depend
on its batch, and the one decoding path (decode, decode_all) picks the search by its options."""

import itertools

import pytest
import torch

from nmt.config import DecodingConfig, ModelConfig
from nmt.data.batching import pad
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.errors import ConfigError
from nmt.models import search
from nmt.models.search import (
    beam_search,
    decode,
    decode_all,
    greedy,
    length_penalty,
)
from nmt.models.seq2seq import Ensemble, build_model


def random_model(vocab=12, seed=0, attention="general", input_feeding=False):
    torch.manual_seed(seed)
    cfg = ModelConfig(embed_size=8, hidden_size=8, decoder_hidden_size=16, dropout=0.0,
                      attention=attention, input_feeding=input_feeding)
    model = build_model(cfg, vocab, vocab).eval()
    with torch.no_grad():  # sharpen the output so that EOS competes with other tokens
        model.decoder.output.weight.mul_(3)
    return model


def sources(lengths, vocab=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return pad([torch.randint(4, vocab, (n - 1,), generator=g).tolist() + [EOS_ID]
                for n in lengths])


def sequence_log_prob(model, src, src_len, tokens):
    """log p(tokens + EOS | src) from the teacher-forced forward pass."""
    target = torch.tensor([[BOS_ID, *tokens, EOS_ID]])
    with torch.no_grad():
        logp = torch.log_softmax(model(src, src_len, target[:, :-1]).float(), -1)
    return float(logp[0].gather(1, target[0, 1:, None]).sum())


@pytest.mark.parametrize("attention, feeding", [("general", False), ("mlp", True),
                                                ("none", False)])
def test_beam_of_one_equals_greedy(attention, feeding):
    model = random_model(attention=attention, input_feeding=feeding)
    src, src_len = sources([5, 9, 2, 7, 7, 3])
    expected = greedy(model, src, src_len, 1.0, 3)
    got = beam_search(model, src, src_len, beam_size=1, alpha=0.0, max_len_a=1.0, max_len_b=3)
    assert [h[0].tokens for h in got] == [tokens for tokens, _ in expected]
    assert [h[0].log_prob for h in got] == pytest.approx([lp for _, lp in expected], abs=1e-5)


@pytest.mark.parametrize("min_len, ngram", [(5, 0), (0, 1), (5, 2)])
def test_beam_of_one_honours_min_len_and_ngram_blocking(min_len, ngram):
    """Beam size 1 (greedy) keeps min_len and no_repeat_ngram, as wider beams do."""
    model = random_model(seed=1)  # its unconstrained output repeats and ends early
    src, src_len = sources([2, 6, 3, 5])
    options = DecodingConfig(beam_size=1, max_len_a=3.0, max_len_b=6, min_len=min_len,
                             no_repeat_ngram=ngram, length_penalty=0.0)
    free = decode(model, src, src_len, DecodingConfig(beam_size=1, max_len_a=3.0, max_len_b=6))
    got = decode(model, src, src_len, options)
    beam = beam_search(model, src, src_len, beam_size=1, alpha=0.0, max_len_a=3.0,
                       max_len_b=6, min_len=min_len, no_repeat_ngram=ngram)
    assert [h[0].tokens for h in got] == [h[0].tokens for h in beam]
    assert all(keeps_rules(h.tokens, min_len, ngram) for (h,) in got)
    # the rules bite on this model: without them some output breaks one
    assert not all(keeps_rules(h.tokens, min_len, ngram) for (h,) in free)


def keeps_rules(tokens, min_len, ngram):
    """At least min_len tokens with EOS, and no n-gram twice."""
    grams = [tuple(tokens[i:i + ngram]) for i in range(len(tokens) - ngram + 1)] if ngram else []
    return len(tokens) + 1 >= min_len and len(grams) == len(set(grams))


def test_decoding_options_and_decode_all_keep_input_order():
    model = random_model()
    options = DecodingConfig().updated(beam_size=3, n_best=2, max_len_b=None, batch_tokens=6)
    assert (options.beam_size, options.n_best, options.max_len_b) == (3, 2, 10)
    with pytest.raises(ConfigError, match="n_best"):
        DecodingConfig().updated(beam_size=2, n_best=3)
    lengths = [5, 2, 9, 3]
    src, src_len = sources(lengths)
    rows = [src[i, : n].tolist() for i, n in enumerate(lengths)]
    # small batches (6 tokens): several, sorted by length
    together = decode_all(model, rows, options, device=torch.device("cpu"), dtype=None)
    alone = decode(model, src, src_len, options)
    assert [[h.tokens for h in hyps] for hyps in together] == \
        [[h.tokens for h in hyps] for hyps in alone]


@pytest.mark.parametrize("alpha, reward", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 4.0),
                                           (1.0, 3.0), (2.0, -0.5)])
def test_wide_beam_finds_the_exhaustive_best(alpha, reward):
    """Beam 128 keeps every candidate here (and never stops early: no sentence gathers 128
    finished hypotheses), so the best must be found and scored exactly as enumerated. Early
    stopping is checked by test_early_stopping_never_changes_the_result."""
    vocab, limit = 6, 5  # outputs: UNK, 4 and 5; at most 4 of them, then EOS
    lengths = set()
    for seed in range(5):
        model = random_model(vocab=vocab, seed=seed)
        src, src_len = sources([3], vocab=vocab, seed=seed)
        candidates = [list(seq) for n in range(limit) for seq in
                      itertools.product([UNK_ID, *range(4, vocab)], repeat=n)]
        logp = {tuple(c): sequence_log_prob(model, src, src_len, c) for c in candidates}
        score = {c: (lp + reward * (len(c) + 1)) / length_penalty(len(c) + 1, alpha)
                 for c, lp in logp.items()}
        best = max(score, key=score.get)
        (hyps,) = beam_search(model, src, src_len, beam_size=128, alpha=alpha, max_len_a=0.0,
                              max_len_b=limit, n_best=3, word_reward=reward)
        assert tuple(hyps[0].tokens) == best
        assert hyps[0].log_prob == pytest.approx(logp[best], abs=1e-4)
        assert hyps[0].score == pytest.approx(score[best], abs=1e-4)
        lengths.add(len(best))
    if reward >= 3.0:  # the reward bites: the best output is the longest allowed
        assert lengths == {limit - 1}


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_scores_are_the_model_log_probabilities(alpha):
    model = random_model()
    src, src_len = sources([6, 4])
    results = beam_search(model, src, src_len, beam_size=4, alpha=alpha, n_best=4)
    for i, hyps in enumerate(results):
        assert len(hyps) == 4
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            logp = sequence_log_prob(model, src[i:i + 1, : src_len[i]], src_len[i:i + 1],
                                     h.tokens)
            assert h.log_prob == pytest.approx(logp, abs=1e-4)
            assert h.score == pytest.approx(logp / length_penalty(len(h.tokens) + 1, alpha),
                                            abs=1e-4)


@pytest.mark.parametrize("beam", [1, 5])
def test_batch_composition_does_not_change_results(beam):
    model = random_model(input_feeding=True)
    src, src_len = sources([4, 15, 1, 9, 4, 30])
    together = beam_search(model, src, src_len, beam_size=beam, alpha=1.0)
    for i in range(len(src_len)):
        alone = beam_search(model, src[i:i + 1, : src_len[i]], src_len[i:i + 1],
                            beam_size=beam, alpha=1.0)
        assert alone[0][0].tokens == together[i][0].tokens
        assert alone[0][0].score == pytest.approx(together[i][0].score, abs=1e-4)


def test_length_limits_and_ngram_blocking():
    model = random_model()
    src, src_len = sources([3, 8])
    for hyps, n in zip(beam_search(model, src, src_len, beam_size=3, max_len_a=1.0,
                                   max_len_b=2, min_len=2, n_best=3), [3, 8], strict=True):
        for h in hyps:
            assert 2 <= len(h.tokens) + 1 <= n + 2
    blocked = beam_search(model, src, src_len, beam_size=3, max_len_a=3.0, max_len_b=10,
                          no_repeat_ngram=2, n_best=3)
    for hyps in blocked:
        for h in hyps:
            bigrams = list(zip(h.tokens, h.tokens[1:], strict=False))
            assert len(bigrams) == len(set(bigrams))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_sentence_is_not_done_while_the_word_reward_can_lift_an_open_beam(alpha):
    """Exact stopping bounds an open hypothesis by the best it may still score at any length
    it can reach, word reward included: with a finished score of 0.5 and an open
    log-probability of -1 at step 0 of 10, the open beam can still reach (-1 + 10 * 1) / lp(10)
    > 0.5, so the sentence goes on; without the reward it cannot, so the sentence is done.
    Early stopping looks at the next step only: with a reward of 0.6 the open beam ending
    there scores (-1 + 2 * 0.6) / lp(2) < 0.5, so the sentence is done early, not exactly."""
    finished = [[search.Hypothesis([4], 0.5, -1.5)]]
    limits = torch.tensor([10])
    scores = torch.tensor([[-1.0]])
    assert not bool(search._sentences_done(finished, scores, limits, 0, 1, alpha,
                                           word_reward=1.0)[0])
    assert bool(search._sentences_done(finished, scores, limits, 0, 1, alpha,
                                       word_reward=0.0)[0])
    assert not bool(search._sentences_done(finished, scores, limits, 0, 1, alpha,
                                           word_reward=0.6)[0])
    assert bool(search._sentences_done(finished, scores, limits, 0, 1, alpha,
                                       word_reward=0.6, early=True)[0])
    # per sentence: one at step 0, one at step 5 (continuous batching), the same open score
    two = search._sentences_done(finished * 2, torch.tensor([[-1.0], [-1.0]]),
                                 torch.tensor([10, 10]), torch.tensor([0, 5]), 1, alpha,
                                 word_reward=0.6, early=True)
    assert two == [True, (-1 + 7 * 0.6) / search.length_penalty(7, alpha) <= 0.5]


@pytest.mark.parametrize("alpha, reward", [(0.0, 0.0), (1.0, 0.0), (1.0, 2.0), (2.0, 0.5),
                                           (0.0, 2.0), (1.0, -0.5)])
def test_exact_stopping_never_changes_the_result(alpha, reward, monkeypatch):
    """With ``stopping="exact"`` a sentence leaves the search only when no open beam can still
    beat its K-th finished hypothesis, so searching every sentence to its length limit finds
    the same K best. The model favours EOS, so hypotheses finish early and the bound decides
    (a bound that leaves out the word reward fails here)."""
    model = random_model(seed=3)
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] += 1.0
    src, src_len = sources([3, 8, 5, 12, 2, 6, 9, 4], seed=4)
    kwargs = dict(beam_size=3, alpha=alpha, n_best=3, word_reward=reward, max_len_a=1.5,
                  max_len_b=4, stopping="exact")
    stopped = beam_search(model, src, src_len, **kwargs)
    calls = []

    def only_when_nothing_is_open(finished, scores, *args, **kw):
        calls.append(1)
        return scores.max(dim=1).values == float("-inf")

    monkeypatch.setattr(search, "_sentences_done", only_when_nothing_is_open)
    full = beam_search(model, src, src_len, **kwargs)
    assert calls
    for early, late in zip(stopped, full, strict=True):
        assert [h.tokens for h in early] == [h.tokens for h in late]
        assert [h.score for h in early] == pytest.approx([h.score for h in late], abs=1e-5)


def test_early_stopping_ends_long_searches_sooner_with_the_same_best(monkeypatch):
    """The default stopping (early) takes fewer steps than exact stopping where a length
    penalty and a word reward keep the exact bound loose, and a sentence's best hypothesis is
    among what the exact search finds, finished by the time early stopping stopped."""
    assert DecodingConfig().stopping == "early"
    model = random_model(seed=3)
    with torch.no_grad():
        model.decoder.output.bias[EOS_ID] += 1.0
    src, src_len = sources([3, 8, 5, 12, 2, 6, 9, 4], seed=4)
    steps = []
    step = model.step
    monkeypatch.setattr(model, "step", lambda *a: steps.append(1) or step(*a))
    kwargs = dict(beam_size=3, alpha=1.0, word_reward=0.3, max_len_a=3.0, max_len_b=10,
                  n_best=3)
    early = beam_search(model, src, src_len, **kwargs)
    early_steps, steps[:] = len(steps), []
    exact = beam_search(model, src, src_len, **kwargs, stopping="exact")
    assert early_steps < len(steps)
    for fast, full in zip(early, exact, strict=True):
        assert fast[0].tokens in [h.tokens for h in full]
        assert fast[0].score <= full[0].score + 1e-6


@pytest.mark.parametrize("stopping", ["early", "exact"])
@pytest.mark.parametrize("kind", ["feeding", "copy", "none", "ensemble"])
def test_a_sentence_admitted_mid_search_gets_what_it_gets_alone(kind, stopping):
    """Continuous batching: sentences join a running search between steps (shorter and longer
    sources than those running, so the memory is padded), others are dropped; each finished
    sentence has the hypotheses, tokens and scores, of its search alone, under its own length
    limit, min_len, n-gram history and stopping test (each sentence's own step count)."""
    if kind == "copy":
        torch.manual_seed(5)
        model = build_model(ModelConfig(embed_size=8, hidden_size=8, decoder_hidden_size=16,
                                        dropout=0.0, copy_attention=True), 12, 12).eval()
    elif kind == "ensemble":
        model = Ensemble([random_model(seed=2), random_model(seed=6)]).eval()
    else:
        model = random_model(attention="none" if kind == "none" else "general",
                             input_feeding=kind == "feeding")
    lengths = [6, 3, 9, 2, 14, 5, 7]
    src, src_len = sources(lengths, seed=7)
    kwargs = dict(beam_size=3, alpha=1.0, max_len_a=1.5, max_len_b=4, min_len=3,
                  no_repeat_ngram=2, word_reward=0.5, stopping=stopping)
    running = search.BeamSearch(model, **kwargs)
    joins = {0: [0, 1], 2: [2, 3], 3: [4], 6: [5, 6]}  # step -> sentences admitted before it
    got, step = {}, 0
    while step <= max(joins) or len(running):
        if step in joins:
            rows = joins[step]
            width = max(lengths[i] for i in rows)
            running.admit(src[rows, :width], src_len[rows], rows)
        if step == 4:
            running.drop([3, 99])  # given up on (99: never admitted)
        got.update(running.step() if len(running) else [])
        step += 1
    assert sorted(got) == [0, 1, 2, 4, 5, 6]
    for i, hyps in got.items():
        alone = beam_search(model, src[i:i + 1, :lengths[i]], src_len[i:i + 1], n_best=99,
                            **kwargs)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        assert [h.score for h in hyps] == pytest.approx([h.score for h in alone], abs=1e-4)
        assert all(len(h.tokens) + 1 >= 3 for h in hyps)


@pytest.mark.parametrize("seed", range(4))
def test_two_stage_top_k_equals_the_top_k_over_beams_times_vocabulary(seed):
    g = torch.Generator().manual_seed(seed)
    active, k, vocab = 3, 4, 50
    scores = torch.randn(active, k, generator=g)
    scores[0, 1:] = float("-inf")  # one live beam, as at the first step
    log_probs = torch.log_softmax(torch.randn(active * k, vocab, generator=g), -1)
    log_probs[5, :] = float("-inf")
    log_probs[5, EOS_ID] = -0.1  # a row at its limit: only EOS
    top, origin, token = search.top_candidates(scores, log_probs, 2 * k)
    flat = (scores.view(-1, 1) + log_probs).view(active, k * vocab)
    want_scores, want_index = flat.topk(2 * k, dim=1)
    assert torch.equal(top, want_scores)
    finite = want_scores > float("-inf")
    assert torch.equal(origin[finite], (want_index // vocab)[finite])
    assert torch.equal(token[finite], (want_index % vocab)[finite])


@pytest.mark.parametrize("width", [64 * 40, 64 * 40 + 17, 8000])
@pytest.mark.parametrize("k", [1, 10])
def test_row_top_through_blocks_equals_topk(width, k):
    """The block-wise top k (each block's maximum, then the best blocks' columns) gives
    torch.topk's values and columns: on random rows, on rows whose best values crowd into one
    block or sit in the last, partial block, and on a row of -inf but one."""
    g = torch.Generator().manual_seed(width + k)
    x = torch.randn(6, width, generator=g)
    x[1, 64:64 + k] += 10.0  # the k best in one block
    x[2, -3:] += 10.0  # the best at the end
    x[3] = float("-inf")
    x[3, 5] = -0.5  # a row at its length limit: only EOS left
    calls = search._block_columns.cache_info().misses + search._block_columns.cache_info().hits
    values, columns = search.row_top(x, k)
    info = search._block_columns.cache_info()
    assert info.misses + info.hits == calls + 1  # the block path ran
    want_values, want_columns = x.topk(k, dim=1)
    assert torch.equal(values, want_values)
    finite = want_values > float("-inf")
    assert torch.equal(columns[finite], want_columns[finite])


def test_a_running_search_cuts_its_memory_to_the_longest_source_left():
    """When sentences leave a running search, the encoder memory keeps only the width of the
    longest source still searched (not that of the longest ever admitted), and the others'
    hypotheses stay those of their searches alone."""
    model = random_model(seed=3)
    lengths = [14, 4, 6]
    src, src_len = sources(lengths, seed=4)
    kwargs = dict(beam_size=3, max_len_a=1.5, max_len_b=4)
    running = search.BeamSearch(model, **kwargs)
    running.admit(src, src_len, [0, 1, 2])
    got = dict(running.step())
    assert running.state.mask.shape[1] == 14
    running.drop([0])
    assert running.state.mask.shape[1] == 6
    assert running.state.keys.shape[1] == running.state.proj_keys.shape[1] == 6
    while len(running):
        got.update(running.step())
    for i in (1, 2):
        alone = beam_search(model, src[i:i + 1, :lengths[i]], src_len[i:i + 1], n_best=99,
                            **kwargs)[0]
        assert [h.tokens for h in got[i]] == [h.tokens for h in alone]


def test_the_copy_positions_found_once_follow_the_memory():
    """With copy attention each sentence's first positions of repeated source ids are found
    once (the state's ``src_first``) and stay those of its source ids as sentences join (the
    memory padded), leave and the memory narrows; the hypotheses stay those of each search
    alone."""
    from nmt.models.decoder import first_positions

    torch.manual_seed(5)
    cfg = ModelConfig(embed_size=8, hidden_size=8, decoder_hidden_size=8, dropout=0.0,
                      attention="general", copy_attention=True, tie_embeddings=True)
    model = build_model(cfg, 8, 8).eval()  # 4 ordinary ids: sources repeat them
    lengths = [12, 5, 9, 3]
    src, src_len = sources(lengths, vocab=8, seed=6)
    kwargs = dict(beam_size=3, max_len_a=1.5, max_len_b=4)
    running = search.BeamSearch(model, **kwargs)

    def check():  # at real positions those of the ids; padding points to padding
        state = running.state
        real = state.mask
        assert torch.equal(state.src_first[real], first_positions(state.src)[real])
        assert (state.src.gather(1, state.src_first)[~real] == PAD_ID).all()

    running.admit(src[1:3, :9], src_len[1:3], [1, 2])
    check()
    assert running.state.src_first.tolist()[0][:4] != list(range(4))  # ids do repeat
    got = dict(running.step())
    running.admit(src[:1], src_len[:1], [0])  # wider: the others' memory is padded
    check()
    got.update(running.step())
    running.admit(src[3:, :3], src_len[3:], [3])
    check()
    running.drop([0])
    check()
    while len(running):
        got.update(running.step())
        if len(running):
            check()
    assert 0 not in got  # dropped
    for i in (1, 2, 3):
        alone = beam_search(model, src[i:i + 1, :lengths[i]], src_len[i:i + 1], n_best=99,
                            **kwargs)[0]
        assert [h.tokens for h in got[i]] == [h.tokens for h in alone]
