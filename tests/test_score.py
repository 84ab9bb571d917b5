"""Forced decoding (nmt score): a translation's score is the one beam search gave it."""

import subprocess
import sys

import pytest
from conftest import PRECISION

from nmt.inference.translator import Translator


def lines_of(prefix, side, n=40):
    return (prefix.parent / f"{prefix.name}.{side}").read_text(encoding="utf-8").splitlines()[:n]


def test_forced_decoding_equals_the_search_log_probability(trained_reverse, reverse_task):
    translator = Translator.load(trained_reverse, precision="fp32")
    sources = lines_of(reverse_task["test"], "src")
    # length penalty 0 and no word reward: the search's score is its log-probability
    nbest = translator.translate_nbest(sources, beam_size=4, n_best=3, length_penalty=0.0,
                                       word_reward=0.0)
    pairs = [(src, text, score) for src, hyps in zip(sources, nbest, strict=True)
             for text, score in hyps]
    scored = translator.score([p[0] for p in pairs], [p[1] for p in pairs])
    for (_, text, score), forced in zip(pairs, scored, strict=True):
        assert forced.log_prob == pytest.approx(score, abs=1e-4), text
        assert forced.pieces[-1] == "</s>" and len(forced.token_log_probs) == len(forced.pieces)
        assert forced.log_prob == pytest.approx(sum(forced.token_log_probs))
    # a reference scores below the model's own best, a wrong one far below
    refs = lines_of(reverse_task["test"], "tgt")
    best = translator.score(sources, [hyps[0][0] for hyps in nbest])
    wrong = translator.score(sources, [" ".join(reversed(r.split())) for r in refs])
    assert all(w.log_prob < b.log_prob for w, b in zip(wrong, best, strict=True))


def test_nmt_score_writes_one_line_per_pair(tmp_path, trained_reverse, reverse_task):
    sources = lines_of(reverse_task["test"], "src", 5)
    refs = lines_of(reverse_task["test"], "tgt", 5)
    (tmp_path / "src").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("\n".join(refs) + "\n", encoding="utf-8")
    precision = ["--precision", PRECISION] if PRECISION else []
    proc = subprocess.run([sys.executable, "-m", "nmt", "score", "-m", str(trained_reverse),
                           "--src", str(tmp_path / "src"), "--hyp", str(tmp_path / "hyp"),
                           "--token-scores", "--normalize", *precision],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    assert len(rows) == 5
    for row in rows:
        total, tokens = row.split("\t")
        values = [float(t.rsplit("=", 1)[1]) for t in tokens.split(" ")]
        assert tokens.split(" ")[-1].startswith("</s>=")
        assert float(total) == pytest.approx(sum(values) / len(values), abs=1e-5)
        assert float(total) <= 0
    (tmp_path / "short").write_text("a\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "nmt", "score", "-m", str(trained_reverse),
                           "--src", str(tmp_path / "src"), "--hyp", str(tmp_path / "short")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "has 5 lines but" in proc.stderr
    assert proc.stderr.count("\n") == 1
