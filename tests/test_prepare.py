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
