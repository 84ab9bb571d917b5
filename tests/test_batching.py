"""Batching: every example once per epoch, token budget, seeded order, padding and Corpus access."""

import numpy as np
import pytest
import torch
from conftest import make_pairs, small_overrides, write_text_corpus

from nmt.config import load_config
from nmt.data.batching import Corpus, TokenBatchSampler, collate, pad, padding_fraction
from nmt.data.prepare import prepare
from nmt.data.tokenizer import PAD_ID


def lengths(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(2, 60, n)
    tgt = np.clip(src + rng.integers(-5, 6, n), 3, None)
    return src, tgt


def test_every_example_exactly_once_and_budget_respected():
    src, tgt = lengths()
    sampler = TokenBatchSampler(src, tgt, max_tokens=500, seed=1)
    for epoch in range(3):
        batches = sampler.batches(epoch)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(len(src)))
        for b in batches:
            assert len(b) * int(np.maximum(src[b], tgt[b]).max()) <= 500


def test_same_seed_same_order_other_seed_or_epoch_differs():
    src, tgt = lengths()
    a = TokenBatchSampler(src, tgt, 500, seed=1).batches(0)
    b = TokenBatchSampler(src, tgt, 500, seed=1).batches(0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = TokenBatchSampler(src, tgt, 500, seed=2).batches(0)
    d = TokenBatchSampler(src, tgt, 500, seed=1).batches(1)
    key = [x.tolist() for x in a]
    assert key != [x.tolist() for x in c] and key != [x.tolist() for x in d]


def test_iteration_follows_set_epoch():
    src, tgt = lengths(300)
    sampler = TokenBatchSampler(src, tgt, 400, seed=5)
    sampler.set_epoch(2)
    assert [b.tolist() for b in sampler] == [b.tolist() for b in sampler.batches(2)]
    assert len(sampler) == len(sampler.batches(2))


def test_bucketing_pads_far_less_than_random():
    src, tgt = lengths(5000)
    sampler = TokenBatchSampler(src, tgt, 2000, seed=0)
    bucketed = padding_fraction(sampler.batches(0), src, tgt)
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(src)), len(sampler.batches(0)))
    assert bucketed < 0.1 < padding_fraction(random_batches, src, tgt)


def test_unshuffled_batches_are_sorted_by_length():
    src, tgt = lengths(500)
    batches = TokenBatchSampler(src, tgt, 300, shuffle=False).batches()
    widths = [int(np.maximum(src[b], tgt[b]).max()) for b in batches]
    assert widths == sorted(widths)


def test_budget_below_longest_example_is_refused():
    with pytest.raises(ValueError, match="smaller than the longest example"):
        TokenBatchSampler(np.array([5, 50]), np.array([5, 10]), max_tokens=20)


def test_max_sentences_caps_batch_size():
    src, tgt = lengths(500)
    assert max(len(b) for b in TokenBatchSampler(src, tgt, 10_000, max_sentences=7).batches()) == 7


def test_pad_and_collate():
    ids, lens = pad([[5, 6, 7], [8], []])
    assert ids.dtype == torch.int64 and ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID],
                                                         [PAD_ID] * 3]
    assert lens.tolist() == [3, 1, 0]
    batch = collate([[4, 3], [5, 6, 3]], [[2, 9, 3]] * 2, [10, 11])
    assert batch.src.shape == (2, 3) and batch.tgt.shape == (2, 3)
    assert batch.ntokens == 4 and batch.size == 2 and batch.indices.tolist() == [10, 11]
    assert collate([[4, 3]], None, [0]).tgt is None


def test_corpus_gathers_the_right_examples(tmp_path, text_corpus):
    prepared = prepare(load_config(None, small_overrides(tmp_path / "run", text_corpus)))
    ds = prepared.splits["train"].kept
    corpus = Corpus(ds)
    assert len(corpus) == len(ds)
    assert corpus.src_lengths.tolist() == ds["src_len"]
    batch = corpus.batch([3, 0, 7])
    for row, i in enumerate([3, 0, 7]):
        n, m = ds[i]["src_len"], ds[i]["tgt_len"]
        assert batch.src[row, :n].tolist() == ds[i]["src_ids"]
        assert batch.tgt[row, :m].tolist() == ds[i]["tgt_ids"]
        assert (batch.src[row, n:] == PAD_ID).all()
    # selected views gather their own rows, and so do explicit row positions
    for gathered, rows in ((Corpus(ds.select([5, 2])), [5, 2]),
                           (Corpus(ds.select([5, 2, 9]).select([2, 0])), [9, 5]),
                           (Corpus(ds, rows=np.array([4, 1])), [4, 1]),
                           (Corpus(ds.select([5, 2, 9]), rows=np.array([2, 1])), [9, 2])):
        assert gathered.src_lengths.tolist() == [ds[i]["src_len"] for i in rows]
        for row, i in enumerate(rows):
            assert gathered._get(gathered.src_values, gathered.src_offsets, row).tolist() == \
                ds[i]["src_ids"]
            assert gathered._get(gathered.tgt_values, gathered.tgt_offsets, row).tolist() == \
                ds[i]["tgt_ids"]


def test_corpus_of_an_encoded_split_gathers_exactly_the_kept_rows(tmp_path, text_corpus):
    pairs = make_pairs(80)
    train = [("", "leer"), *pairs[:40], ("word " * 40, "Wort " * 40), *pairs[40:], ("x", "")]
    text_corpus = {**text_corpus, "train": write_text_corpus(tmp_path / "d" / "train", train)}
    config = load_config(None, [*small_overrides(tmp_path / "run", text_corpus), "data.max_len=30"])
    split = prepare(config).splits["train"]
    kept = [i for i in range(len(train)) if i not in (0, 41, 82)]
    assert split.rows.tolist() == kept
    for corpus, rows in ((Corpus(split), kept), (Corpus(split, rows=np.array([3, 0])),
                                                 [kept[3], kept[0]])):
        assert len(corpus) == len(rows)
        for pos, i in enumerate(rows):
            row = split.dataset[i]
            assert corpus._get(corpus.src_values, corpus.src_offsets, pos).tolist() == \
                row["src_ids"]
            assert corpus._get(corpus.tgt_values, corpus.tgt_offsets, pos).tolist() == \
                row["tgt_ids"]
    assert Corpus(split).src_lengths.tolist() == split.lengths()[0].tolist()


def test_random_batches_respect_the_budget_and_cover_everything():
    from nmt.data.batching import random_batches

    src, tgt = lengths(1000)
    longest = np.maximum(src, tgt)
    batches = random_batches(longest, 500, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) * int(longest[b].max()) <= 500 for b in batches)
