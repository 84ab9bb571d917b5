"""Reliability and security: kill -9 and resume, non-finite updates, checkpoint rotation,
untrusted files, bad input (one line, exit 2) and the translate line contract (hypothesis).

``docs/reliability.md`` lists every case with the test that proves it.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_pairs, reverse_overrides, write_reverse_task, write_text_corpus
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from nmt.cli import main
from nmt.config import load_config
from nmt.errors import NMTError
from nmt.inference.translator import Translator
from nmt.models.weights import save_weights
from nmt.training.trainer import Trainer


@pytest.fixture(scope="module")
def copy_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy")
    # 20 validation pairs: these runs validate (and checkpoint) often but need no accuracy
    return write_reverse_task(root / "data", {"train": 3000, "valid": 20}, copy=True)


@pytest.fixture(scope="module")
def model_dir(trained_reverse):
    """The session's reverse-task model directory (conftest.trained_reverse, data.max_len 40),
    shared: tests that write into a model directory copy it first."""
    return trained_reverse


def nmt(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nmt", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- crashes and resume


@pytest.mark.slow
def test_sigkill_then_resume_ends_identical_to_an_uninterrupted_run(tmp_path, copy_task,
                                                                    request):
    steps = 60
    common = [*reverse_overrides(tmp_path / "x", copy_task)[1:], "training.precision=fp32",
              "model.dropout=0.2", "training.valid_every=10", "training.keep_last=2",
              f"training.max_steps={steps}", "-q"]

    # the uninterrupted run goes on beside the one to be killed (the second core, if idle)
    straight = tmp_path / "straight"
    straight_run = subprocess.Popen([sys.executable, "-m", "nmt", "train",
                                     f"output_dir={straight}", *common],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    request.addfinalizer(straight_run.kill)  # if the test fails before it is waited for

    killed = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-m", "nmt", "train", f"output_dir={killed}",
                              *common], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # a random instant after a random checkpoint (an update takes about 35 ms here), possibly
    # while a checkpoint or the trainer state is being written
    after = killed / "checkpoints" / f"step-{random.randrange(10, 50, 10):08d}.safetensors"
    deadline = time.time() + 240
    while not (after.exists() and (killed / "trainer_state.pt").exists()) \
            and time.time() < deadline:
        time.sleep(0.005)
    delay = random.uniform(0.0, 0.5)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    state = torch.load(killed / "trainer_state.pt", weights_only=True)
    when = f"killed at {after.name} + {delay:.2f} s"
    assert child.returncode == -signal.SIGKILL, f"finished before being {when}"
    assert 10 <= state["progress"]["step"] < steps

    _, stderr = straight_run.communicate(timeout=300)
    assert straight_run.returncode == 0, stderr
    proc = nmt("train", f"output_dir={killed}", *common, "--resume")
    assert proc.returncode == 0, proc.stderr
    final = f"checkpoints/step-{steps:08d}.safetensors"
    a, b = load_file(straight / final), load_file(killed / final)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs ({when})"
    assert _same_metrics_but_timing(straight, killed)


def _same_metrics_but_timing(a: Path, b: Path) -> bool:
    """metrics.csv rows agree on step, losses, BLEU; speed and time columns may differ."""
    import csv

    rows = [list(csv.DictReader(open(d / "metrics.csv", encoding="utf-8"))) for d in (a, b)]
    keys = ("step", "epoch", "train_loss", "lr", "valid_loss", "bleu", "chrf")
    return [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]]


class _Blowup(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):  # noqa: D102
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        return grad * math.inf


def _poisoned_trainer(tmp_path, copy_task, bad_calls, extra=()):
    """Trainer whose batch losses at the given call numbers are NaN, inf, or blow up grads."""
    config = load_config(None, [*reverse_overrides(tmp_path / "run", copy_task),
                                "training.max_steps=12", "training.valid_every=6",
                                "training.max_bad_updates=3", *extra])
    trainer = Trainer(config, quiet=True)
    original, calls = trainer.batch_loss, [0]

    def batch_loss(*args, **kwargs):
        calls[0] += 1
        loss = original(*args, **kwargs)
        kind = bad_calls.get(calls[0]) or bad_calls.get("*")
        if kind == "nan":
            loss = loss * math.nan
        elif kind == "inf":
            loss = loss + math.inf
        elif kind == "grad":
            loss = _Blowup.apply(loss)
        return loss

    trainer.batch_loss = batch_loss
    return trainer


def test_nonfinite_updates_are_skipped_and_logged(tmp_path, copy_task, caplog):
    trainer = _poisoned_trainer(tmp_path, copy_task, {3: "nan", 5: "inf", 7: "grad"})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with caplog.at_level("WARNING", logger="nmt.training.trainer"):
        progress = trainer.fit()
    assert progress.step == 12 and progress.bad_updates == 0
    assert progress.batch_in_epoch == 15  # 12 updates + 3 skipped batches consumed
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3
    assert "loss is nan" in skipped[0] and "loss is inf" in skipped[1]
    assert "non-finite gradient norm" in skipped[2]
    after = trainer.model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_run_of_nonfinite_updates_stops_with_a_clear_error(tmp_path, copy_task):
    trainer = _poisoned_trainer(tmp_path, copy_task, {n: "nan" for n in range(8, 100)})
    with pytest.raises(NMTError, match=r"training diverged: 3 updates in a row .* after update "
                                       r"7.*--resume"):
        trainer.fit()
    state = torch.load(tmp_path / "run" / "trainer_state.pt", weights_only=True)
    assert state["progress"]["step"] == 6  # the last checkpoint, intact and finite
    weights = load_file(tmp_path / "run" / "checkpoints" / "step-00000006.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nonfinite_weights_are_never_written(tmp_path):
    model = torch.nn.Linear(3, 2)
    save_weights(model, tmp_path / "w.safetensors")
    good = (tmp_path / "w.safetensors").read_bytes()
    with torch.no_grad():
        model.weight[0, 0] = math.nan
    with pytest.raises(NMTError, match="weight hold NaN or infinite values"):
        save_weights(model, tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temporary left


def test_keep_last_k_checkpoints_and_never_the_best(tmp_path, copy_task, monkeypatch):
    config = load_config(None, [*reverse_overrides(tmp_path / "run", copy_task),
                                "training.max_steps=25", "training.valid_every=5",
                                "training.keep_last=2", "training.patience=0"])
    trainer = Trainer(config, quiet=True)
    # validation BLEU peaks at update 10, then falls
    monkeypatch.setattr(trainer, "validate",
                        lambda: {"valid_loss": 1.0, "valid_ppl": math.e, "chrf": 0.0,
                                 "bleu": 50.0 - abs(trainer.progress.step - 10)})
    trainer.fit()
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step-00000010.safetensors", "step-00000020.safetensors",
                    "step-00000025.safetensors"]
    assert trainer.progress.best_step == 10
    best = load_file(tmp_path / "run" / "model.safetensors")
    at_10 = load_file(tmp_path / "run" / "checkpoints" / "step-00000010.safetensors")
    assert all(torch.equal(best[k], at_10[k]) for k in best)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    from nmt.fileio import atomic_write

    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as handle:
        handle.write("half of the new")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.mark.slow
def test_sigkill_during_translate_output_leaves_no_partial_file(model_dir, tmp_path):
    # a long input keeps the process busy; the output must be all or nothing
    rng = random.Random(0)
    lines = [" ".join(rng.choices("abcdefgh", k=8)) for _ in range(100000)]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.txt"
    out.write_text("previous\n")
    child = subprocess.Popen([sys.executable, "-m", "nmt", "translate", "-m", str(model_dir),
                              "-i", str(src), "-o", str(out), "--beam-size", "1"],
                             stderr=subprocess.PIPE)
    # kill once the progress bar shows translation under way (it counts sentences)
    seen = b""
    deadline = time.time() + 120
    while b"sent" not in seen and time.time() < deadline:
        seen += child.stderr.read1(4096)
    child.kill()
    child.communicate(timeout=60)
    assert b"sent" in seen, seen
    assert child.returncode == -signal.SIGKILL  # killed while translating
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.txt"]


# --------------------------------------------------------------------------- untrusted files


class _Exploit:
    """Unpickling this creates the marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_crafted_pickle_really_runs_code_when_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()  # so the refusals below are meaningful


def test_nonfinite_loss_with_the_fp16_gradient_scaler_is_skipped(tmp_path, copy_task):
    trainer = _poisoned_trainer(tmp_path, copy_task, {4: "nan"})
    trainer.scaler = torch.amp.GradScaler("cpu", enabled=True)  # as fp16 on CUDA uses
    progress = trainer.fit()
    assert progress.step == 12 and progress.batch_in_epoch == 13


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_crafted_pickle_as_trainer_state_or_model_is_refused(tmp_path, model_dir, writer,
                                                             capsys, monkeypatch):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"progress": _Exploit(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps(_Exploit(marker)))

    def command(*argv: object) -> tuple[int, list[str]]:
        """The command run in this process: its exit code and error lines (progress logs
        dropped); the unpickled code would run here as in its own process."""
        code = main([str(a) for a in argv])
        stderr = capsys.readouterr().err
        assert "Traceback" not in stderr
        return code, [line for line in stderr.splitlines()
                      if not re.match(r"\d\d:\d\d:\d\d INFO ", line)]

    import datasets

    datasets.disable_progress_bars()  # the command sets this before datasets is first imported
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # translate without -i reads stdin
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    shutil.copy(evil, run / "trainer_state.pt")
    code, err = command("train", "--config", run / "config.yaml", f"output_dir={run}",
                        "--resume", "-q")
    assert code == 2 and len(err) == 1 and "refused to load the trainer state" in err[0], err

    shutil.copy(evil, run / "model.safetensors")
    code, err = command("translate", "-m", run, "-i", _write(tmp_path / "in.txt", "a b c\n"))
    assert code == 2 and len(err) == 1 and "not a safetensors file" in err[0], err
    code, err = command("translate", "-m", evil)
    assert code == 2 and len(err) == 1 and "is a file: -m takes a model directory" in err[0], err
    assert not marker.exists()


def test_weights_that_do_not_match_config_or_vocabulary_name_both_sizes(tmp_path, model_dir,
                                                                         copy_task):
    wrong_config = tmp_path / "wrong_config"
    shutil.copytree(model_dir, wrong_config)
    text = (wrong_config / "config.yaml").read_text()
    (wrong_config / "config.yaml").write_text(text.replace("hidden_size: 64", "hidden_size: 48"))
    with pytest.raises(NMTError, match=r"has shape \(.*\) but the config makes \(.*\)"):
        Translator.load(wrong_config)

    wrong_vocab = tmp_path / "wrong_vocab"
    shutil.copytree(model_dir, wrong_vocab)
    other = tmp_path / "other"
    config = load_config(None, [*reverse_overrides(other, copy_task), "tokenizer.vocab_size=20",
                                "training.max_steps=1"])
    from nmt.data.prepare import prepare

    prepare(config)
    shutil.copy(other / "spm.model", wrong_vocab / "spm.model")
    with pytest.raises(NMTError, match=r"source vocabulary of the weights has \d+ entries but its "
                                       r"SentencePiece model has \d+"):
        Translator.load(wrong_vocab)


# --------------------------------------------------------------------------- bad input


def _corpus(tmp: Path, name: str, src_lines: list[str], tgt_lines: list[str]) -> Path:
    prefix = tmp / name
    Path(f"{prefix}.en").write_text("".join(x + "\n" for x in src_lines), encoding="utf-8")
    Path(f"{prefix}.de").write_text("".join(x + "\n" for x in tgt_lines), encoding="utf-8")
    return prefix


def _prepare(tmp: Path, *extra: str) -> list[str]:
    good = write_text_corpus(tmp / "good", make_pairs(60))
    return ["prepare", f"output_dir={tmp / 'run'}", "data.format=text", f"data.train={good}",
            "tokenizer.vocab_size=300", "tokenizer.hard_vocab_limit=false", *extra]


def _bad_utf8(tmp: Path) -> Path:
    prefix = _corpus(tmp, "bad", ["one", "two", "three"], ["eins", "zwei", "drei"])
    Path(f"{prefix}.en").write_bytes(b"one\ntw\xff\xfeo\nthree\n")
    return prefix


def _model_copy(tmp: Path, model: Path, edit: tuple[str, str] | None = None) -> Path:
    target = tmp / "model"
    shutil.copytree(model, target)
    if edit:
        text = (target / "config.yaml").read_text()
        assert edit[0] in text
        (target / "config.yaml").write_text(text.replace(*edit))
    return target


BAD_INPUT = {
    "missing corpus file": (
        lambda t, m: _prepare(t, f"data.train={t / 'nope'}"), "source file not found"),
    "missing config file": (
        lambda t, m: ["prepare", "--config", t / "nope.yaml"], "config file not found"),
    "missing model directory": (
        lambda t, m: ["translate", "-m", t / "nope"], "model directory not found"),
    "missing input file": (
        lambda t, m: ["translate", "-m", m, "-i", t / "nope.txt"], "cannot read"),
    "empty corpus": (
        lambda t, m: _prepare(t, f"data.train={_corpus(t, 'empty', [], [])}"),
        "the training split is empty"),
    "corpus emptied by cleaning": (
        lambda t, m: _prepare(t, f"data.train={_corpus(t, 'long', ['a ' * 30] * 5, ['b'] * 5)}",
                              "data.max_len=10"),
        "cleaning dropped every training pair"),
    "line counts differ": (
        lambda t, m: _prepare(t, f"data.train={_corpus(t, 'uneven', ['a', 'b', 'c'], ['x'])}"),
        "has 3 lines but"),
    "invalid UTF-8 in a corpus": (
        lambda t, m: _prepare(t, f"data.train={_bad_utf8(t)}"), "line 2 is not valid UTF-8"),
    "invalid UTF-8 to translate": (
        lambda t, m: ["translate", "-m", m, "-i", f"{_bad_utf8(t)}.en"],
        "line 2 is not valid UTF-8"),
    "config key typo": (
        lambda t, m: _prepare(t, "model.hiden_size=64"), "did you mean 'hidden_size'?"),
    "wrong type": (
        lambda t, m: _prepare(t, "model.hidden_size=big"),
        "model.hidden_size: expected an integer, got 'big'"),
    "invalid YAML": (
        lambda t, m: ["prepare", "--config", _write(t / "bad.yaml", "model: [1, 2\n")],
        "not valid YAML"),
    "beam size 0 (config)": (
        lambda t, m: _prepare(t, "decoding.beam_size=0"), "decoding.beam_size: must be at least 1"),
    "beam size 0 (flag)": (
        lambda t, m: ["translate", "-m", m, "--beam-size", "0"], "--beam-size: must be at least 1"),
    "negative max length": (
        lambda t, m: _prepare(t, "data.max_len=-5"), "data.max_len: must be at least 1, got -5"),
    "negative output length": (
        lambda t, m: ["translate", "-m", m, "--max-len-b", "-1"],
        "--max-len-b: must be at least 0"),
    "vocabulary smaller than the special symbols": (
        lambda t, m: _prepare(t, "tokenizer.vocab_size=3"),
        "tokenizer.vocab_size: must be at least 8"),
    "unknown flag": (
        lambda t, m: ["translate", "-m", m, "--beam-siz", "5", "--nbest", "2"],
        "nmt translate: error: unrecognized arguments: --nbest 2; did you mean --n-best?"),
    "unknown command": (lambda t, m: ["trian"], "invalid choice: 'trian'"),
    "model from a newer toolkit": (
        lambda t, m: ["translate", "-m", _model_copy(t, m, ("format_version: 1",
                                                              "format_version: 99"))],
        "format_version 99 was written by a newer version of nmt"),
    "weights that do not match the config": (
        lambda t, m: ["translate", "-m", _model_copy(t, m, ("hidden_size: 64",
                                                              "hidden_size: 32"))],
        "the weights do not match config.yaml"),
    "resume a moved run directory": (
        lambda t, m: ["train", "--config", _model_copy(t, m) / "config.yaml", "--resume"],
        "(moved or copied?): add output_dir="),
    "resume without a run": (
        lambda t, m: ["train", *reverse_overrides(t / "fresh", {"train": t / "x"}), "--resume"],
        "nothing to resume"),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gets_one_line_and_exit_2(case, tmp_path, model_dir, capsys, monkeypatch):
    import datasets

    datasets.disable_progress_bars()  # the command sets this before datasets is first imported
    build, expected = BAD_INPUT[case]
    argv = [str(a) for a in build(tmp_path, model_dir)]
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # translate without -i reads stdin
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(SystemExit) as info:
        sys.exit(main(argv))
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    # progress logs ("12:00:00 INFO nmt.data.prepare: ...") may come first; the error is one line
    err = [line for line in stderr.splitlines() if not re.match(r"\d\d:\d\d:\d\d INFO ", line)]
    assert info.value.code == 2, stderr
    assert len(err) == 1 and err[0].startswith("nmt") and expected in err[0], stderr
    assert sorted(p.name for p in model_dir.iterdir()) == before  # nothing written or lost


# --------------------------------------------------------------------------- the line contract

_LINE = st.one_of(
    st.text(alphabet="abcdefgh ", max_size=30),                       # what the model copies
    st.just(""), st.text(alphabet=" \t\u3000\u00a0", min_size=1, max_size=5),  # blank lines
    st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), max_size=40),  # anything
    st.sampled_from(["日本語の文章", "Größe ändern", "🎉👍😀", "\x00\x07\x1b[31m",
                     "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg", "مرحبا بالعالم"]),
    st.integers(50, 400).map(lambda n: " ".join("abcdefgh"[i % 8] for i in range(n))),  # long
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(_LINE, max_size=12), crlf=st.booleans(), final_newline=st.booleans())
def test_translate_gives_one_line_per_input_line_in_order(model_dir, tmp_path_factory,
                                                          translator_for, lines, crlf,
                                                          final_newline):
    assume(final_newline or not lines or lines[-1] != "")  # "a\n" is one line, not two
    work = tmp_path_factory.mktemp("contract")
    text = ("\r\n" if crlf else "\n").join(lines) + (("\r\n" if crlf else "\n")
                                                     if final_newline and lines else "")
    (work / "in.txt").write_bytes(text.encode("utf-8"))
    assert main(["translate", "-m", str(model_dir), "-i", str(work / "in.txt"),
                 "-o", str(work / "out.txt"), "--beam-size", "1", "-q"]) == 0
    out = (work / "out.txt").read_bytes().decode("utf-8").split("\n")
    assert out.pop() == ""  # every output line ends with \n
    assert len(out) == len(lines)
    for line, got in zip(lines, out, strict=True):
        # each line as translated alone: a reordering of the lines would show
        assert got == translator_for(line), (line, got)
        if not line.strip():
            assert got == ""


@pytest.fixture(scope="module")
def translator_for(model_dir):
    translator = Translator.load(model_dir)
    cache: dict[str, str] = {}

    def alone(line: str) -> str:
        if line not in cache:
            cache[line] = translator.translate([line], beam_size=1)[0]
        return cache[line]

    return alone


def test_atomic_write_writes_a_pipe_or_device_in_place(tmp_path):
    """`nmt translate -o /dev/null` (or a named pipe) must not rename a file over the device:
    as root that replaced /dev/null with a regular file."""
    import os
    import stat
    import threading

    from nmt.fileio import atomic_write

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_text()), daemon=True)
    reader.start()
    with atomic_write(pipe) as handle:
        handle.write("through the pipe\n")
    reader.join(timeout=30)
    assert received == ["through the pipe\n"]
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no temporary file left
