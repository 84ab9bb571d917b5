"""Translator API and the nmt translate / encode / evaluate commands on a reverse-task model."""

import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nmt.cli import main
from nmt.errors import ConfigError
from nmt.inference.translator import Translator, split_long_line


@pytest.fixture(scope="module")
def model_dir(trained_reverse):
    """The session's reverse-task model (conftest.trained_reverse: data.max_len 40, a valid
    split and no test split); tests that write into it copy it first."""
    return trained_reverse


def nmt(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "nmt", *args], input=stdin,
                          capture_output=True, timeout=120)


def test_translator_reverses_and_keeps_order(model_dir):
    translator = Translator.load(model_dir)
    lines = ["a b c", "", "h g f e d", "   ", "d d e"]  # lengths seen in training (3-8)
    assert translator.translate(lines) == ["c b a", "", "d e f g h", "", "e d d"]
    assert translator.translate(lines, beam_size=1) == ["c b a", "", "d e f g h", "", "e d d"]
    nbest = translator.translate_nbest(lines, beam_size=4, n_best=3)
    assert [len(h) for h in nbest] == [3] * 5
    assert nbest[0][0][0] == "c b a" and nbest[0][0][1] >= nbest[0][1][1] >= nbest[0][2][1]


def test_a_word_reward_lengthens_the_output_and_scores_it(model_dir, tmp_path):
    """The reverse model stops right after the reversed input; a large reward per token makes
    beam search prefer longer complete outputs, and the score includes the reward."""
    translator = Translator.load(model_dir)
    lines = ["a b c", "h g f e d"]
    plain = translator.translate_nbest(lines, beam_size=4)
    rewarded = translator.translate_nbest(lines, beam_size=4, word_reward=20.0)
    assert [h[0][0] for h in plain] == ["c b a", "d e f g h"]
    for (p_text, p_score), (r_text, r_score) in zip((h[0] for h in plain),
                                                    (h[0] for h in rewarded), strict=True):
        assert len(r_text.split()) > len(p_text.split())
        assert r_score > p_score
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["translate", "-m", str(model_dir), "--beam-size", "4", "--word-reward", "20",
                 "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "-q"]) == 0
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == \
        [h[0][0] for h in rewarded]


def test_early_and_exact_stopping_find_the_same_translations_of_a_trained_model(model_dir):
    """On the trained reverse task the default (early) stopping finds the translations, and
    their scores, that exact stopping finds, and never searches more rows: it stops a sentence
    whenever exact stopping would (its bound is one of the exact bound's terms). This model is
    so sure of its EOS that both stop almost together; test_search shows the steps saved."""
    translator = Translator.load(model_dir, precision="fp32")
    lines = [" ".join("abcdefgh"[(i * 3 + j) % 8] for j in range(2 + i % 9)) for i in range(40)]
    steps, step = [], translator.model.step  # rows searched, each step
    translator.model.step = lambda tokens, state: steps.append(len(tokens)) or step(tokens, state)
    found = {}
    for stopping in ("early", "exact"):
        steps.clear()
        found[stopping] = (translator.translate_nbest(lines, beam_size=4, word_reward=0.5,
                                                      stopping=stopping), sum(steps))
    (early, early_steps), (exact, exact_steps) = found["early"], found["exact"]
    assert [h[0][0] for h in early] == [h[0][0] for h in exact]
    assert [h[0][1] for h in early] == pytest.approx([h[0][1] for h in exact], abs=1e-5)
    reversed_lines = [" ".join(reversed(line.split())) for line in lines]
    assert sum(h[0][0] == r for h, r in zip(early, reversed_lines, strict=True)) >= 36  # learnt
    assert early_steps <= exact_steps


def test_split_long_line_packs_sentences_then_words():
    words = lambda text: len(text.split())  # noqa: E731 - a piece per word
    line = "One two three. Four five six seven! Eight nine ten eleven twelve thirteen. Ok?"
    parts = split_long_line(line, words, 5)
    assert parts == ["One two three.", "Four five six seven!", "Eight nine ten eleven twelve",
                     "thirteen. Ok?"]
    assert split_long_line("fits as it is", words, 5) == ["fits as it is"]
    assert split_long_line("a. b. c. d.", words, 2) == ["a. b.", "c. d."]


def test_long_lines_are_split_by_default_or_cut_when_asked(model_dir, tmp_path):
    """A line over data.max_len pieces: translated in parts joined with a space (nothing
    lost, nothing reported; n-best joins the parts' k-th hypotheses), or from its first
    max_len pieces with ``truncate`` (reported, by its own line number). A single word over
    the limit is still cut, and reported by the number of the line it is in."""
    translator = Translator.load(model_dir)
    limit = translator.config.data.max_len
    long = ". ".join(" ".join("hgfedcba"[(i + j) % 8] for j in range(5))
                     for i in range(limit // 5 + 4)) + "."  # sentences of 5 words
    parts = split_long_line(long, lambda text: translator.source_ids(text)[1], limit)
    assert len(parts) >= 2
    lines = ["a b c", long, "", "h g f e d"]
    split = translator.translate(lines, beam_size=2)
    assert not translator.truncated
    assert split[1] == " ".join(translator.translate(parts, beam_size=2))
    assert split[0] == "c b a" and split[2] == "" and split[3] == "d e f g h"
    nbest = translator.translate_nbest(lines, beam_size=2, n_best=2)[1]
    per_part = translator.translate_nbest(parts, beam_size=2, n_best=2)
    assert [text for text, _ in nbest] == [" ".join(h[k][0] for h in per_part) for k in (0, 1)]
    assert nbest[1][1] == pytest.approx(sum(h[1][1] for h in per_part) / len(parts))
    cut = translator.translate(lines, beam_size=2, long_lines="truncate")
    assert [(c.index, c.kept) for c in translator.truncated] == [(1, limit)]
    assert len(cut[1].split()) < len(split[1].split())
    word = "abcdefgh" * 8  # one word of more than 40 pieces: split cannot help
    assert translator.source_ids(word)[1] > limit
    translator.translate(["a b", "", f"{long} {word} c"], beam_size=2)
    assert [(c.index, c.kept) for c in translator.truncated] == [(2, limit)]
    with pytest.raises(ConfigError, match="not one of split, truncate"):
        translator.translate(lines, long_lines="drop")
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["translate", "-m", str(model_dir), "--beam-size", "2", "-i",
                 str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "-q"]) == 0
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == split


@pytest.mark.slow
def test_line_contract_through_the_command(model_dir, tmp_path):
    text = "a b c\r\n\n   \nd e f\nunseen XYZ ✓ 😀\n\tb\nh g f"  # CRLF, blanks, no final \n
    (tmp_path / "in.txt").write_bytes(text.encode())
    proc = nmt("translate", "-m", str(model_dir), "-i", str(tmp_path / "in.txt"), "-o",
               str(tmp_path / "out.txt"), "-q")
    assert proc.returncode == 0, proc.stderr
    out = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert out[-1] == "" and len(out) - 1 == 7
    assert out[0] == "c b a" and out[1] == "" and out[2] == "" and out[3] == "f e d"
    assert out[6] == "f g h"
    assert not list(tmp_path.glob(".out.txt.*"))  # no temporary file left behind
    piped = nmt("translate", "-m", str(model_dir), stdin=b"a b c\n\nc b a\n")
    assert piped.returncode == 0 and piped.stdout.decode() == "c b a\n\na b c\n"


@pytest.mark.slow
def test_invalid_utf8_is_named_unless_replaced(model_dir):
    proc = nmt("translate", "-m", str(model_dir), stdin=b"a b\nc \xff d\n")
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"line 2 is not valid UTF-8" in proc.stderr and b"Traceback" not in proc.stderr
    proc = nmt("translate", "-m", str(model_dir), "--errors", "replace", stdin=b"a b\nc \xff d\n")
    assert proc.returncode == 0 and len(proc.stdout.decode().splitlines()) == 2


@pytest.mark.slow
def test_long_lines_are_truncated_and_reported_when_asked(model_dir):
    long_line = " ".join("abcdefgh"[i % 8] for i in range(60))
    proc = nmt("translate", "-m", str(model_dir), "--beam-size", "1", "--long-lines", "truncate",
               stdin=f"a b\n{long_line}\n".encode())
    assert proc.returncode == 0
    assert len(proc.stdout.decode().splitlines()) == 2
    assert b"line 2:" in proc.stderr and b"first 40" in proc.stderr


@pytest.mark.slow
def test_nbest_output(model_dir):
    proc = nmt("translate", "-m", str(model_dir), "--beam-size", "3", "--n-best", "2",
               stdin=b"a b c\n\n")
    rows = proc.stdout.decode().splitlines()
    assert len(rows) == 4 and rows[0].split("\t")[0] == "c b a"
    assert float(rows[0].split("\t")[1]) >= float(rows[1].split("\t")[1])


@pytest.mark.parametrize("args, message", [
    (["--beam-size", "0"], "--beam-size: must be at least 1"),
    (["--beam-size", "2", "--n-best", "3"], "cannot exceed"),
    (["--max-len-b", "-1"], "--max-len-b: must be at least 0"),
    (["--word-reward", "nan"], "--word-reward: must be a finite number"),
    (["-m", "/nonexistent/model"], "model directory not found"),
])
def test_bad_translate_values_exit_2(model_dir, args, message, capsys, monkeypatch):
    # in this process: the command's exit code and message, without starting Python again
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a\n"), encoding="utf-8"))
    argv = ["translate", *(args if args[0] == "-m" else ["-m", str(model_dir), *args])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.slow
def test_encode_writes_one_vector_per_line(model_dir, tmp_path):
    (tmp_path / "in.txt").write_text("a b c\n\nh g\na b c\n", encoding="utf-8")
    proc = nmt("encode", "-m", str(model_dir), "-i", str(tmp_path / "in.txt"), "-o",
               str(tmp_path / "v.npy"), "-q")
    assert proc.returncode == 0, proc.stderr
    vectors = np.load(tmp_path / "v.npy")
    translator = Translator.load(model_dir)
    assert vectors.shape == (4, 2 * translator.config.model.hidden_size)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors[0], vectors[3], atol=1e-5)
    np.testing.assert_allclose(vectors[2], translator.encode_sentences(["h g"])[0], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2])


@pytest.mark.slow
def test_evaluate_translates_and_scores(model_dir, tmp_path):
    # lengths seen in training (3-8): "d e" came out wrong under bf16 autocast
    (tmp_path / "src.txt").write_text("a b c\nh g f e d\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("c b a\nd e f g h\n", encoding="utf-8")
    proc = nmt("evaluate", "-m", str(model_dir), "--src", str(tmp_path / "src.txt"), "--ref",
               str(tmp_path / "ref.txt"), "--hyp-out", str(tmp_path / "hyp.txt"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["chrf"] == pytest.approx(100.0)
    assert (tmp_path / "hyp.txt").read_text(encoding="utf-8") == "c b a\nd e f g h\n"


def test_int8_quantization_keeps_the_translations(model_dir):
    lines = ["a b c", "h g f e d", "d d e f", ""]
    fp32 = Translator.load(model_dir).translate(lines)
    int8 = Translator.load(model_dir, quantize="int8")
    assert any("quantized" in type(m).__module__ for m in int8.model.modules())
    assert int8.translate(lines) == fp32


@pytest.mark.slow
def test_attention_maps(model_dir, tmp_path):
    translator = Translator.load(model_dir)
    (src, tgt, weights), empty = translator.attention(["a b c", ""], ["c b a", ""])
    assert weights.shape == (len(tgt), len(src)) and tgt[-1] == "</s>" and src[-1] == "</s>"
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert empty[0] == []
    long = " ".join("abcdefgh"[i % 8] for i in range(60))  # over data.max_len: split
    proc = nmt("translate", "-m", str(model_dir), "--attention-dir", str(tmp_path / "att"),
               stdin=f"a b c\n\nh g f\n{long}\n".encode())
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in (tmp_path / "att").iterdir())
    assert pngs == ["000001.png", "000003.png"]  # none for the line translated in parts
    assert b"line 4: translated in parts, so it has no attention map" in proc.stderr
    assert (tmp_path / "att" / "000001.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_evaluate_a_split_named_in_the_model_config(model_dir, tmp_path):
    model_dir = shutil.copytree(model_dir, tmp_path / "model")  # hypotheses are written into it
    proc = nmt("evaluate", "-m", str(model_dir), "--split", "valid", "--beam-size", "1",
               "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sentences"] == 100
    assert (model_dir / "valid.beam1.hyp").read_text(encoding="utf-8").count("\n") == 100


def test_evaluate_a_split_the_model_config_does_not_name(model_dir, capsys):
    before = sorted(model_dir.rglob("*"))
    assert main(["evaluate", "-m", str(model_dir), "--split", "test"]) == 2
    assert "names no test split" in capsys.readouterr().err
    assert sorted(model_dir.rglob("*")) == before  # the shared model directory is untouched


MMAPPED_AFTER_64MB = """
import ctypes, sys
import torch
from nmt.device import keep_large_allocations

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
print(keep_large_allocations())
before = libc.mallinfo2().hblkhd
x = torch.empty(16 << 20)  # 64 MiB
print((libc.mallinfo2().hblkhd - before) >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keep_large_allocations_keeps_a_64mb_tensor_in_the_heap():
    """glibc hands a 64 MiB allocation fresh pages of its own (zero-filled again every step of a
    batched search) unless keep_large_allocations raised its thresholds; NMT_MALLOC_TUNING=0
    leaves them."""
    import os
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")

    def run(tuning: str) -> list[str]:
        env = {**os.environ, "NMT_MALLOC_TUNING": tuning}
        out = subprocess.run([sys.executable, "-c", MMAPPED_AFTER_64MB], env=env, text=True,
                             capture_output=True, timeout=120, check=True)
        return out.stdout.split()

    assert run("0") == ["False", "64"]  # glibc's default: its own mapping
    assert run("1") == ["True", "0"]  # from the heap
