"""Shared fixtures: small parallel corpora made on the fly (no corpus from outside), and one
reverse-task model trained once per session (``trained_reverse``).

Environment:

``NMT_TEST_PRECISION`` (``fp32`` or ``bf16``; unset: the config default ``auto``)
    Every training config the tests build gets ``training.precision=VALUE``: through
    :func:`reverse_overrides`, :func:`small_overrides` and :func:`precision_overrides` (the
    recipe tests add the latter to their overrides), and :func:`exact_match` decodes in it.
    ``auto`` is bf16 on CPUs where it beats fp32 (see :mod:`nmt.device`), so a learning test
    must pass both ways; check with ``NMT_TEST_PRECISION=fp32 python -m pytest`` and
    ``NMT_TEST_PRECISION=bf16 python -m pytest``. bf16 needs a CPU whose oneDNN has a bf16 LSTM
    (AVX-512) or a GPU: on an AVX2-only CPU the session stops at once with a usage error. Tests
    of precision handling itself keep their explicit ``training.precision``, which comes later
    in their overrides and wins.

``OMP_NUM_THREADS`` (default here: 1)
    torch's intra-op threads in the session and the subprocesses it starts (see below).

Workers: pyproject.toml's ``addopts`` run the suite with pytest-xdist, one worker per core
(``-n auto``) and one test file per worker (``--dist loadfile``), so a session fixture such as
``trained_reverse`` is built once per worker; ``-n 0`` runs it in one process.

Markers: ``slow`` (registered in pyproject.toml) marks the torchrun tests, the tests that run
the command line or a recipe in a subprocess, and the end-to-end recipes; ``python -m pytest -m
"not slow"`` is the quick local run, ``python -m pytest -q`` (CI, the README) runs everything.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

PRECISION = os.environ.get("NMT_TEST_PRECISION", "").strip() or None

# One intra-op thread for torch here and in every subprocess (unless OMP_NUM_THREADS is set):
# the tiny test models gain nothing from a second thread, and with another process busy on the
# two cores a second thread makes each small op wait for a descheduled partner.
# test_resume_continues_exactly[constant] under load ~6: 61-70 s with 1 thread, 211-214 s with 2.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse an NMT_TEST_PRECISION the fixtures cannot pass on, or that cannot run here."""
    if PRECISION not in (None, "auto", "fp32", "bf16"):
        raise pytest.UsageError(f"NMT_TEST_PRECISION must be fp32 or bf16 (or unset for auto), "
                                f"got {PRECISION!r}")
    if PRECISION == "bf16":
        import torch

        from nmt.device import cpu_runs_bf16_lstm

        # torch's oneDNN LSTM has no bf16 kernel on AVX2-only CPUs: every run would fail
        if not torch.cuda.is_available() and not cpu_runs_bf16_lstm():
            raise pytest.UsageError(
                "NMT_TEST_PRECISION=bf16: this CPU cannot run an LSTM in bf16; run it on a CPU "
                "with AVX-512-BF16 or AMX, or with a GPU")


def pytest_report_header(config: pytest.Config) -> str:
    """Say in the header which training precision the fixtures ask for."""
    return f"NMT_TEST_PRECISION: {PRECISION or 'unset (training.precision=auto)'}"


def precision_overrides() -> list[str]:
    """``["training.precision=VALUE"]`` when NMT_TEST_PRECISION is set, else ``[]`` (auto)."""
    return [f"training.precision={PRECISION}"] if PRECISION else []


def run_process_tree(args: Sequence[str], timeout: float,
                     **kwargs: object) -> subprocess.CompletedProcess:
    """``subprocess.run(args, capture_output=True, text=True)`` for a command that starts
    processes of its own (torchrun): on a timeout, or anything else that interrupts the wait
    (pytest-timeout's exception), the whole process group is killed before the exception goes
    on. ``subprocess.run`` kills only its child, which leaves torchrun's workers on the cores."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


# Real sentences in the scripts the tokenizer must round-trip.
REAL_LINES = [
    "Die Größe des Fensters lässt sich über das Menü „Ansicht“ ändern.",
    "Wählen Sie Extras – Optionen – LibreOffice Writer – Formatierungshilfen.",
    "El niño pequeño comió piña y jamón en la cañada, ¿verdad?",
    "Señor, ¡qué día más lluvioso! Añadió azúcar al café.",
    "这是一个用于测试的中文句子。",
    "日本語の文章もちゃんと扱えます。",
    "Great job 🎉👍 see you soon 😀",
    "Ünïcödé ﬁ ligature and ｆｕｌｌｗｉｄｔｈ letters.",
]

_WORDS_EN = ("the house is small and green we see a big red tree near old water one two three "
             "open file menu window help table chart format cell").split()
_WORDS_DE = ("das Haus ist klein und grün wir sehen einen großen roten Baum nahe altes Wasser "
             "eins zwei drei öffnen Datei Menü Fenster Hilfe Tabelle Diagramm Format Zelle").split()


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` synthetic (English-like, German-like) pairs of 2-12 words."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        k = rng.randint(2, 12)
        idx = [rng.randrange(len(_WORDS_EN)) for _ in range(k)]
        pairs.append((" ".join(_WORDS_EN[i] for i in idx), " ".join(_WORDS_DE[i] for i in idx)))
    return pairs


def write_text_corpus(prefix: Path, pairs: list[tuple[str, str]], src: str = "en",
                      tgt: str = "de") -> Path:
    """Write PREFIX.SRC and PREFIX.TGT line-aligned files; returns the prefix."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.{src}").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
    Path(f"{prefix}.{tgt}").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
    return prefix


@pytest.fixture
def text_corpus(tmp_path: Path) -> dict[str, Path]:
    """train/valid/test prefixes of a synthetic en-de corpus in tmp_path/corpus."""
    return {split: write_text_corpus(tmp_path / "corpus" / split, make_pairs(n, seed))
            for split, n, seed in (("train", 400, 0), ("valid", 30, 1), ("test", 40, 2))}


def small_overrides(out: Path, corpus: dict[str, Path]) -> list[str]:
    """Config overrides for a fast prepare on the synthetic corpus."""
    return [f"output_dir={out}", "data.format=text", f"data.train={corpus['train']}",
            f"data.valid={corpus['valid']}", f"data.test={corpus['test']}",
            "tokenizer.vocab_size=400", "tokenizer.hard_vocab_limit=false",
            *precision_overrides()]


def write_reverse_task(directory: Path, sizes: dict[str, int], min_len: int = 3,
                       max_len: int = 8, symbols: str = "abcdefgh",
                       copy: bool = False) -> dict[str, Path]:
    """Reverse-the-sequence task (or, with ``copy``, the copy task) as text files ``SPLIT.src`` /
    ``SPLIT.tgt``; returns the prefixes."""
    prefixes = {}
    for offset, (split, n) in enumerate(sizes.items()):
        rng = random.Random(100 + offset)
        pairs = []
        for _ in range(n):
            seq = [rng.choice(symbols) for _ in range(rng.randint(min_len, max_len))]
            pairs.append((" ".join(seq), " ".join(seq if copy else reversed(seq))))
        prefixes[split] = write_text_corpus(directory / split, pairs, "src", "tgt")
    return prefixes


def reverse_overrides(out: Path, prefixes: dict[str, Path]) -> list[str]:
    """Config overrides for a tiny model on the reverse task (trains in seconds)."""
    return [f"output_dir={out}", "data.src_lang=src", "data.tgt_lang=tgt",
            f"data.train={prefixes['train']}",
            *(f"data.{s}={prefixes[s]}" for s in ("valid", "test") if s in prefixes),
            "tokenizer.vocab_size=16", "tokenizer.byte_fallback=false",
            "tokenizer.hard_vocab_limit=false", "model.embed_size=32", "model.hidden_size=64",
            "model.decoder_hidden_size=128", "model.dropout=0.0", "training.batch_tokens=800",
            "training.lr=0.005", "training.schedule=constant", "training.label_smoothing=0.0",
            "training.log_every=50", "decoding.max_len_a=1.0", "decoding.max_len_b=2",
            *precision_overrides()]


# The shared model's training, on top of reverse_overrides: a cosine decay of the rate to a tenth
# over the budget makes the last updates fine-tune instead of bouncing around (with the constant
# rate 400 updates reached 0.90-0.93 exact match in fp32; see tests/test_train.py for what this
# reaches in fp32 and bf16).
TRAINED_REVERSE = ["data.max_len=40", "training.max_steps=300", "training.valid_every=100",
                   "training.schedule=cosine", "training.warmup_steps=0",
                   "training.min_lr=0.0005"]


@pytest.fixture(scope="session")
def reverse_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reverse task written once per session: 3000 train, 100 valid, 200 test pairs of 3-8
    symbols (``write_reverse_task`` defaults)."""
    return write_reverse_task(tmp_path_factory.mktemp("reverse_task") / "data",
                              {"train": 3000, "valid": 100, "test": 200})


@pytest.fixture(scope="session")
def trained_reverse(tmp_path_factory: pytest.TempPathFactory,
                    reverse_task: dict[str, Path]) -> Iterator[Path]:
    """A model directory trained once per session on the reverse task, shared read-only.

    Trained on the train and valid splits of ``reverse_task`` (its config names no test split;
    the test split stays unseen) with ``TRAINED_REVERSE``: data.max_len 40, 300 updates,
    validation and a checkpoint every 100 (checkpoints 100, 200, 300 kept). For tests that need
    *a* trained model; a test that writes into a model directory (resuming, ``evaluate
    --split``, edited files) works on a ``shutil.copytree`` of it. The session ends with an
    error if a file in it was added, removed or changed.
    """
    from nmt.config import load_config
    from nmt.training.trainer import Trainer

    out = tmp_path_factory.mktemp("trained_reverse") / "model"
    splits = {split: reverse_task[split] for split in ("train", "valid")}
    Trainer(load_config(None, [*reverse_overrides(out, splits), *TRAINED_REVERSE]),
            quiet=True).fit()
    before = _snapshot(out)
    yield out
    changed = sorted(set(before.items()) ^ set(_snapshot(out).items()))
    assert not changed, f"a test wrote into the shared model directory {out}: {changed}"


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every file under ``directory``, by relative path."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def exact_match(model_dir: Path, prefix: Path) -> float:
    """Share of the lines of ``PREFIX.src`` whose greedy translation by the model directory's
    best weights is exactly the line of ``PREFIX.tgt`` (decoded in NMT_TEST_PRECISION)."""
    from nmt.inference.translator import Translator

    src, ref = (Path(f"{prefix}.{side}").read_text(encoding="utf-8").splitlines()
                for side in ("src", "tgt"))
    hyps = Translator.load(model_dir, precision=PRECISION or "auto").translate(src, beam_size=1)
    return sum(h == r for h, r in zip(hyps, ref, strict=True)) / len(ref)
