"""Scaling out: DDP with torchrun (gloo, 2 processes), checkpoint averaging, ensembles."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import reverse_overrides, run_process_tree, write_reverse_task
from safetensors.torch import load_file

from nmt.cli import main
from nmt.config import load_config
from nmt.errors import ConfigError
from nmt.inference.translator import Translator
from nmt.models.weights import average_weights
from nmt.training.trainer import Trainer


@pytest.fixture(scope="module")
def run_dir(trained_reverse):
    """The session's trained reverse-task run (conftest.trained_reverse), read only: its last
    three checkpoints are kept, and the best one if it is older."""
    return trained_reverse


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first (step numbers are zero-padded)."""
    return sorted((run_dir / "checkpoints").glob("step-*.safetensors"))


def nmt(*args: object, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # within pytest-timeout's 300 s a test: a hung launch fails the test with its stderr
    return run_process_tree([sys.executable, *(launcher or []), "-m", "nmt", *map(str, args)],
                            timeout=120, env=env)


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # a smaller corpus than the session's reverse task: three launches prepare it and each
    # validation decodes the valid split, while 6 updates see 12 batches of 400 tokens at most
    task = write_reverse_task(tmp_path / "data", {"train": 1500, "valid": 20})
    common = [*reverse_overrides(tmp_path / "x", task)[1:], "training.precision=fp32",
              "model.dropout=0.0", "training.max_steps=6", "training.valid_every=3",
              "training.batch_tokens=400", "-q"]
    one = tmp_path / "one"  # in this process (one intra-op thread, as in the children)
    Trainer(load_config(None, [f"output_dir={one}", "training.accumulate=2", *common[:-1]]),
            quiet=True).fit()
    two = tmp_path / "two"
    proc = nmt("train", f"output_dir={two}", *common, launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(one / "checkpoints" / "step-00000006.safetensors")
    b = load_file(two / "checkpoints" / "step-00000006.safetensors")
    start = load_file(one / "checkpoints" / "step-00000003.safetensors")
    assert any(not torch.equal(start[k], a[k]) for k in a)  # it trained
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)
    state = torch.load(two / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["torch_rng_ranks"]) == 2
    assert state["progress"]["batch_in_epoch"] == 12  # 6 updates x 2 processes x 1 batch
    assert (two / "metrics.csv").read_text().count("\n") == 3  # header + 2 validations, once

    # the two-process run resumes from its checkpoint
    proc = nmt("train", f"output_dir={two}", *common, "training.max_steps=9", "--resume",
               launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(two / "trainer_state.pt", weights_only=True)
    assert state["progress"]["step"] == 9 and state["progress"]["batch_in_epoch"] == 18


@pytest.mark.slow
def test_a_crash_on_one_rank_stops_the_job(tmp_path, reverse_task):
    # rank 0 fails preparing the data while rank 1 waits for it: the whole job ends
    proc = nmt("train", *reverse_overrides(tmp_path / "run", reverse_task), "training.max_steps=3",
               f"data.train={tmp_path / 'missing'}", "-q", launcher=TORCHRUN)
    assert proc.returncode != 0
    assert proc.stderr.count("source file not found") == 1  # said by rank 0 alone


@pytest.mark.slow
def test_a_failure_on_rank_0_ends_every_rank_without_a_launcher(tmp_path, reverse_task):
    """Rank 0 tells the rank waiting for its data that it failed: both processes leave by
    themselves, with exit code 2 and one error line, and no launcher has to kill anyone."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [sys.executable, "-m", "nmt", "train",
            *reverse_overrides(tmp_path / "run", reverse_task), "training.max_steps=3",
            f"data.train={tmp_path / 'missing'}", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    ranks = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              start_new_session=True) for r in (1, 0)]
    try:
        waiting, failing = (rank.communicate(timeout=120) for rank in ranks)
    finally:
        for rank in ranks:
            if rank.poll() is None:
                os.killpg(rank.pid, signal.SIGKILL)
    assert [rank.returncode for rank in ranks] == [2, 2]
    assert "source file not found" in failing[1]
    assert "source file not found" not in waiting[1] and "Traceback" not in waiting[1]


def test_average_of_identical_checkpoints_reproduces_them(run_dir, tmp_path):
    ckpt = checkpoints(run_dir)[-2]
    assert main(["average", "-m", str(run_dir), "--checkpoints", str(ckpt), str(ckpt),
                 "-o", str(tmp_path / "same"), "-q"]) == 0
    same, original = load_file(tmp_path / "same" / "model.safetensors"), load_file(ckpt)
    assert all(torch.equal(same[k], original[k]) for k in original)
    assert {p.name for p in (tmp_path / "same").iterdir()} >= {"config.yaml", "spm.model",
                                                              "model.safetensors"}
    assert load_config(tmp_path / "same" / "config.yaml").output_dir == str(tmp_path / "same")
    # the averaged directory is a model directory: it translates
    assert Translator.load(tmp_path / "same").translate(["a b c"], beam_size=1)[0]


def test_average_of_the_last_checkpoints_is_their_mean(run_dir, tmp_path):
    assert main(["average", "-m", str(run_dir), "--last", "2", "-o", str(tmp_path / "avg"),
                 "-q"]) == 0
    avg = load_file(tmp_path / "avg" / "model.safetensors")
    a, b = (load_file(path) for path in checkpoints(run_dir)[-2:])
    for name in a:
        torch.testing.assert_close(avg[name], (a[name] + b[name]) / 2)
    assert any(not torch.equal(avg[k], a[k]) for k in a)
    assert any(not torch.equal(avg[k], b[k]) for k in b)
    assert average_weights([checkpoints(run_dir)[-2]] * 3)[
        "encoder.embed.weight"].equal(a["encoder.embed.weight"])


def test_average_refuses_what_it_cannot_do(run_dir, tmp_path, capsys):
    kept = len(list((run_dir / "checkpoints").iterdir()))  # the last 3, and the best if older
    for argv, message in ((["--last", "9"], f"holds {kept} checkpoints, fewer than --last 9"),
                          ([], "give either --last N or --checkpoints")):
        assert main(["average", "-m", str(run_dir), *argv, "-o", str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_an_ensemble_of_a_model_with_itself_gives_its_output(run_dir, tmp_path):
    lines = ["a b c d", "h g f e d", "", "c c a b h e"]
    alone = Translator.load(run_dir)
    pair = Translator.load_ensemble([run_dir, run_dir])
    for beam in (1, 4):
        assert pair.translate(lines, beam_size=beam) == alone.translate(lines, beam_size=beam)
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    assert main(["translate", "-m", str(run_dir), "-m", str(run_dir), "-i",
                 str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.txt"), "-q"]) == 0
    assert (tmp_path / "out.txt").read_text().splitlines() == alone.translate(lines)


def test_an_ensemble_averages_log_probabilities_and_needs_shared_vocabularies(
        run_dir, tmp_path, reverse_task):
    # same vocabulary, other weights: an averaged model joins the ensemble
    assert main(["average", "-m", str(run_dir), "--last", "3", "-o", str(tmp_path / "avg"),
                 "-q"]) == 0
    pair = Translator.load_ensemble([run_dir, tmp_path / "avg"])
    src = torch.tensor([pair.src_tok.encode("a b c d", add_eos=True)])
    state = pair.model.init_state(pair.model.encode(src, torch.tensor([src.size(1)])))
    mixed, _ = pair.model.step(torch.tensor([2]), state)
    single = [m.step(torch.tensor([2]), s)[0] for m, s in zip(pair.model.models, state,
                                                                strict=True)]
    assert not torch.allclose(single[0], single[1])  # two different models
    torch.testing.assert_close(mixed, (single[0] + single[1]) / 2)

    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    config = load_config(None, [*reverse_overrides(tmp_path / "o2", reverse_task),
                                "tokenizer.vocab_size=20", "training.max_steps=1"])
    Trainer(config, quiet=True).fit()
    for name in ("spm.model", "model.safetensors", "config.yaml"):
        shutil.copy(tmp_path / "o2" / name, other / name)
    with pytest.raises(ConfigError, match=r"their source vocabularies differ \(\d+ and \d+ "
                                          r"pieces"):
        Translator.load_ensemble([run_dir, other])
