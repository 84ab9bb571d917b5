"""Benchmark: this toolkit against JoeyNMT 2.3.0, side by side, at an equal CPU time budget.

For each corpus (``lohelp-en-de`` en->de and ``bible-en-es`` en->es under ``--data-root``,
default ``../shared/data``), three systems train for the same wall-clock budget
(``--minutes``, default 30), one after another, never at once:

- ``joeynmt``: JoeyNMT 2.3.0 from PyPI in its own virtual environment (``--joey-venv``,
  created with torch 2.13.0 by ``--setup``), run through ``scripts/joeynmt_launcher.py``
  (which applies three small compatibility patches at run time and documents them);
- ``nmt-best``: ours in its best settings: bf16 autocast where the CPU has it, no input
  feeding (our default: the decoder's input projections run over all steps at once);
- ``nmt-matched``: ours in JoeyNMT's setting: fp32, input feeding on.

All three share one SentencePiece model (unigram, 8k pieces, joint, trained once per corpus
by ``nmt prepare``), the model dimensions (embedding 256, BiLSTM encoder 256 per direction,
LSTM decoder 512, Luong "general" attention, dropout 0.2), label smoothing 0.1, Adam at 1e-3
halved when validation BLEU stalls for 2 validations, gradient-norm clipping at 1.0 and a
4,000-token batch budget (examples x longest side, padding included, counted alike). Both
validate with greedy search on the full validation set about 8 times in the budget; the budget
starts when the training loop starts and includes validation; the last weights are validated
at the end, and the best validated weights are tested.

Where the toolkits still differ, by design of each: JoeyNMT fills a batch in corpus order and
closes it once the budget is reached (so its batches hold more padding and fewer real target
tokens: the table gives target tokens per update), ours buckets by length; JoeyNMT's one-layer
RNNs apply dropout to embeddings and to the attentional vector, ours to those and to the
encoder outputs; JoeyNMT's bridge initialises the decoder's
cell state with its hidden state, ours bridges both; JoeyNMT caps output at 1.5 x the longest
source of the batch, ours at 1.5 x each source + 10. Both drop training pairs over 128
pieces; our default cleaning (``max_ratio`` 4) also drops 37 of the 32,069 LibreOffice
training pairs whose sides differ in length over 4 times, which JoeyNMT keeps.

Figures (``results.md``, ``results.json`` and ``valid_bleu.svg`` in ``--out``): training target
tokens/s (target tokens, EOS included, over training seconds without validation), updates and
epochs (target tokens trained / target tokens of the training set), best validation BLEU,
test BLEU and chrF with greedy and beam-5 search (sacreBLEU 13a on detokenised output, the
signature printed), translation sentences/s (the toolkit's search over the whole test set,
model loading excluded, batches of 8,000 tokens), and peak RSS of training and translation
processes (``wait4``). The plot shows validation BLEU against training minutes.

Each step's result is kept in ``--out``; running the command again skips finished steps
(``--force`` redoes them), so a long benchmark can be resumed. ``--report-only`` rebuilds the
table and the plot from what is there.

    python scripts/bench_vs_joeynmt.py --setup                       # JoeyNMT venv, then all
    python scripts/bench_vs_joeynmt.py --minutes 30 [--corpora lohelp-en-de,bible-en-es]
        [--systems joeynmt,nmt-best,nmt-matched] [--out runs/bench_vs_joeynmt] [--threads 2]

Run it on an otherwise idle machine (a warning is printed when the load average is high).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import parse_configs, warn_if_busy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from nmt.fileio import write_text_atomic  # noqa: E402
from nmt.scoring import read_lines, score  # noqa: E402  (light: no torch)

LAUNCHER = Path(__file__).resolve().parent / "joeynmt_launcher.py"
SYSTEMS = ("joeynmt", "nmt-best", "nmt-matched")
SEARCHES = {"greedy": 1, "beam5": 5}
JOEY_VERSION, TORCH_VERSION = "2.3.0", "2.13.0"
VALIDATIONS_PER_BUDGET = 8
# rough updates per minute of each system at 4,000-token batches on 2 cores, only used to
# validate about VALIDATIONS_PER_BUDGET times in any budget
UPDATES_PER_MINUTE = {"joeynmt": 26, "nmt-best": 75, "nmt-matched": 40}
WARMUP_LINES = 8
TARGETS = {"train_speedup": 8.0, "beam5_speedup": 5.0, "bleu_gain": 5.0}


@dataclass(frozen=True)
class Corpus:
    """A line-aligned corpus folder with train/valid/test.{src,tgt} files."""

    name: str
    src: str
    tgt: str

    def path(self, root: Path, split: str, lang: str) -> Path:
        return root / self.name / f"{split}.{lang}"


CORPORA = {c.name: c for c in (Corpus("lohelp-en-de", "en", "de"),
                               Corpus("bible-en-es", "en", "es"))}

SHARED = {"embed_size": 256, "hidden_size": 256, "decoder_hidden_size": 512, "dropout": 0.2,
          "batch_tokens": 4000, "lr": 1e-3, "label_smoothing": 0.1, "plateau_factor": 0.5,
          "plateau_patience": 2, "clip_norm": 1.0, "max_len": 128, "seed": 42}


# --------------------------------------------------------------------------- configurations


def valid_every(system: str, minutes: float) -> int:
    """Updates between validations so that about VALIDATIONS_PER_BUDGET fit the budget."""
    return max(10, round(UPDATES_PER_MINUTE[system] * minutes / VALIDATIONS_PER_BUDGET))


def logging_freq(every: int) -> int:
    """JoeyNMT's logging interval: the largest divisor of ``every`` below it, at most 50 (it
    requires the validation interval to be a multiple of a smaller logging interval)."""
    return next((d for d in range(min(50, every - 1), 0, -1) if every % d == 0), 1)


def nmt_config(corpus: Corpus, data_root: Path, out: Path, system: str, minutes: float,
               spm_model: Path | None) -> dict[str, Any]:
    """Our config for a system (``nmt-best``/``nmt-matched``), or for training the tokenizer."""
    s = SHARED
    data = {"src_lang": corpus.src, "tgt_lang": corpus.tgt, "format": "text",
            "max_len": s["max_len"],
            **{split: str(data_root / corpus.name / split) for split in ("train", "valid",
                                                                       "test")}}
    tokenizer: dict[str, Any] = {"type": "unigram", "vocab_size": 8000, "joint": True}
    if spm_model is not None:
        tokenizer["model"] = str(spm_model)
    matched = system == "nmt-matched"
    return {
        "name": f"{corpus.name}-{system}", "output_dir": str(out), "data": data,
        "tokenizer": tokenizer,
        "model": {"embed_size": s["embed_size"], "hidden_size": s["hidden_size"],
                  "encoder_layers": 1, "decoder_hidden_size": s["decoder_hidden_size"],
                  "decoder_layers": 1, "attention": "general", "dropout": s["dropout"],
                  "input_feeding": matched},
        "training": {"batch_tokens": s["batch_tokens"], "lr": s["lr"],
                     "label_smoothing": s["label_smoothing"], "schedule": "plateau",
                     "plateau_factor": s["plateau_factor"],
                     "plateau_patience": s["plateau_patience"], "clip_norm": s["clip_norm"],
                     "seed": s["seed"], "max_minutes": minutes, "max_epochs": None,
                     "patience": 0, "keep_last": 1,
                     "valid_every": valid_every(system, minutes) if system in SYSTEMS else 1000,
                     "precision": "fp32" if matched else "auto", "device": "cpu"},
        "decoding": {"beam_size": 5, "length_penalty": 1.0, "batch_tokens": 8000},
    }


def joey_config(corpus: Corpus, data_root: Path, out: Path, spm_model: Path, vocab: Path,
                minutes: float) -> dict[str, Any]:
    """JoeyNMT's config with the same data, tokenizer, dimensions and optimisation."""
    s = SHARED

    def side(lang: str) -> dict[str, Any]:
        return {"lang": lang, "level": "bpe", "lowercase": False, "normalize": False,
                "max_length": s["max_len"], "voc_file": str(vocab),
                "tokenizer_type": "sentencepiece",
                "tokenizer_cfg": {"model_file": str(spm_model)}}

    every = valid_every("joeynmt", minutes)  # JoeyNMT wants it a multiple of logging_freq
    embeddings = {"embedding_dim": s["embed_size"], "scale": False, "dropout": s["dropout"]}
    return {
        "name": f"{corpus.name}-joeynmt", "joeynmt_version": JOEY_VERSION,
        "model_dir": str(out / "model"), "use_cuda": False, "fp16": False,
        "random_seed": s["seed"],
        "data": {"train": str(data_root / corpus.name / "train"),
                 "dev": str(data_root / corpus.name / "valid"),
                 "test": str(data_root / corpus.name / "test"),
                 "dataset_type": "plain", "src": side(corpus.src), "trg": side(corpus.tgt)},
        "training": {"optimizer": "adam", "learning_rate": s["lr"],
                     "learning_rate_min": 1e-6, "scheduling": "plateau",
                     "patience": s["plateau_patience"], "decrease_factor": s["plateau_factor"],
                     "loss": "crossentropy", "label_smoothing": s["label_smoothing"],
                     "normalization": "tokens", "clip_grad_norm": s["clip_norm"],
                     "batch_size": s["batch_tokens"], "batch_type": "token", "epochs": 10000,
                     "validation_freq": every, "logging_freq": logging_freq(every),
                     "eval_metrics": ["bleu"], "early_stopping_metric": "bleu",
                     "keep_best_ckpts": 1, "shuffle": True, "overwrite": True,
                     "print_valid_sents": [0]},
        "testing": {"beam_size": 1, "beam_alpha": 1.0, "batch_size": 8000,
                    "batch_type": "token", "eval_metrics": ["bleu"],
                    "sacrebleu_cfg": {"tokenize": "13a"}},
        "model": {"initializer": "xavier_uniform", "embed_initializer": "normal",
                  "bias_initializer": "zeros", "init_rnn_orthogonal": False,
                  "tied_embeddings": False, "tied_softmax": False,
                  "encoder": {"type": "recurrent", "rnn_type": "lstm",
                              "embeddings": embeddings, "hidden_size": s["hidden_size"],
                              "bidirectional": True, "dropout": s["dropout"],
                              "num_layers": 1},
                  "decoder": {"type": "recurrent", "rnn_type": "lstm",
                              "embeddings": embeddings, "hidden_size": s["decoder_hidden_size"],
                              "dropout": s["dropout"], "hidden_dropout": s["dropout"],
                              "num_layers": 1, "input_feeding": True, "init_hidden": "bridge",
                              "attention": "luong"}},
    }


# --------------------------------------------------------------------------- processes


def run_measured(command: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> tuple[float, float]:
    """Run a process with its output in ``log``; (wall seconds, peak RSS MB of it and its
    children, from wait4). A failure names the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - begin
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {proc.returncode}); "
                         f"log: {log}\n{tail}")
    return seconds, usage.ru_maxrss / 1024.0


def child_env(threads: int) -> dict[str, str]:
    env = os.environ.copy()
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    return env


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False))


def words_per_line(path: Path) -> float:
    """Mean whitespace-separated words a line of a text file."""
    lines = read_lines(path)
    return sum(len(line.split()) for line in lines) / max(len(lines), 1)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def setup_joey(venv: Path) -> None:
    """JoeyNMT 2.3.0 in its own venv, torch 2.13.0 installed first (the CPU build here)."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}"],
                   check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"joeynmt=={JOEY_VERSION}",
                    "importlib-metadata"], check=True)


# --------------------------------------------------------------------------- our children


def child_train(config_path: Path, report: Path, threads: int) -> None:
    """Train one of our runs, timing the loop, its validations and the tokens trained on."""
    import torch

    from nmt.config import load_config
    from nmt.training.trainer import Trainer

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    trainer = Trainer(load_config(config_path), quiet=True)
    record: dict[str, Any] = {"tokens": 0, "valid_seconds": 0.0, "timeline": []}
    step, validate = trainer.train_step, trainer._validate_and_save

    def counted_step(batches: Any) -> Any:
        result = step(batches)
        if not result.skipped:  # a skipped update trains on nothing
            record["tokens"] += result.tokens
        return result

    def timed_validate(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        result = validate(*args, **kwargs)
        end = time.perf_counter()
        record["valid_seconds"] += end - begin
        last = trainer.progress.history[-1]
        record["timeline"].append({"seconds": end - record["start"],
                                   "step": trainer.progress.step, "bleu": last.get("bleu")})
        return result

    trainer.train_step, trainer._validate_and_save = counted_step, timed_validate
    record["start"] = time.perf_counter()  # fit() is the loop, plus opening the run's files
    try:
        progress = trainer.fit()
    finally:
        record["end"] = time.perf_counter()
    write_json(report, {"updates": progress.step, "target_tokens": record["tokens"],
                        "seconds": record["end"] - record["start"],
                        "valid_seconds": record["valid_seconds"],
                        "timeline": record["timeline"], "best_valid_bleu": progress.best_score,
                        "best_step": progress.best_step})


def child_translate(model_dir: Path, src: Path, beam: int, precision: str, hyps: Path,
                    report: Path, threads: int) -> None:
    """Translate the test set with one of our models, timing the search alone."""
    import torch

    from nmt.inference.translator import Translator

    torch.set_num_threads(threads)
    lines = read_lines(src)
    translator = Translator.load(model_dir, device="cpu", precision=precision)
    translator.translate(lines[:WARMUP_LINES], beam_size=beam)
    begin = time.perf_counter()
    out = translator.translate(lines, beam_size=beam)
    seconds = time.perf_counter() - begin
    hyps.write_text("".join(line + "\n" for line in out), encoding="utf-8")
    write_json(report, {"sentences": len(lines), "seconds": seconds})


# --------------------------------------------------------------------------- the stages


class Bench:
    """One benchmark run: paths, settings and the steps, each skipped when already done."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.data_root: Path = args.data_root
        self.minutes: float = args.minutes
        self.python = sys.executable
        self.joey_python = str(args.joey_venv / "bin" / "python")
        self.joey_env = child_env(args.threads)  # JoeyNMT's venv alone: no PYTHONPATH of ours
        self.joey_env.pop("PYTHONPATH", None)
        self.env = child_env(args.threads)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p)

    def done(self, path: Path) -> bool:
        return path.is_file() and not self.args.force

    def corpus_dir(self, corpus: Corpus) -> Path:
        return self.out / corpus.name

    def tokenizer(self, corpus: Corpus) -> Path:
        """Train the shared SentencePiece model with ``nmt prepare``; its path."""
        import yaml

        work = self.corpus_dir(corpus) / "spm"
        model = work / "spm.model"
        if model.is_file():
            return model
        config = nmt_config(corpus, self.data_root, work, "spm", self.minutes, None)
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
        print(f"[{corpus.name}] SentencePiece model (nmt prepare)", flush=True)
        run_measured([self.python, "-m", "nmt", "prepare", "--config", str(work / "config.yaml")],
                     work / "prepare.log", self.env, ROOT)
        return model

    def train(self, corpus: Corpus, system: str, spm_model: Path) -> dict[str, Any]:
        import yaml

        work = self.corpus_dir(corpus) / system
        result_path = work / "train.json"
        previous = read_json(result_path)
        if self.done(result_path) and previous.get("minutes") == self.minutes:
            return previous
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        report = work / "train-report.json"
        print(f"[{corpus.name}] training {system} for {self.minutes:g} minutes", flush=True)
        if system == "joeynmt":
            vocab = work / "vocab.txt"
            import sentencepiece as spm
            sp = spm.SentencePieceProcessor(model_file=str(spm_model))
            vocab.write_text("".join(sp.id_to_piece(i) + "\n" for i in range(sp.get_piece_size())),
                             "utf-8")
            config = joey_config(corpus, self.data_root, work, spm_model, vocab, self.minutes)
            (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
            command = [self.joey_python, str(LAUNCHER), "train", str(work / "config.yaml"),
                       "--minutes", str(self.minutes), "--report", str(report),
                       "--threads", str(self.args.threads)]
        else:
            config = nmt_config(corpus, self.data_root, work / "model", system, self.minutes,
                                spm_model)
            (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
            command = [self.python, str(Path(__file__).resolve()), "--child-train",
                       str(work / "config.yaml"), "--child-report", str(report),
                       "--threads", str(self.args.threads)]
        env = self.joey_env if system == "joeynmt" else self.env
        wall, rss = run_measured(command, work / "train.log", env, ROOT)
        result = {**read_json(report), "minutes": self.minutes, "threads": self.args.threads,
                  "process_seconds": wall, "peak_rss_mb": rss}
        write_json(result_path, result)
        return result

    def translate(self, corpus: Corpus, system: str, search: str) -> dict[str, Any]:
        import yaml

        work = self.corpus_dir(corpus) / system
        result_path = work / f"test.{search}.json"
        if self.done(result_path):
            return read_json(result_path)
        print(f"[{corpus.name}] translating the test set with {system}, {search}", flush=True)
        hyps = work / f"test.{search}.hyps"
        report = work / f"test.{search}.report.json"
        src = corpus.path(self.data_root, "test", corpus.src)
        if system == "joeynmt":
            config = yaml.safe_load((work / "config.yaml").read_text("utf-8"))
            # the dev set is translated first in JoeyNMT's test mode: a few lines, as warm-up
            dev = work / "warmup"
            for lang in (corpus.src, corpus.tgt):
                lines = read_lines(corpus.path(self.data_root, "valid", lang))[:WARMUP_LINES]
                dev.with_suffix(f".{lang}").write_text("".join(x + "\n" for x in lines), "utf-8")
            config["data"]["dev"] = str(dev)
            config["testing"]["beam_size"] = SEARCHES[search]
            config["testing"]["load_model"] = str(work / "model" / "best.ckpt")
            path = work / f"test.{search}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
            prefix = work / f"joey.{search}"
            command = [self.joey_python, str(LAUNCHER), "test", str(path), "--output-path",
                       str(prefix), "--report", str(report), "--threads", str(self.args.threads)]
            wall, rss = run_measured(command, work / f"test.{search}.log", self.joey_env, ROOT)
            timings = read_json(report)["predict"]
            timing = timings[-1]  # dev (warm-up) first, then test
            Path(f"{prefix}.test").replace(hyps)
        else:
            precision = "fp32" if system == "nmt-matched" else "auto"
            command = [self.python, str(Path(__file__).resolve()), "--child-translate",
                       str(work / "model"), "--child-src", str(src), "--child-beam",
                       str(SEARCHES[search]), "--child-precision", precision,
                       "--child-hyps", str(hyps), "--child-report", str(report),
                       "--threads", str(self.args.threads)]
            wall, rss = run_measured(command, work / f"test.{search}.log", self.env, ROOT)
            timing = read_json(report)
        ref_path = corpus.path(self.data_root, "test", corpus.tgt)
        scores = score(read_lines(hyps), [read_lines(ref_path)], ref_names=[ref_path.name])
        result = {"sentences": timing["sentences"], "seconds": timing["seconds"],
                  "sentences_per_s": timing["sentences"] / timing["seconds"],
                  "bleu": scores.bleu, "chrf": scores.chrf,
                  "bleu_signature": scores.bleu_signature,
                  "chrf_signature": scores.chrf_signature,
                  "process_seconds": wall, "peak_rss_mb": rss}
        write_json(result_path, result)
        return result

    def run(self, corpora: list[Corpus], systems: list[str]) -> None:
        for corpus in corpora:
            spm_model = self.tokenizer(corpus)
            for system in systems:
                self.train(corpus, system, spm_model)
                for search in SEARCHES:
                    self.translate(corpus, system, search)


# --------------------------------------------------------------------------- the report


def collect(out: Path, corpora: list[Corpus], systems: list[str],
            data_root: Path) -> dict[str, Any]:
    """Every finished figure under ``out`` as one JSON-ready dictionary."""
    report: dict[str, Any] = {"corpora": {}, "reference_words_per_line": {}}
    for corpus in corpora:
        refs = corpus.path(data_root, "test", corpus.tgt)
        if refs.is_file():
            report["reference_words_per_line"][corpus.name] = words_per_line(refs)
        base = out / corpus.name
        per_epoch = count_epoch_tokens(base, corpus, data_root)
        rows = {}
        for system in systems:
            train = read_json(base / system / "train.json")
            if train is None:
                continue
            train_seconds = train["seconds"] - train["valid_seconds"]
            row = {"minutes": train["minutes"], "threads": train.get("threads"),
                   "updates": train["updates"], "target_tokens": train["target_tokens"],
                   "tokens_per_update": train["target_tokens"] / max(train["updates"], 1),
                   "validations": len(train["timeline"]),
                   "train_tokens_per_s": train["target_tokens"] / max(train_seconds, 1e-9),
                   "epochs": train["target_tokens"] / per_epoch if per_epoch else None,
                   "best_valid_bleu": train["best_valid_bleu"],
                   "train_peak_rss_mb": train["peak_rss_mb"], "timeline": train["timeline"],
                   "train_seconds": train["seconds"], "valid_seconds": train["valid_seconds"]}
            for search in SEARCHES:
                test = read_json(base / system / f"test.{search}.json")
                if test:
                    # the search's cost grows with output length: a model that babbles to
                    # the length limit translates fewer sentences per second
                    test["words_per_line"] = words_per_line(base / system / f"test.{search}.hyps")
                    row[search] = test
            rows[system] = row
        report["corpora"][corpus.name] = rows
    return report


def count_epoch_tokens(base: Path, corpus: Corpus, data_root: Path) -> int | None:
    """Target tokens in one epoch under the shared SentencePiece model (pieces + EOS, pairs
    over max_len dropped as both toolkits drop them); cached in ``spm/epoch_tokens.json``."""
    cached = read_json(base / "spm" / "epoch_tokens.json")
    if cached is not None:
        return cached["tgt_tokens"]
    model = base / "spm" / "spm.model"
    if not model.is_file():
        return None
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(model))
    src = read_lines(corpus.path(data_root, "train", corpus.src))
    tgt = read_lines(corpus.path(data_root, "train", corpus.tgt))
    total = 0
    for s_ids, t_ids in zip(sp.encode(src), sp.encode(tgt), strict=True):
        if s_ids and t_ids and len(s_ids) <= SHARED["max_len"] \
                and len(t_ids) <= SHARED["max_len"]:
            total += len(t_ids) + 1
    write_json(base / "spm" / "epoch_tokens.json", {"tgt_tokens": total})
    return total


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """The results table, one block per corpus, and the ratios against JoeyNMT."""
    lines = []
    for name, rows in report["corpora"].items():
        if not rows:
            continue
        budgets = {(r["minutes"], r["threads"]) for r in rows.values()}
        if len(budgets) == 1:
            minutes, threads = budgets.pop()
            heading = f"{minutes:g} minutes of training each, {threads or '?'} threads"
        else:
            heading = ("BUDGETS DIFFER, not comparable: " + ", ".join(
                f"{system} {r['minutes']:g} min / {r['threads'] or '?'} threads"
                for system, r in rows.items()))
        ref_words = report["reference_words_per_line"].get(name)
        lines += [f"**{name}** ({heading}; the test references have "
                  f"{_fmt(ref_words, '.1f')} words a line)", "",
                  "| system | train tok/s | updates | target tok/update | epochs | validations "
                  "| best valid BLEU | test BLEU greedy / beam 5 | test chrF greedy / beam 5 | "
                  "sent/s greedy / beam 5 | output words/line greedy / beam 5 | "
                  "peak RSS train / beam 5 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for system, r in rows.items():
            g, b = r.get("greedy", {}), r.get("beam5", {})

            def both(key: str, spec: str = ".2f", g: dict = g, b: dict = b) -> str:
                return f"{_fmt(g.get(key), spec)} / {_fmt(b.get(key), spec)}"

            lines.append(
                f"| {system} | {r['train_tokens_per_s']:,.0f} | {r['updates']:,} | "
                f"{r['tokens_per_update']:,.0f} | {_fmt(r['epochs'])} | {r['validations']} | "
                f"{_fmt(r['best_valid_bleu'])} | {both('bleu')} | {both('chrf', '.1f')} | "
                f"{both('sentences_per_s', '.1f')} | {both('words_per_line', '.1f')} | "
                f"{r['train_peak_rss_mb']:,.0f} / {_fmt(b.get('peak_rss_mb'), ',.0f')} MB |")
        for system, ratio in ratios(rows).items():
            lines.append("")
            lines.append(f"{system} vs joeynmt: training {ratio['train_speedup']:.1f}x "
                         f"(target {TARGETS['train_speedup']:g}x), beam 5 "
                         f"{_fmt(ratio['beam5_speedup'], '.1f')}x (target "
                         f"{TARGETS['beam5_speedup']:g}x), test BLEU beam 5 "
                         f"{_fmt(ratio['bleu_gain'], '+.2f')} (target "
                         f"+{TARGETS['bleu_gain']:g})")
        lines.append("")
        signature = next((r["beam5"]["bleu_signature"] for r in rows.values() if "beam5" in r),
                         None)
        if signature:
            lines += [f"BLEU signature: `{signature}`", ""]
    return "\n".join(lines)


def ratios(rows: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Our systems' training speed-up, beam-5 speed-up and BLEU gain over JoeyNMT."""
    joey = rows.get("joeynmt")
    if joey is None:
        return {}
    out = {}
    for system, r in rows.items():
        if system == "joeynmt":
            continue
        ours_b, joey_b = r.get("beam5"), joey.get("beam5")
        out[system] = {
            "train_speedup": r["train_tokens_per_s"] / joey["train_tokens_per_s"],
            "beam5_speedup": (ours_b["sentences_per_s"] / joey_b["sentences_per_s"]
                              if ours_b and joey_b else None),
            "bleu_gain": ours_b["bleu"] - joey_b["bleu"] if ours_b and joey_b else None}
    return out


COLOURS = {"joeynmt": "#d62728", "nmt-best": "#1f77b4", "nmt-matched": "#2ca02c"}


def svg_plot(report: dict[str, Any]) -> str:
    """Validation BLEU against training minutes, one panel per corpus, as a standalone SVG."""
    panels = [(name, rows) for name, rows in report["corpora"].items() if rows]
    width, height, pad = 420, 300, 48
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * max(len(panels), 1)}" '
             f'height="{height}" font-family="sans-serif" font-size="11">',
             '<rect width="100%" height="100%" fill="white"/>']
    for index, (name, rows) in enumerate(panels):
        x0 = index * width
        points = [p for r in rows.values() for p in r["timeline"] if p["bleu"] is not None]
        max_min = max([r["train_seconds"] / 60 for r in rows.values()] + [1.0])
        max_bleu = max([p["bleu"] for p in points] + [1.0]) * 1.1

        def sx(minutes: float, x0: int = x0, max_min: float = max_min) -> float:
            return x0 + pad + minutes / max_min * (width - pad - 16)

        def sy(bleu: float, max_bleu: float = max_bleu) -> float:
            return height - pad + 8 - bleu / max_bleu * (height - pad - 24)

        parts.append(f'<text x="{x0 + width / 2}" y="14" text-anchor="middle" '
                     f'font-weight="bold">{name}: validation BLEU (greedy)</text>')
        parts.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(max_min)}" y2="{sy(0)}" '
                     'stroke="black"/>')
        parts.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(0)}" y2="{sy(max_bleu)}" '
                     'stroke="black"/>')
        for k in range(6):
            minutes, bleu = max_min * k / 5, max_bleu * k / 5
            parts.append(f'<text x="{sx(minutes)}" y="{sy(0) + 14}" text-anchor="middle">'
                         f'{minutes:.0f}</text>')
            parts.append(f'<text x="{sx(0) - 4}" y="{sy(bleu) + 4}" text-anchor="end">'
                         f'{bleu:.0f}</text>')
        parts.append(f'<text x="{sx(max_min / 2)}" y="{height - 8}" text-anchor="middle">'
                     'training minutes</text>')
        for k, (system, r) in enumerate(rows.items()):
            pts = [(0.0, 0.0)] + [(p["seconds"] / 60, p["bleu"]) for p in r["timeline"]
                                  if p["bleu"] is not None]
            path = " ".join(f"{sx(m):.1f},{sy(b):.1f}" for m, b in pts)
            colour = COLOURS.get(system, "black")
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                         'stroke-width="2"/>')
            parts.append(f'<text x="{sx(0) + 8}" y="{30 + 14 * k}" fill="{colour}">'
                         f'{system}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_report(out: Path, corpora: list[Corpus], systems: list[str], data_root: Path,
                 load: float) -> None:
    report = collect(out, corpora, systems, data_root)
    report["ratios"] = {name: ratios(rows) for name, rows in report["corpora"].items()}
    report["machine"] = {"cpus": os.cpu_count(), "load_average_at_start": load,
                         "python": sys.version.split()[0]}
    write_json(out / "results.json", report)
    table = markdown(report)
    (out / "results.md").write_text(table, "utf-8")
    (out / "valid_bleu.svg").write_text(svg_plot(report), "utf-8")
    print(table)
    print(f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'valid_bleu.svg'}")


# --------------------------------------------------------------------------- command line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training budget of each system (default 30)")
    parser.add_argument("--corpora", default=",".join(CORPORA))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_vs_joeynmt")
    parser.add_argument("--joey-venv", type=Path, default=ROOT / ".bench" / "joey-venv")
    parser.add_argument("--setup", action="store_true",
                        help=f"install JoeyNMT {JOEY_VERSION} and torch {TORCH_VERSION} into "
                             "--joey-venv first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="redo finished steps")
    parser.add_argument("--report-only", action="store_true")
    # internal: one of our training or translation runs in its own process
    parser.add_argument("--child-train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-translate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-report", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-src", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-beam", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-precision", help=argparse.SUPPRESS)
    parser.add_argument("--child-hyps", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_train:
        child_train(args.child_train, args.child_report, args.threads)
        return
    if args.child_translate:
        child_translate(args.child_translate, args.child_src, args.child_beam,
                        args.child_precision, args.child_hyps, args.child_report, args.threads)
        return
    corpora = [CORPORA[n] for n in parse_configs(parser, args.corpora, tuple(CORPORA))]
    systems = parse_configs(parser, args.systems, SYSTEMS)
    load = warn_if_busy()
    if not args.report_only:
        for corpus in corpora:
            for split in ("train", "valid", "test"):
                for lang in (corpus.src, corpus.tgt):
                    if not corpus.path(args.data_root, split, lang).is_file():
                        parser.error(f"{corpus.path(args.data_root, split, lang)} not found: "
                                     "point --data-root at the folder holding the corpora")
        if args.setup:
            setup_joey(args.joey_venv)
        if "joeynmt" in systems and not (args.joey_venv / "bin" / "python").is_file():
            parser.error(f"no JoeyNMT environment at {args.joey_venv}: add --setup to create "
                         "it, or point --joey-venv at one")
        Bench(args).run(corpora, systems)
    write_report(args.out, corpora, systems, args.data_root, load)


if __name__ == "__main__":
    main()
