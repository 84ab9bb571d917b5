"""The prepare stage: tokenizer training, re-use and layouts, and the errors that stop it."""

import os

import pytest
from conftest import small_overrides, write_text_corpus

from nmt.config import load_config
from nmt.data.prepare import prepare
from nmt.errors import DataError


def config(tmp_path, corpus, *extra):
    return load_config(None, [*small_overrides(tmp_path / "run", corpus), *extra])


def test_separate_tokenizers(tmp_path, text_corpus):
    prepared = prepare(config(tmp_path, text_corpus, "tokenizer.joint=false"))
    assert prepared.src_tok is not prepared.tgt_tok
    assert (tmp_path / "run" / "src.spm.model").is_file()
    assert (tmp_path / "run" / "tgt.spm.model").is_file()
    assert "vocabulary: source" in prepared.summary()


def test_cleaning_everything_away_is_an_error(tmp_path):
    corpus = {"train": write_text_corpus(tmp_path / "c" / "train", [("", "")] * 3)}
    with pytest.raises(DataError, match="no non-empty pairs"):
        prepare(load_config(None, [f"output_dir={tmp_path / 'run'}",
                                   f"data.train={corpus['train']}"]))


def test_switching_tokenizer_layout_removes_the_old_files(tmp_path, text_corpus):
    prepare(config(tmp_path, text_corpus))
    assert (tmp_path / "run" / "spm.model").is_file()
    prepared = prepare(config(tmp_path, text_corpus, "tokenizer.joint=false"))
    assert not (tmp_path / "run" / "spm.model").exists()
    from nmt.data.tokenizer import load_from_dir

    src, tgt = load_from_dir(tmp_path / "run")
    assert src is not tgt and src.model_bytes == prepared.src_tok.model_bytes


def test_trained_run_keeps_its_tokenizer(tmp_path, text_corpus):
    first = prepare(config(tmp_path, text_corpus))
    (tmp_path / "run" / "trainer_state.pt").write_bytes(b"")  # a model was trained here
    os.utime(f"{text_corpus['train']}.en")  # touched corpus: new fingerprint, same settings
    again = prepare(config(tmp_path, text_corpus))
    assert again.src_tok.model_bytes == first.src_tok.model_bytes
    with pytest.raises(DataError, match="holds a trained model whose tokenizer"):
        prepare(config(tmp_path, text_corpus, "tokenizer.type=bpe"))


@pytest.mark.parametrize("least, expected", [(1, 380), (10**9, 300)])
def test_vocab_size_null_is_picked_by_the_corpus_size(tmp_path, text_corpus, monkeypatch, caplog,
                                                      least, expected):
    """``tokenizer.vocab_size: null`` trains SentencePiece with the size the rule gives the
    training split's number of pairs, and says so."""
    import logging

    from nmt.data import prepare as stage

    asked = []
    real = stage.train_sentencepiece
    monkeypatch.setattr(stage, "VOCAB_BY_PAIRS", ((least, 380), (0, 300)))
    monkeypatch.setattr(stage, "train_sentencepiece",
                        lambda lines, cfg: asked.append(cfg.vocab_size) or real(lines, cfg))
    with caplog.at_level(logging.INFO, logger="nmt.data.prepare"):
        prepared = prepare(config(tmp_path, text_corpus, "tokenizer.vocab_size=null"))
    assert asked == [expected]
    assert prepared.src_tok.vocab_size <= expected
    assert f"a vocabulary of {expected} pieces for" in caplog.text
