"""Encoding: cleaning counts, the untouched test split, kept row numbers and the Arrow cache."""

import json

import numpy as np
from conftest import make_pairs, small_overrides, write_text_corpus

from nmt.config import load_config
from nmt.data.id_cache import KEEP, EncodedSplit, cache_dir
from nmt.data.prepare import prepare


def config(tmp_path, corpus, *extra):
    return load_config(None, [*small_overrides(tmp_path / "run", corpus), *extra])


def texts(ds):
    return list(zip(ds["src"], ds["tgt"], strict=True))


def test_cleaning_counts_and_test_split_untouched(tmp_path):
    pairs = make_pairs(100)
    train = pairs + [("", "leer"), ("empty", "  "), ("word " * 40, "Wort " * 40),
                     ("a", "b c d e f g h i j k l m n o p")]
    corpus = {"train": write_text_corpus(tmp_path / "c" / "train", train),
              "valid": write_text_corpus(tmp_path / "c" / "valid", pairs[:5] + [("", "x")]),
              "test": write_text_corpus(tmp_path / "c" / "test", [("", ""), *pairs[:5]])}
    prepared = prepare(config(tmp_path, corpus, "data.max_len=30", "data.max_ratio=3"))
    stats = prepared.stats
    assert stats["train"].total == 104 and stats["train"].kept == 100
    assert stats["train"].dropped == {"empty": 2, "too long": 1, "length ratio": 1}
    assert stats["valid"].kept == 5 and stats["valid"].dropped["empty"] == 1
    assert stats["test"].kept == 6 and len(prepared.splits["test"]) == 6
    assert prepared.splits["test"]["src"][0] == ""
    assert texts(prepared.splits["train"]) == pairs
    row = prepared.splits["train"][0]
    tok = prepared.tgt_tok
    assert row["tgt_ids"][0] == tok.bos_id and row["tgt_ids"][-1] == tok.eos_id
    assert row["src_ids"][-1] == tok.eos_id and row["src_len"] == len(row["src_ids"])
    assert tok.decode(row["tgt_ids"]) == pairs[0][1]


def test_cache_reused_then_invalidated_by_tokenizer_and_data(tmp_path, text_corpus):
    prepare(config(tmp_path, text_corpus))
    cache = tmp_path / "run" / "cache"
    first = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.arrow")}
    assert any(n.startswith("train-") for n in first)
    prepare(config(tmp_path, text_corpus))  # same data and tokenizer: nothing re-encoded
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.arrow")} == first
    spm_mtime = (tmp_path / "run" / "spm.model").stat().st_mtime_ns
    # a different tokenizer: new encoded files
    prepare(config(tmp_path, text_corpus, "tokenizer.type=bpe"))
    second = {p.name for p in cache.glob("*.arrow")}
    assert second - set(first)
    assert (tmp_path / "run" / "spm.model").stat().st_mtime_ns != spm_mtime
    # changed data (same tokenizer settings): new files again, with the new content
    write_text_corpus(text_corpus["valid"], make_pairs(30, seed=9))
    prepared = prepare(config(tmp_path, text_corpus, "tokenizer.type=bpe"))
    assert {p.name for p in cache.glob("valid-*.arrow")} - second
    assert texts(prepared.splits["valid"]) == make_pairs(30, seed=9)


def test_null_fields_count_as_empty_pairs(tmp_path):
    path = tmp_path / "n.jsonl"
    rows = [{"en": e, "de": d} for e, d in make_pairs(60)] + [{"en": None, "de": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    prepared = prepare(load_config(None, [f"output_dir={tmp_path / 'run'}", "data.format=jsonl",
                                          f"data.train={path}", "tokenizer.vocab_size=400",
                                          "tokenizer.hard_vocab_limit=false"]))
    assert prepared.stats["train"].dropped["empty"] == 1 and prepared.stats["train"].kept == 60


def test_encoded_split_keeps_row_numbers_not_copies(tmp_path, text_corpus):
    pairs = make_pairs(60)
    train = pairs[:10] + [("", "leer")] + pairs[10:] + [("word " * 40, "Wort " * 40)]
    corpus = {**text_corpus, "train": write_text_corpus(tmp_path / "c" / "train", train)}
    prepared = prepare(config(tmp_path, corpus, "data.max_len=30"))
    split = prepared.splits["train"]
    assert isinstance(split, EncodedSplit)
    assert len(split.dataset) == 62 and len(split) == 60
    assert split.rows.dtype == np.int64 and split.rows.tolist() == [*range(10), *range(11, 61)]
    assert split.dataset.data.column("drop").to_numpy()[split.rows].tolist() == [KEEP] * 60
    src_len, tgt_len = split.lengths()
    assert src_len.tolist() == list(split["src_len"]) and len(tgt_len) == 60
    assert split[10]["src"] == pairs[10][0]


def test_cache_dir_defaults_to_the_run_directory(tmp_path, text_corpus):
    assert cache_dir(config(tmp_path, text_corpus)) == tmp_path / "run" / "cache"
    assert cache_dir(config(tmp_path, text_corpus, f"data.cache_dir={tmp_path / 'c'}")) == \
        tmp_path / "c"
