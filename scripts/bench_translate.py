"""Benchmark: translation speed, quality and peak memory of a trained model, in one run.

What it measures, on the LibreOffice help test set (en->de, 2,378 lines; ``--src``/``--ref``,
``--limit N`` for the first N lines) with a trained model directory (``--model DIR``), on the
CPU, for six configurations:

- ``greedy-fp32``, ``greedy-bf16``, ``greedy-int8``: greedy search (beam size 1);
- ``beam5-fp32``, ``beam5-bf16``, ``beam5-int8``: beam search with 5 beams;

where fp32 is plain fp32, bf16 is bf16 autocast (``Translator.load(..., precision="bf16")``) and
int8 is ``Translator.load(..., quantize="int8")``: where ``Translator.load`` does not take that
keyword (it raises TypeError), the int8 rows read "n/a (not supported)".

For each: sentences/s and target tokens/s (SentencePiece pieces of the outputs, EOS not
counted) over the wall time of one ``Translator.translate`` call on all lines, after a short
untimed warm-up on the first few lines; detokenised BLEU and chrF against the reference
(sacreBLEU via :func:`nmt.evaluate.score`); the model's load time; peak RSS. Each
configuration runs in its own subprocess, one after another (the script re-invokes itself
with ``--only NAME`` and reads back a JSON line), so ``ru_maxrss`` gives its peak RSS; each
child uses ``--threads`` intra-op threads (default 2, the cores the target is set for).

It also times whole processes, as a user meets them: ``python -m nmt translate --help``
(median of 5 runs) and translating one sentence from stdin,
``echo "Open the file." | python -m nmt translate -m DIR`` (median of 3; model load included).

Targets: beam 5 at >= 100 sentences/s on 2 cores in the fastest mode whose BLEU is within
0.3 of fp32's (beam 5); ``nmt translate --help`` under 0.3 s.

    python scripts/bench_translate.py --model DIR [--src ../shared/data/lohelp-en-de/test.en]
        [--ref ../shared/data/lohelp-en-de/test.de] [--limit N] [--threads 2]
        [--batch-tokens N] [--configs greedy-fp32,...] [--json FILE]

Run it on an otherwise idle machine: other processes sharing the cores lower every figure
(a warning is printed when the load average is above 0.5 at the start).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import parse_configs, peak_rss_mb, run_child, warn_if_busy

SEARCHES = {"greedy": 1, "beam5": 5}
MODES = ("fp32", "bf16", "int8")
CONFIGS = tuple(f"{search}-{mode}" for search in SEARCHES for mode in MODES)
TARGET_SENT_PER_S, TARGET_BLEU_DROP, TARGET_HELP_S, TARGET_THREADS = 100.0, 0.3, 0.3, 2
WARMUP_LINES = 8
ONE_SENTENCE = "Open the file."



def read_lines(path: str, limit: int | None) -> list[str]:
    """The first ``limit`` lines (all if None) of a UTF-8 text file."""
    from nmt.evaluate import read_lines as read_all

    lines = read_all(path)
    return lines[:limit] if limit is not None else lines


# --------------------------------------------------------------------------- one configuration


def load_translator(model_dir: str, mode: str) -> Any:
    """``Translator.load`` for a mode; TypeError propagates where int8 is not supported."""
    from nmt.translate import Translator

    if mode == "int8":
        return Translator.load(model_dir, device="cpu", precision="fp32", quantize="int8")
    return Translator.load(model_dir, device="cpu", precision=mode)


def run_config(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Load the model in this configuration, translate the test set once and score it."""
    import torch

    from nmt.evaluate import score

    torch.set_num_threads(args.threads)
    search, mode = name.split("-")
    src, ref = read_lines(args.src, args.limit), read_lines(args.ref, args.limit)
    record: dict[str, Any] = {"config": name, "search": search, "mode": mode,
                              "beam_size": SEARCHES[search], "threads": torch.get_num_threads(),
                              "sentences": len(src)}
    start = time.perf_counter()
    try:
        translator = load_translator(args.model, mode)
    except TypeError as exc:
        return {**record, "supported": False, "error": str(exc), "peak_rss_mb": peak_rss_mb()}
    record["load_s"] = time.perf_counter() - start
    options: dict[str, Any] = {"beam_size": SEARCHES[search]}
    if args.batch_tokens:
        options["batch_tokens"] = args.batch_tokens
    translator.translate(src[:WARMUP_LINES], **options)
    start = time.perf_counter()
    hyps = translator.translate(src, **options)
    seconds = time.perf_counter() - start
    tokens = sum(len(translator.tgt_tok.encode(h, add_eos=False)) for h in hyps)
    scores = score(hyps, [ref])
    return {**record, "supported": True, "seconds": seconds, "target_tokens": tokens,
            "sentences_per_s": len(src) / seconds, "tokens_per_s": tokens / seconds,
            "bleu": scores.bleu, "chrf": scores.chrf, "bleu_signature": scores.bleu_signature,
            "truncated": len(translator.truncated), "peak_rss_mb": peak_rss_mb()}


def run_one(args: argparse.Namespace) -> int:
    """Child mode: run one configuration and print its JSON record as the last stdout line."""
    import logging

    logging.getLogger("nmt").setLevel(logging.WARNING)
    print(json.dumps(run_config(args, args.only)), flush=True)
    return 0


def child(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Run ``--only name`` in a subprocess and parse its JSON line."""
    command = [sys.executable, str(Path(__file__).resolve()), "--only", name,
               "--model", args.model, "--src", args.src, "--ref", args.ref,
               "--threads", str(args.threads)]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    if args.batch_tokens:
        command += ["--batch-tokens", str(args.batch_tokens)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    record = run_child(command, name, env)
    took = time.perf_counter() - start
    if record["supported"]:
        print(f"  {name}: {record['sentences_per_s']:,.1f} sentences/s, BLEU "
              f"{record['bleu']:.2f} ({took:.0f} s with set-up)", file=sys.stderr, flush=True)
    else:
        print(f"  {name}: not supported ({record['error']})", file=sys.stderr, flush=True)
    return record


# --------------------------------------------------------------------------- whole processes


def median_wall(command: list[str], runs: int, stdin: str | None = None) -> dict[str, Any]:
    """Median (and all) wall times in seconds of running ``command`` ``runs`` times."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(command, input=stdin, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed with exit status {proc.returncode}:\n"
                             f"{proc.stderr.strip()}")
    return {"median_s": statistics.median(times), "runs_s": times, "last_stdout": proc.stdout}


# --------------------------------------------------------------------------- driver


def fastest_within(records: dict[str, dict[str, Any]], search: str) -> dict[str, Any] | None:
    """The fastest supported mode of ``search`` whose BLEU is within the drop of its fp32's."""
    base = records.get(f"{search}-fp32")
    if not base or not base["supported"]:
        return None
    close = [r for r in records.values() if r["search"] == search and r["supported"]
             and r["bleu"] >= base["bleu"] - TARGET_BLEU_DROP]
    return max(close, key=lambda r: r["sentences_per_s"]) if close else None


def print_table(records: dict[str, dict[str, Any]]) -> None:
    """The Markdown table of the configurations."""
    print("| config | sentences/s | target tokens/s | BLEU | chrF | load s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in records.items():
        if not r["supported"]:
            print(f"| {name} | n/a (not supported) | | | | | |")
            continue
        print(f"| {name} | {r['sentences_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | "
              f"{r['bleu']:.2f} | {r['chrf']:.2f} | {r['load_s']:.2f} | "
              f"{r['peak_rss_mb']:,.0f} |")


def main() -> int:
    """Parse arguments; run all configurations one after another and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(__file__).resolve().parent.parent.parent / "shared/data/lohelp-en-de"
    parser.add_argument("--model", required=True, metavar="DIR", help="trained model directory")
    parser.add_argument("--src", default=str(data / "test.en"), help="source lines")
    parser.add_argument("--ref", default=str(data / "test.de"), help="reference lines")
    parser.add_argument("--limit", type=int, metavar="N", help="use the first N lines only")
    parser.add_argument("--threads", type=int, default=TARGET_THREADS,
                        help="intra-op threads of each configuration's process")
    parser.add_argument("--batch-tokens", type=int, metavar="N",
                        help="source-token budget of a batch (default: the model's config)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    for label, path in (("model directory", args.model), ("source", args.src),
                        ("reference", args.ref)):
        if not Path(path).exists():
            print(f"{label} not found: {path}", file=sys.stderr)
            return 2
    args.model, args.src, args.ref = (str(Path(p).resolve())
                                      for p in (args.model, args.src, args.ref))
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.only:
        return run_one(args)
    names = parse_configs(parser, args.configs, CONFIGS)

    start = time.perf_counter()
    load = warn_if_busy()
    records = {name: child(args, name) for name in names}  # one after another, never at once
    print("  timing whole processes ...", file=sys.stderr, flush=True)
    help_run = median_wall([sys.executable, "-m", "nmt", "translate", "--help"], 5)
    one_run = median_wall([sys.executable, "-m", "nmt", "translate", "-m", args.model], 3,
                          stdin=ONE_SENTENCE + "\n")

    sentences = next(iter(records.values()))["sentences"] if records else 0
    print(f"\n{sentences} sentences of {args.src}, {args.threads} threads per configuration, "
          f"batches of {args.batch_tokens or 'the config default'} source tokens\n")
    print_table(records)
    print(f"\nwhole process: `nmt translate --help` {help_run['median_s']:.3f} s (median of 5); "
          f"one sentence {one_run['median_s']:.2f} s (median of 3): "
          f"{ONE_SENTENCE!r} -> {one_run['last_stdout'].strip()!r}")

    print()
    best = {search: fastest_within(records, search) for search in SEARCHES}
    for search, r in best.items():
        if r is not None:
            print(f"fastest {search} mode within {TARGET_BLEU_DROP} BLEU of fp32: {r['mode']} "
                  f"({r['sentences_per_s']:,.1f} sentences/s, BLEU {r['bleu']:.2f})")
    beam = best["beam5"]
    if beam is None:
        print("target beam 5 >= 100 sentences/s: not measured (no beam5-fp32 row)")
    else:
        met = beam["sentences_per_s"] >= TARGET_SENT_PER_S
        cores = "" if args.threads == TARGET_THREADS else f" (measured on {args.threads} threads)"
        print(f"target beam 5 >= {TARGET_SENT_PER_S:g} sentences/s on {TARGET_THREADS} cores "
              f"({beam['mode']}): {'met' if met else 'MISSED'}{cores}")
    help_met = help_run["median_s"] < TARGET_HELP_S
    print(f"target `nmt translate --help` < {TARGET_HELP_S} s: {'met' if help_met else 'MISSED'}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        result = {"src": args.src, "ref": args.ref, "model": args.model, "limit": args.limit,
                  "threads": args.threads, "batch_tokens": args.batch_tokens,
                  "load_average_at_start": load, "configs": records,
                  "translate_help_s": {k: v for k, v in help_run.items() if k != "last_stdout"},
                  "one_sentence_s": one_run,
                  "fastest_within_bleu": {s: r and r["config"] for s, r in best.items()},
                  "targets": {"beam5_sentences_per_s": TARGET_SENT_PER_S,
                              "bleu_drop": TARGET_BLEU_DROP, "translate_help_s": TARGET_HELP_S,
                              "threads": TARGET_THREADS}}
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
