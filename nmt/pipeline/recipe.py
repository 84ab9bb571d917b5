"""Recipes: one experiment end to end, in stages that can run alone and skip finished work.

Stages: 0 ``data`` (fetch or unpack, load through ``datasets``, cache as Arrow), 1
``tokenizer`` (train SentencePiece, encode and clean every split), 2 ``train`` (fresh, resumed
after an interruption, or skipped when finished), 3 ``translate`` (the test set with the
config's beam search, precision ``auto`` as ``nmt translate``; skipped when the hypotheses of
the same weights, settings and precision exist), 4 ``score`` (sacreBLEU BLEU and chrF with
signatures; ``results.json`` and the model card ``README.md`` from
:mod:`nmt.pipeline.reports`). File names come from :class:`nmt.layout.RunDir`.

A recipe script in ``recipes/`` is a :class:`Recipe` (its YAML config, plus an optional hook that
prepares the data) handed to :func:`main`::

    python recipes/lohelp_en_de.py [--stage N] [--stop-stage M] [--out RUN_DIR]
        [--precision auto|fp32|bf16] [KEY=VALUE ...]

Every stage's wall time lands in ``RUN_DIR/stages.json``; all files are written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt.config import Config
from nmt.console import ArgumentParser, parse_args, run_reporting_errors, setup_logging
from nmt.errors import NMTError
from nmt.layout import RunDir

log = logging.getLogger(__name__)

STAGES = ("data", "tokenizer", "train", "translate", "score")


@dataclass
class Recipe:
    """What makes one experiment: a name, a config file, and how its data is made ready.

    ``values(args)`` returns config values computed at run time (absolute paths of shipped
    data, for instance); they apply over the YAML file and under command-line overrides.
    ``fetch(config, args)`` runs first in stage 0 (unpack an archive, generate toy data).
    ``add_arguments(parser)`` adds recipe-specific flags, read by ``values``.
    """

    name: str
    description: str
    config_file: Path
    data_notice: str = ""
    values: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}
    fetch: Callable[[Config, argparse.Namespace], None] | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    cite: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- command line


def build_parser(recipe: Recipe) -> argparse.ArgumentParser:
    """The recipe's arguments: stages, run directory, overrides (and its own flags)."""
    stages = ", ".join(f"{i} {name}" for i, name in enumerate(STAGES))
    parser = ArgumentParser(prog=f"python recipes/{recipe.name}.py",
                            description=f"{recipe.description} Stages: {stages}.",
                            epilog="Finished stages are skipped when run again; KEY=VALUE "
                                   "overrides apply over the recipe's config, e.g. "
                                   "training.max_minutes=5.")
    parser.add_argument("--stage", type=int, default=0, metavar="N",
                        help="first stage to run (default 0)")
    parser.add_argument("--stop-stage", type=int, default=len(STAGES) - 1, metavar="M",
                        help=f"last stage to run (default {len(STAGES) - 1})")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help=f"run directory (default: runs/{recipe.name})")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="precision of stage 3 (translate); auto (default) picks it as nmt "
                             "translate does")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    if recipe.add_arguments is not None:
        recipe.add_arguments(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser


def main(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """Run the recipe's stages from the command line; user mistakes give one line, exit 2."""
    parser = build_parser(recipe)
    args = parse_args(parser, argv)
    setup_logging(args.quiet)
    last = len(STAGES) - 1
    if not 0 <= args.stage <= args.stop_stage <= last:
        parser.error(f"need 0 <= --stage ({args.stage}) <= --stop-stage ({args.stop_stage}) "
                     f"<= {last}")

    def stages() -> int:
        run(recipe, recipe_config(recipe, args), args.stage, args.stop_stage, quiet=args.quiet,
            args=args)
        return 0

    return run_reporting_errors(parser.prog, stages)


def recipe_config(recipe: Recipe, args: argparse.Namespace) -> Config:
    """The YAML file, then the recipe's computed values, then ``--out``, then the overrides."""
    from nmt.config import from_dict, merge, parse_overrides, read_yaml

    raw = read_yaml(recipe.config_file)
    raw.setdefault("name", recipe.name)
    merge(raw, recipe.values(args))
    if args.out:
        merge(raw, {"output_dir": args.out})
    elif "output_dir" not in raw:
        raw["output_dir"] = f"runs/{recipe.name}"
    merge(raw, parse_overrides(args.overrides))
    return from_dict(raw)


# --------------------------------------------------------------------------- the stages


class Skipped(str):
    """A stage's summary when it found its work done: its earlier timing is kept."""


@dataclass
class Job:
    """What every stage gets: the recipe, the resolved config, and the command line."""

    recipe: Recipe
    config: Config
    quiet: bool
    args: argparse.Namespace


def run(recipe: Recipe, config: Config, first: int = 0, last: int = len(STAGES) - 1,
        quiet: bool = False, args: argparse.Namespace | None = None) -> None:
    """Run stages ``first`` to ``last`` of ``recipe`` into ``config.out``."""
    job = Job(recipe, config, quiet, args or argparse.Namespace())
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    if first <= STAGES.index("train") <= last and _read_json(RunDir(out).training) is None:
        from nmt.training.schedule import describe_budget

        print(f"== training: {describe_budget(config.training)}; an estimate of when it "
              f"ends follows its first {config.training.log_every} updates", flush=True)
    for index in range(first, last + 1):
        name = STAGES[index]
        print(f"== stage {index} {name}", flush=True)
        start = time.perf_counter()
        summary = STAGE_FUNCTIONS[name](job)
        seconds = time.perf_counter() - start
        recorded = _read_json(RunDir(out).stages) or {}
        if not isinstance(summary, Skipped) or name not in recorded:
            _record_stage(out, name, seconds, summary)
        print(f"   {summary} ({seconds:.1f} s)", flush=True)


def _stage_data(job: Job) -> str:
    recipe, config = job.recipe, job.config
    from nmt.data.id_cache import cache_dir
    from nmt.data.sources import SPLITS, load_splits

    if recipe.fetch is not None:
        recipe.fetch(config, job.args)
    splits = load_splits(config.data, cache_dir(config), SPLITS)
    return ", ".join(f"{name}: {len(ds):,} pairs" for name, ds in splits.items())


def _stage_tokenizer(job: Job) -> str:
    from nmt.data.prepare import prepare_run_dir

    prepared = prepare_run_dir(job.config, keep_trained=True)
    for line in prepared.summary().splitlines():
        if "pairs kept" not in line:  # nmt.data.prepare has logged those
            log.info("%s", line)
    vocab = (f"{prepared.src_tok.vocab_size}" if prepared.src_tok is prepared.tgt_tok else
             f"{prepared.src_tok.vocab_size}/{prepared.tgt_tok.vocab_size}")
    return f"vocabulary {vocab}; " + "; ".join(s.describe() for s in prepared.stats.values())


def _stage_train(job: Job) -> str:
    config = job.config
    from nmt.device import precision_name
    from nmt.fileio import write_text_atomic
    from nmt.training.trainer import Trainer

    run = RunDir(config.out)
    done = _read_json(run.training)
    if done is not None:
        return Skipped(f"already trained ({done['steps']} updates, {done['seconds']:.0f} s): "
                       f"skipped; delete {run.training} and use --resume with nmt train to "
                       "train further")
    resume = run.has_training_state()
    if resume:
        log.info("resuming the interrupted training in %s", config.out)
    trainer = Trainer(config, resume=resume, quiet=job.quiet)
    progress = trainer.fit()
    info = {"steps": progress.step, "epochs": progress.epoch, "seconds": progress.elapsed,
            "best_step": progress.best_step,
            "best_valid_bleu": progress.best_score if progress.validated else None,
            "parameters": trainer.params,
            "device": str(trainer.device), "precision": precision_name(trainer.dtype),
            "target_tokens_per_s": _mean_speed(progress.history)}
    if progress.averaged is not None:
        info["averaged"] = progress.averaged
    base = _read_json(run.base_model)
    if base is not None:  # fine-tuned: the model it started from
        info["base_model"] = base
    write_text_atomic(run.training, json.dumps(info, indent=2) + "\n")
    best = (f"best validation BLEU {progress.best_score:.2f} at update {progress.best_step}"
            if progress.validated else f"no validation set (kept the weights of update "
            f"{progress.best_step}, of lowest training loss)")
    return f"{progress.step} updates, {progress.epoch} epochs, {best}"


def _stage_translate(job: Job) -> str:
    config = job.config
    from nmt.config import to_dict
    from nmt.data.id_cache import cache_dir
    from nmt.data.sources import load_splits
    from nmt.device import precision_name, resolve_device, resolve_precision
    from nmt.fileio import sha256_file, sha256_text
    from nmt.inference.evaluate import translate_to_file
    from nmt.inference.translator import Translator

    test = load_splits(config.data, cache_dir(config), ("test",)).get("test")
    if test is None:
        raise NMTError("the config names no test split (data.test): nothing to translate")
    run = RunDir(config.out)
    if not run.model.is_file():
        raise NMTError(f"{run.model} does not exist: run stage 2 (train) first")
    beam = config.decoding.beam_size
    hyp_path, meta_path = run.hypotheses("test", beam), run.hypotheses_meta("test", beam)
    src = list(test["src"])
    # one rule with nmt translate and nmt evaluate: precision auto unless --precision says
    device, precision = config.training.device, getattr(job.args, "precision", "auto")
    # the hypotheses are re-made when the weights, the test sources, the search settings or
    # the precision change
    key = {"model_sha256": sha256_file(run.model), "test_sha256": sha256_text(*src),
           "decoding": to_dict(config.decoding),
           "precision": precision_name(resolve_precision(precision, resolve_device(device)))}
    meta = _read_json(meta_path)
    if meta is not None and all(meta.get(k) == v for k, v in key.items()) and hyp_path.is_file():
        return Skipped(f"{hyp_path.name} is up to date: skipped")
    translator = Translator.load(run.root, device, precision)
    # this run's search settings (the recipe's config and overrides), not the saved ones
    meta = translate_to_file(translator, src, hyp_path, meta_path, key, config.decoding)
    return f"{len(src):,} sentences, beam {beam}, {meta['precision']}, " \
           f"{meta['sentences_per_s']:.1f} sentences/s"


def _stage_score(job: Job) -> str:
    recipe, config = job.recipe, job.config
    from nmt.data.id_cache import cache_dir
    from nmt.data.sources import load_splits
    from nmt.fileio import write_text_atomic
    from nmt.pipeline.reports import model_card, results
    from nmt.scoring import bleu_tokenizer, read_lines, score

    run = RunDir(config.out)
    beam = config.decoding.beam_size
    hyp_path = run.hypotheses("test", beam)
    if not hyp_path.is_file():
        raise NMTError(f"{hyp_path} does not exist: run stage 3 (translate) first")
    test = load_splits(config.data, cache_dir(config), ("test",))["test"]
    scores = score(read_lines(hyp_path), [list(test["tgt"])], hyp_name=str(hyp_path),
                   ref_names=["test references"], tokenize=bleu_tokenizer(config.data.tgt_lang))
    base = Path.cwd()  # where the run's relative paths (runs/NAME) start
    report = results(recipe.name, config, scores, beam, training=_read_json(run.training) or {},
                     translation=_read_json(run.hypotheses_meta("test", beam)) or {},
                     stages=_read_json(run.stages) or {}, base=base)
    write_text_atomic(run.results, json.dumps(report, indent=2) + "\n")
    write_text_atomic(run.card, model_card(recipe, config, report, base))
    return (f"test BLEU {scores.bleu:.2f}, chrF {scores.chrf:.2f} ({scores.bleu_signature}); "
            f"{run.results.name} and {run.card.name} written")


STAGE_FUNCTIONS: dict[str, Callable[[Job], str]] = {
    "data": _stage_data, "tokenizer": _stage_tokenizer, "train": _stage_train,
    "translate": _stage_translate, "score": _stage_score}


# --------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise NMTError(f"{path} is damaged (not JSON): delete it to redo its stage") from None


def _record_stage(out: Path, name: str, seconds: float, summary: str) -> None:
    from nmt.fileio import write_text_atomic

    path = RunDir(out).stages
    stages = _read_json(path) or {}
    stages[name] = {"seconds": seconds, "summary": summary,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_text_atomic(path, json.dumps(stages, indent=2) + "\n")


def _mean_speed(history: list[dict[str, float]]) -> float | None:
    speeds = [h["tokens_per_s"] for h in history if h.get("tokens_per_s")]
    return round(sum(speeds) / len(speeds), 1) if speeds else None


def unpack(archive: Path, target: Path) -> None:
    """Extract a ``.tar.xz`` beside itself once: into a temporary folder, then renamed."""
    import shutil
    import tarfile
    import tempfile

    if target.is_dir():
        return
    if not archive.is_file():
        raise NMTError(f"corpus archive not found: {archive}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with tarfile.open(archive, "r:xz") as tar:
            try:
                tar.extractall(tmp, filter="data")  # refuses links and paths out of tmp
            except TypeError:  # Python < 3.10.12 has no filters
                tar.extractall(tmp)
        os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("unpacked %s into %s", archive.name, target)
