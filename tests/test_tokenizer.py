"""SentencePiece stage: special ids, round trips in several scripts, training errors."""

import pytest
import sentencepiece as spm
from conftest import REAL_LINES, make_pairs

from nmt.config import TokenizerConfig
from nmt.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    load_from_dir,
    sample_lines,
    train_sentencepiece,
)
from nmt.errors import ConfigError, NMTError


def corpus() -> list[str]:
    lines = [s for pair in make_pairs(300) for s in pair]
    return lines + REAL_LINES * 3


@pytest.fixture(scope="module")
def unigram() -> Tokenizer:
    """A model with SentencePiece's own rule, NFKC (ours, nmt_nfc, is the default)."""
    return train_sentencepiece(corpus(), TokenizerConfig(vocab_size=400, hard_vocab_limit=False,
                                                         normalization="nmt_nfkc"))


def test_special_ids_are_fixed_and_taken_from_the_model(unigram):
    assert (unigram.pad_id, unigram.unk_id, unigram.bos_id, unigram.eos_id) == (
        PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert unigram.sp.pad_id() == PAD_ID and unigram.sp.eos_id() == EOS_ID
    assert unigram.vocab_size <= 400


@pytest.mark.parametrize("line", REAL_LINES + ["unseen 🦜 漢字 Ωmega  with   spaces "])
def test_round_trip_returns_normalised_text(unigram, line):
    ids = unigram.encode(line, add_bos=True, add_eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert UNK_ID not in ids  # byte fallback spells unseen characters as bytes
    assert unigram.decode(ids) == unigram.normalize(line)


def test_normalisation_is_nfkc_with_collapsed_spaces(unigram):
    assert unigram.normalize("  ｆｕｌｌ   width ﬁ ") == "full width fi"


@pytest.fixture(scope="module")
def nfc() -> Tokenizer:
    return train_sentencepiece(corpus(), TokenizerConfig(vocab_size=400, hard_vocab_limit=False,
                                                         normalization="nmt_nfc"))


KEPT_BY_NFC = ["Drucken… und Speichern…", "x² + ½ = ¾ ﬁle ™", "« a\u00a0b » 10\u202f%",
               "ｆｕｌｌ ｗｉｄｔｈ ＡＢＣ", "Ωmega Å ǖ café", "👩\u200d💻 ٱلعربية\u200c", "Ⅻ ① ㎏"]


@pytest.mark.parametrize("line", KEPT_BY_NFC)
def test_nmt_nfc_gives_back_every_nfc_text_exactly(nfc, unigram, line):
    """What NFKC rewrites (ellipsis, superscripts, fractions, ligatures, full-width forms,
    no-break spaces) comes back as it went in, where the NFKC model rewrites it."""
    import unicodedata

    assert unicodedata.is_normalized("NFC", line)
    assert nfc.decode(nfc.encode(line)) == line
    assert nfc.normalize(line) == line
    if unicodedata.normalize("NFKC", line) != line:
        assert unigram.decode(unigram.encode(line)) != line


def test_nmt_nfc_composes_collapses_spaces_and_drops_controls(nfc):
    assert nfc.normalize("cafe\u0301 u\u0308\u0304 \u2126") == "café ǖ Ω"  # NFC, not NFKC
    assert nfc.normalize("  a\tb\r\nc\u2028d  \u0007e\u200bf\ufeff ") == "a b c d ef"
    assert nfc.decode(nfc.encode("tab\there")) == "tab here"
    # the rule lives in the model file: a reloaded model normalises the same way
    assert Tokenizer(nfc.model_bytes).normalize("Drucken…") == "Drucken…"


def test_decode_stops_at_eos_and_drops_padding(unigram):
    ids = unigram.encode("the house", add_bos=True, add_eos=True)
    assert unigram.decode(ids + unigram.encode("tree") + [PAD_ID, PAD_ID]) == "the house"
    assert unigram.decode_batch([ids, [BOS_ID, EOS_ID]]) == ["the house", ""]


def test_encode_batch_equals_single(unigram):
    lines = REAL_LINES[:4]
    assert unigram.encode_batch(lines, add_bos=True) == [
        unigram.encode(x, add_bos=True) for x in lines]


def test_bpe_and_saving(tmp_path):
    tok = train_sentencepiece(corpus(), TokenizerConfig(type="bpe", vocab_size=450,
                                                        hard_vocab_limit=False))
    tok.save(tmp_path / "spm.model")
    src, tgt = load_from_dir(tmp_path)
    assert src is tgt
    line = "Die Größe des Fensters 🎉"
    assert src.encode(line) == tok.encode(line)
    assert src.decode(src.encode(line)) == tok.normalize(line)


@pytest.mark.parametrize("rule", ["nmt_nfc", "nmt_nfkc"])
def test_training_is_deterministic(rule):
    cfg = TokenizerConfig(vocab_size=400, hard_vocab_limit=False, threads=1, normalization=rule)
    first = train_sentencepiece(corpus(), cfg)
    assert first.model_bytes == train_sentencepiece(corpus(), cfg).model_bytes
    assert first.normalize("Drucken…") == ("Drucken…" if rule == "nmt_nfc" else "Drucken...")


def test_vocab_too_large_is_a_clear_error():
    with pytest.raises(ConfigError, match="tokenizer.vocab_size=5000 is too large"):
        train_sentencepiece(corpus()[:50], TokenizerConfig(vocab_size=5000))


def test_vocab_too_small_for_the_characters_is_a_clear_error():
    with pytest.raises(ConfigError, match="too small for the characters"):
        train_sentencepiece(corpus(), TokenizerConfig(vocab_size=300))


def test_empty_corpus_is_refused():
    with pytest.raises(NMTError, match="no sentences|empty"):
        train_sentencepiece([], TokenizerConfig(vocab_size=300, hard_vocab_limit=False))


def test_foreign_model_with_other_special_ids_is_refused(tmp_path):
    import io

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=buffer,
                                   vocab_size=100, hard_vocab_limit=False, minloglevel=2)
    (tmp_path / "other.model").write_bytes(buffer.getvalue())
    with pytest.raises(NMTError, match="special ids"):
        Tokenizer(tmp_path / "other.model")


def test_not_a_model_and_missing_model(tmp_path):
    (tmp_path / "x.model").write_bytes(b"not a model")
    with pytest.raises(NMTError, match="not a SentencePiece model"):
        Tokenizer(tmp_path / "x.model")
    with pytest.raises(NMTError, match="not found"):
        Tokenizer(tmp_path / "missing.model")
    with pytest.raises(NMTError, match="no SentencePiece model found"):
        load_from_dir(tmp_path)


def test_sample_cap_is_seeded_and_bounded():
    a = sample_lines(range(1000), 100, seed=3)
    assert len(a) == 100 and a == sorted(set(a)) and a == sample_lines(range(1000), 100, seed=3)
    assert a != sample_lines(range(1000), 100, seed=4)
    assert sample_lines(range(10), 100, seed=3) == list(range(10))


def test_tokenizer_pickles_for_worker_processes(unigram):
    import pickle

    copy = pickle.loads(pickle.dumps(unigram))
    assert copy.encode("das Haus") == unigram.encode("das Haus")
