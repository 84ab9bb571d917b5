"""Lexically constrained beam search on tiny random models: every output holds its terms, the
search without terms is the unconstrained search, a wide beam finds the best output that holds
them, and it runs through ensembles and the one decoding path."""

import itertools

import pytest
import torch

from nmt.config import DecodingConfig
from nmt.data.tokenizer import EOS_ID
from nmt.models.constraints import Progress, allocate
from nmt.models.search import beam_search, constrained_beam_search, decode_all
from nmt.models.seq2seq import Ensemble
from tests.test_search import random_model, sequence_log_prob, sources


def contains(tokens: list[int], term: list[int]) -> bool:
    return any(tokens[i:i + len(term)] == term for i in range(len(tokens) - len(term) + 1))


def test_progress_tracks_terms_and_drops_a_half_placed_one():
    terms = [[5, 6, 7], [9]]
    p = Progress((False, False))
    p = p.advance(5, terms)
    assert (p.current, p.placed, p.tokens_met(terms)) == (0, 1, 1)
    assert p.next_tokens(terms) == {5, 6, 9}
    p = p.advance(9, terms)  # leaves the first term half placed: its progress is dropped
    assert p.met == (False, True) and p.current == -1 and p.tokens_met(terms) == 1
    for token in (5, 6, 7):
        p = p.advance(token, terms)
    assert p.met == (True, True) and p.tokens_met(terms) == 4 and p.next_tokens(terms) == set()


def test_allocation_gives_each_bank_its_share_then_the_best_of_the_rest():
    cands = [(-1.0, 0, 10, None, 0), (-1.5, 0, 11, None, 0), (-2.0, 1, 12, None, 0),
             (-5.0, 1, 13, None, 2), (-9.0, 0, 14, None, 1)]
    chosen = allocate(cands, 3, 3)  # one slot per bank
    assert sorted(c[2] for c in chosen) == [10, 13, 14]
    chosen = allocate([c for c in cands if c[4] == 0], 3, 3)  # empty banks: slots to the rest
    assert [c[2] for c in chosen] == [10, 11, 12]


@pytest.mark.parametrize("seed", range(6))
def test_every_output_holds_its_terms(seed):
    model = random_model(vocab=14, seed=seed)
    src, src_len = sources([5, 7, 4, 6], vocab=14, seed=seed)
    g = torch.Generator().manual_seed(seed)
    terms = [[torch.randint(4, 14, (int(n),), generator=g).tolist()
              for n in torch.randint(1, 4, (int(m),), generator=g)]
             for m in torch.randint(0, 3, (4,), generator=g)]
    results = constrained_beam_search(model, src, src_len, terms, beam_size=3, max_len_a=2.0,
                                      max_len_b=8, n_best=2)
    for sentence_terms, hyps in zip(terms, results, strict=True):
        assert hyps
        for term in sentence_terms:
            assert contains(hyps[0].tokens, term), (hyps[0].tokens, term)
        assert EOS_ID not in hyps[0].tokens


@pytest.mark.parametrize("alpha,reward", [(1.0, 0.0), (0.0, 0.3)])
def test_without_terms_it_is_the_unconstrained_search(alpha, reward):
    model = random_model(seed=3)
    src, src_len = sources([3, 6, 5, 8, 4])
    plain = beam_search(model, src, src_len, beam_size=4, alpha=alpha, word_reward=reward,
                        n_best=3, stopping="exact")  # a glossary search stops exact
    constrained = constrained_beam_search(model, src, src_len, [[]] * 5, beam_size=4,
                                          alpha=alpha, word_reward=reward, n_best=3)
    assert [[h.tokens for h in hyps] for hyps in constrained] == \
        [[h.tokens for h in hyps] for hyps in plain]
    assert [[round(h.score, 5) for h in hyps] for hyps in constrained] == \
        [[round(h.score, 5) for h in hyps] for hyps in plain]


def test_a_wide_beam_finds_the_best_output_that_holds_the_term():
    """Exhaustive: every output of up to 4 tokens from a 7-token vocabulary that holds the term,
    scored by the teacher-forced model; the constrained search with a wide beam finds the best."""
    vocab = 7
    model = random_model(vocab=vocab, seed=5)
    src, src_len = sources([4], vocab=vocab, seed=2)
    term = [5, 4]
    best, best_score = None, float("-inf")
    for n in range(2, 5):
        for tokens in itertools.product(range(4, vocab), repeat=n):
            if contains(list(tokens), term):
                score = sequence_log_prob(model, src, src_len, list(tokens))
                if score > best_score:
                    best, best_score = list(tokens), score
    found = constrained_beam_search(model, src, src_len, [[term]], beam_size=40, alpha=0.0,
                                    max_len_a=0.0, max_len_b=5)[0][0]
    assert found.tokens == best
    assert found.log_prob == pytest.approx(best_score, abs=1e-4)


def test_terms_through_an_ensemble_and_decode_all_leave_other_lines_alone():
    ensemble = Ensemble([random_model(seed=1), random_model(seed=2)]).eval()
    lines = [sources([n], seed=n)[0][0].tolist() for n in (4, 6, 5, 7)]
    options = DecodingConfig(beam_size=3, max_len_a=2.0, max_len_b=6)
    plain = decode_all(ensemble, lines, options, torch.device("cpu"), None)
    terms = [[], [[7, 8]], [], [[9], [4, 4]]]
    bound = decode_all(ensemble, lines, options, torch.device("cpu"), None, constraints=terms)
    for index, sentence_terms in enumerate(terms):
        if not sentence_terms:
            assert bound[index][0].tokens == plain[index][0].tokens
        for term in sentence_terms:
            assert contains(bound[index][0].tokens, term)


# --------------------------------------------------------------------------- glossaries


def test_glossary_finds_whole_terms_longest_first(tmp_path):
    from nmt.inference.glossary import Glossary

    path = tmp_path / "terms.tsv"
    path.write_text("# UI names\nFile\tDatei\nFile Manager\tDateiverwaltung\n\n"
                    "Save As\tSpeichern unter\n", encoding="utf-8")
    glossary = Glossary.read(path)
    assert len(glossary) == 3
    assert glossary.find("Open the File Manager, then File and Save As.") == [
        ("File Manager", "Dateiverwaltung"), ("File", "Datei"), ("Save As", "Speichern unter")]
    assert glossary.find("Profile files") == [] and glossary.find("file") == []


@pytest.mark.parametrize("text,message", [("File Datei\n", "line 1: expected"),
                                          ("a\tb\n\tc\n", "line 2: expected"),
                                          ("# nothing\n", "no entries")])
def test_a_bad_glossary_names_its_line(tmp_path, text, message):
    from nmt.errors import DataError
    from nmt.inference.glossary import Glossary

    path = tmp_path / "terms.tsv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        Glossary.read(path)


def nmt(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "nmt", *args], capture_output=True,
                          timeout=120)


def test_translate_with_a_glossary_places_terms_and_reports_the_rest(trained_reverse, tmp_path):
    """The reverse model writes 'c b a' for 'a b c'; the glossary makes every line with the
    source term 'a' hold 'h h', leaves the other lines as they were without it, and reports
    a term too long for the output limit (exit 1 with --glossary-strict)."""
    (tmp_path / "terms.tsv").write_text("a\th h\nd\tb c d e f g h a b c\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("a b c\nb c e\nc a e f\nd\n", encoding="utf-8")
    plain = nmt("translate", "-m", str(trained_reverse), "-i", str(tmp_path / "in.txt"), "-q")
    assert plain.returncode == 0, plain.stderr
    args = ["translate", "-m", str(trained_reverse), "-i", str(tmp_path / "in.txt"), "-q",
            "--glossary", str(tmp_path / "terms.tsv")]
    proc = nmt(*args)
    assert proc.returncode == 0, proc.stderr
    out, before = proc.stdout.decode().splitlines(), plain.stdout.decode().splitlines()
    assert "h h" in out[0] and "h h" in out[2]
    assert out[1] == before[1]  # no term: the search without a glossary, byte for byte
    assert b"line 4: glossary term 'd' -> 'b c d e f g h a b c' could not be placed" \
        in proc.stderr
    strict = nmt(*args, "--glossary-strict")
    assert strict.returncode == 1 and strict.stdout == proc.stdout


def test_terms_with_copy_attention():
    from nmt.config import ModelConfig
    from nmt.models.seq2seq import build_model

    torch.manual_seed(4)
    model = build_model(ModelConfig(embed_size=8, hidden_size=8, decoder_hidden_size=8,
                                    dropout=0.0, copy_attention=True, tie_embeddings=True),
                        14, 14).eval()
    src, src_len = sources([5, 6, 4], vocab=14, seed=9)
    terms = [[[7, 8]], [[13]], [[5], [6, 6]]]
    results = constrained_beam_search(model, src, src_len, terms, beam_size=4, max_len_a=2.0,
                                      max_len_b=6)
    for sentence_terms, hyps in zip(terms, results, strict=True):
        for term in sentence_terms:
            assert contains(hyps[0].tokens, term)


def test_terms_past_the_limit_or_outside_the_vocabulary_are_not_placed(trained_reverse):
    """The reverse model's vocabulary is a-h: a term with 'z' cannot be written; terms past
    MAX_TERM_PIECES pieces on one line are reported, not searched for."""
    from nmt.inference.glossary import Glossary
    from nmt.inference.translator import MAX_TERM_PIECES, Translator

    translator = Translator.load(trained_reverse)
    out = translator.translate(["a b c"], glossary=Glossary([("a", "z z")]))
    assert [(m.index, m.source) for m in translator.unplaced] == [(0, "a")]
    assert out == translator.translate(["a b c"])
    long_term = " ".join(["h"] * (MAX_TERM_PIECES + 1))
    translator.translate(["a b c"], glossary=Glossary([("b", long_term)]))
    assert [m.source for m in translator.unplaced] == ["b"]
