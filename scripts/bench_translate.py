"""Benchmark: translation speed, quality and peak memory of a trained model, per backend.

What it measures, on the LibreOffice help test set (en->de, 2,378 lines; ``--src``/``--ref``,
``--limit N`` for the first N lines) with a trained model directory (``--model DIR``), on the
CPU. A configuration is ``SEARCH-BACKEND-MODE[-1sent]``:

- SEARCH: ``greedy`` (beam size 1) or ``beam5`` (beam search with 5 beams);
- BACKEND: ``torch`` (the model directory) or ``onnx`` (its export by ``nmt export --int8``,
  written once into a temporary directory at the start, run by ONNX Runtime);
- MODE: ``fp32``; ``bf16`` (torch only: bf16 autocast, "n/a" on a CPU without native bf16);
  ``int8`` (torch: ``quantize_dynamic`` of the LSTMs and linear layers; onnx: the export's
  int8 graphs, ONNX Runtime's dynamic quantisation);
- ``beam5flat-torch-fp32`` and ``beam5flat-onnx-fp32`` (with ``-1sent`` too), by name only:
  beam 5 with the search's top-k in one stage over beams x vocabulary, the code before the
  two-stage top-k, to measure that change beside ``beam5`` in one run;
- ``...-sl`` (by name only, for example ``beam5-torch-fp32-sl``, ``beam5-onnx-fp32-1sent-sl``):
  the same with the model's lexical shortlist (``--shortlist``; make it first with
  ``nmt shortlist -m DIR``), and the share of its output lines identical to the configuration
  without it, when that ran too;
- batching: batches of ``--batch-tokens`` source tokens (default 8,000: the batch case), or with
  ``-1sent`` one sentence per call, as a server meets them (the first ``--single-limit`` lines,
  default 300; each line's latency is recorded and the median reported).

For each: sentences/s and target tokens/s (SentencePiece pieces of the outputs, EOS not
counted) over the wall time of translating all lines, after a short untimed warm-up;
detokenised BLEU and chrF against the reference (sacreBLEU via :func:`nmt.scoring.score`);
the load time; peak RSS. Each configuration runs in its own subprocess, one after another (the
script re-invokes itself with ``--only NAME`` and reads back a JSON line), so ``ru_maxrss``
gives its peak RSS; each child uses ``--threads`` intra-op threads (default 2). ONNX children
run with ``OMP_WAIT_POLICY=PASSIVE``, as ``nmt translate`` sets it for an export (torch then
runs only the search, and its idle threads must not spin on the cores ONNX Runtime needs).

It also times whole processes, as a user meets them: ``python -m nmt translate --help``
(median of 5 runs) and translating one sentence from stdin,
``echo "Open the file." | python -m nmt translate -m DIR`` (median of 3; model load included),
for the model directory and for its export.

Targets: beam 5 at >= 100 sentences/s on 2 cores in the fastest mode whose BLEU is within
0.3 of fp32's (beam 5); ``nmt translate --help`` under 0.3 s; ONNX Runtime against torch (fp32,
beam 5): single-sentence median latency at most half of torch's, batched sentences/s at least
1.2x torch's, and int8 ONNX at most 0.5 BLEU below fp32 ONNX.

    python scripts/bench_translate.py --model DIR [--src ../shared/data/lohelp-en-de/test.en]
        [--ref ../shared/data/lohelp-en-de/test.de] [--limit N] [--single-limit N]
        [--threads 2] [--batch-tokens 8000] [--configs beam5-torch-fp32,...] [--json FILE]

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
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import parse_configs, peak_rss_mb, run_child, warn_if_busy

SEARCHES = {"greedy": 1, "beam5": 5}
MODES = {"torch": ("fp32", "bf16", "int8"), "onnx": ("fp32", "int8")}
CONFIGS = (tuple(f"{search}-{backend}-{mode}" for search in SEARCHES
                 for backend, modes in MODES.items() for mode in modes)
           + tuple(f"beam5-{backend}-{mode}-1sent" for backend in MODES
                   for mode in ("fp32", "int8")))
#: Asked for by name only (``--configs``): beam 5 with the search's top-k in one stage over
#: beams x vocabulary, as before the two-stage top-k, to measure that change side by side.
FLAT = tuple(f"beam5flat-{backend}-fp32{one}" for backend in MODES for one in ("", "-1sent"))
#: By name only: with the model's lexical shortlist (``--shortlist``).
SHORTLIST = tuple(f"{search}-{backend}-{mode}{one}-sl" for search in SEARCHES
                  for backend, modes in MODES.items() for mode in modes if mode != "int8"
                  for one in ("", "-1sent"))
TARGET_SENT_PER_S, TARGET_BLEU_DROP, TARGET_HELP_S, TARGET_THREADS = 100.0, 0.3, 0.3, 2
TARGET_ONNX_LATENCY, TARGET_ONNX_SPEEDUP, TARGET_ONNX_INT8_DROP = 0.5, 1.2, 0.5
BATCH_TOKENS = 8000
WARMUP_LINES = 8
ONE_SENTENCE = "Open the file."


def read_lines(path: str, limit: int | None) -> list[str]:
    """The first ``limit`` lines (all if None) of a UTF-8 text file."""
    from nmt.scoring import read_lines as read_all

    lines = read_all(path)
    return lines[:limit] if limit is not None else lines


# --------------------------------------------------------------------------- one configuration


def flat_top_candidates(scores: Any, log_probs: Any, n: int) -> tuple[Any, Any, Any]:
    """The search's top-n continuations in one stage over each sentence's K x V (the code
    before :func:`nmt.models.search.top_candidates` split it in two)."""
    active, k = scores.shape
    vocab = log_probs.size(-1)
    flat = (scores.view(-1, 1) + log_probs).view(active, k * vocab)
    top_scores, index = flat.topk(n, dim=1)
    return top_scores, index // vocab, index % vocab


def parse_name(name: str) -> tuple[str, str, str, bool]:
    """(search, backend, mode, one sentence per call) of a configuration name."""
    parts = name.removesuffix("-sl").split("-")
    return parts[0], parts[1], parts[2], parts[-1] == "1sent"


def load_translator(model_dir: str, export_dir: str, backend: str, mode: str) -> Any:
    """``Translator.load`` for a backend and mode (NMTError: not supported here)."""
    from nmt.inference.translator import Translator

    if backend == "onnx":
        return Translator.load(export_dir, quantize="int8" if mode == "int8" else None,
                               backend="onnx")
    if mode == "int8":
        return Translator.load(model_dir, device="cpu", precision="fp32", quantize="int8")
    return Translator.load(model_dir, device="cpu", precision=mode, backend="torch")


def run_config(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Load the model in this configuration, translate the test set once and score it."""
    import torch

    from nmt.errors import NMTError
    from nmt.scoring import score

    torch.set_num_threads(args.threads)
    search, backend, mode, single = parse_name(name)
    if search == "beam5flat":
        from nmt.models import search as search_module

        search_module.top_candidates = flat_top_candidates
    limit = min(args.single_limit, args.limit or args.single_limit) if single else args.limit
    src, ref = read_lines(args.src, limit), read_lines(args.ref, limit)
    record: dict[str, Any] = {"config": name, "search": search, "backend": backend,
                              "mode": mode, "one_sentence_per_call": single,
                              "beam_size": 5 if search == "beam5flat" else SEARCHES[search],
                              "threads": torch.get_num_threads(),
                              "sentences": len(src)}
    start = time.perf_counter()
    try:
        translator = load_translator(args.model, args.export, backend, mode)
        if name.endswith("-sl"):
            translator.use_shortlist(args.export if backend == "onnx" else args.model)
    except NMTError as exc:
        return {**record, "supported": False, "error": str(exc), "peak_rss_mb": peak_rss_mb()}
    record["load_s"] = time.perf_counter() - start
    record["shortlist"] = name.endswith("-sl")
    options: dict[str, Any] = {"beam_size": record["beam_size"],
                               "batch_tokens": args.batch_tokens}
    translator.translate(src[:WARMUP_LINES], **options)
    latencies: list[float] = []
    start = time.perf_counter()
    if single:
        hyps = []
        for line in src:
            began = time.perf_counter()
            hyps += translator.translate([line], **options)
            latencies.append(time.perf_counter() - began)
    else:
        hyps = translator.translate(src, **options)
    seconds = time.perf_counter() - start
    Path(args.export).parent.joinpath(f"{name}.hyp").write_text(
        "".join(f"{h}\n" for h in hyps), encoding="utf-8")  # compared by the parent
    tokens = sum(len(translator.tgt_tok.encode(h, add_eos=False)) for h in hyps)
    scores = score(hyps, [ref])
    if latencies:
        ordered = sorted(latencies)
        record.update(latency_median_ms=1000 * statistics.median(latencies),
                      latency_p90_ms=1000 * ordered[int(0.9 * (len(ordered) - 1))])
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
               "--model", args.model, "--export", args.export, "--src", args.src,
               "--ref", args.ref, "--threads", str(args.threads),
               "--batch-tokens", str(args.batch_tokens),
               "--single-limit", str(args.single_limit)]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if parse_name(name)[1] == "onnx":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # as nmt translate sets it for an export
    start = time.perf_counter()
    record = run_child(command, name, env)
    took = time.perf_counter() - start
    if record["supported"]:
        latency = (f", median latency {record['latency_median_ms']:.1f} ms"
                   if "latency_median_ms" in record else "")
        print(f"  {name}: {record['sentences_per_s']:,.1f} sentences/s{latency}, BLEU "
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
    """The fastest supported batched configuration of ``search`` (either backend) whose BLEU is
    within the drop of torch fp32's."""
    base = records.get(f"{search}-torch-fp32")
    if not base or not base["supported"]:
        return None
    close = [r for r in records.values() if r["search"] == search and r["supported"]
             and not r["one_sentence_per_call"] and r["bleu"] >= base["bleu"] - TARGET_BLEU_DROP]
    return max(close, key=lambda r: r["sentences_per_s"]) if close else None


def print_table(records: dict[str, dict[str, Any]]) -> None:
    """The Markdown table of the configurations."""
    print("| config | backend | batch | sentences/s | median latency ms | target tokens/s | "
          "BLEU | chrF | load s | peak RSS MB | lines as without shortlist |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in records.items():
        batch = "1 sentence" if r["one_sentence_per_call"] else "tokens"
        if not r["supported"]:
            print(f"| {name} | {r['backend']} | {batch} | n/a (not supported) | | | | | | | |")
            continue
        latency = f"{r['latency_median_ms']:.1f}" if "latency_median_ms" in r else ""
        same = f"{100 * r['same_lines_as_full']:.1f}%" if "same_lines_as_full" in r else ""
        print(f"| {name} | {r['backend']} | {batch} | {r['sentences_per_s']:,.1f} | {latency} | "
              f"{r['tokens_per_s']:,.0f} | {r['bleu']:.2f} | {r['chrf']:.2f} | "
              f"{r['load_s']:.2f} | {r['peak_rss_mb']:,.0f} | {same} |")


def onnx_targets(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ONNX Runtime targets against torch (beam 5, fp32), as far as measured."""
    def get(name: str) -> dict[str, Any] | None:
        r = records.get(name)
        return r if r and r["supported"] else None

    out: dict[str, Any] = {}
    single_t, single_o = get("beam5-torch-fp32-1sent"), get("beam5-onnx-fp32-1sent")
    if single_t and single_o:
        ratio = single_o["latency_median_ms"] / single_t["latency_median_ms"]
        out["latency_ratio"] = {"value": ratio, "target": TARGET_ONNX_LATENCY,
                                "met": ratio <= TARGET_ONNX_LATENCY}
    batch_t, batch_o = get("beam5-torch-fp32"), get("beam5-onnx-fp32")
    if batch_t and batch_o:
        ratio = batch_o["sentences_per_s"] / batch_t["sentences_per_s"]
        out["batched_speedup"] = {"value": ratio, "target": TARGET_ONNX_SPEEDUP,
                                  "met": ratio >= TARGET_ONNX_SPEEDUP}
    int8 = get("beam5-onnx-int8")
    if batch_o and int8:
        drop = batch_o["bleu"] - int8["bleu"]
        out["int8_bleu_drop"] = {"value": drop, "target": TARGET_ONNX_INT8_DROP,
                                 "met": drop <= TARGET_ONNX_INT8_DROP}
    return out


def export(args: argparse.Namespace, directory: str) -> float:
    """``nmt export --int8`` of the model into ``directory``; returns the seconds it took."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nmt", "export", "-m", args.model, "-o",
                           directory, "--int8", "-q"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nmt export failed: {proc.stderr.strip()}")
    return time.perf_counter() - start


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
    parser.add_argument("--batch-tokens", type=int, default=BATCH_TOKENS, metavar="N",
                        help=f"source-token budget of a batch (default {BATCH_TOKENS:,})")
    parser.add_argument("--single-limit", type=int, default=300, metavar="N",
                        help="lines translated one per call in the -1sent configs (default 300)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--only", choices=CONFIGS + FLAT + SHORTLIST, help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)  # the children's export directory
    args = parser.parse_args()
    for label, path in (("model directory", args.model), ("source", args.src),
                        ("reference", args.ref)):
        if not Path(path).exists():
            print(f"{label} not found: {path}", file=sys.stderr)
            return 2
    args.model, args.src, args.ref = (str(Path(p).resolve())
                                      for p in (args.model, args.src, args.ref))
    if (args.limit is not None and args.limit < 1) or args.single_limit < 1:
        parser.error("--limit and --single-limit must be at least 1")
    if args.only:
        return run_one(args)
    names = parse_configs(parser, args.configs, CONFIGS + FLAT + SHORTLIST)

    start = time.perf_counter()
    load = warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="bench_translate_") as tmp:
        args.export = str(Path(tmp) / "export")
        export_s = None
        if any(parse_name(name)[1] == "onnx" for name in names):
            export_s = export(args, args.export)
            print(f"  exported to ONNX in {export_s:.1f} s", file=sys.stderr, flush=True)
        records = {name: child(args, name) for name in names}  # one after another
        for name, record in records.items():  # a shortlist's outputs against the full search's
            full = Path(tmp) / f"{name.removesuffix('-sl')}.hyp"
            if name.endswith("-sl") and record["supported"] and full.is_file():
                a = full.read_text(encoding="utf-8").splitlines()
                b = (Path(tmp) / f"{name}.hyp").read_text(encoding="utf-8").splitlines()
                same = sum(x == y for x, y in zip(a, b, strict=True))
                record["same_lines_as_full"] = same / len(a)
        print("  timing whole processes ...", file=sys.stderr, flush=True)
        help_run = median_wall([sys.executable, "-m", "nmt", "translate", "--help"], 5)
        one_run = median_wall([sys.executable, "-m", "nmt", "translate", "-m", args.model], 3,
                              stdin=ONE_SENTENCE + "\n")
        one_onnx = (median_wall([sys.executable, "-m", "nmt", "translate", "-m", args.export],
                                3, stdin=ONE_SENTENCE + "\n") if export_s is not None
                    else {"median_s": float("nan"), "runs_s": [], "last_stdout": ""})

    from nmt.pipeline.reports import hardware

    sentences = next(iter(records.values()))["sentences"] if records else 0
    print(f"\n{sentences} sentences of {args.src}, {args.threads} threads per configuration, "
          f"batches of {args.batch_tokens:,} source tokens (-1sent: the first "
          f"{args.single_limit} lines, one per call); {hardware()}\n")
    print_table(records)
    print(f"\nwhole process: `nmt translate --help` {help_run['median_s']:.3f} s (median of 5); "
          f"one sentence {one_run['median_s']:.2f} s with torch, {one_onnx['median_s']:.2f} s "
          f"with the ONNX export (median of 3): "
          f"{ONE_SENTENCE!r} -> {one_run['last_stdout'].strip()!r} / "
          f"{one_onnx['last_stdout'].strip()!r}; nmt export --int8 took "
          f"{'-' if export_s is None else f'{export_s:.1f}'} s")

    print()
    best = {search: fastest_within(records, search) for search in SEARCHES}
    for search, r in best.items():
        if r is not None:
            print(f"fastest {search} mode within {TARGET_BLEU_DROP} BLEU of torch fp32: "
                  f"{r['backend']} {r['mode']} "
                  f"({r['sentences_per_s']:,.1f} sentences/s, BLEU {r['bleu']:.2f})")
    beam = best["beam5"]
    if beam is None:
        print("target beam 5 >= 100 sentences/s: not measured (no beam5-fp32 row)")
    else:
        met = beam["sentences_per_s"] >= TARGET_SENT_PER_S
        cores = "" if args.threads == TARGET_THREADS else f" (measured on {args.threads} threads)"
        print(f"target beam 5 >= {TARGET_SENT_PER_S:g} sentences/s on {TARGET_THREADS} cores "
              f"({beam['backend']} {beam['mode']}): {'met' if met else 'MISSED'}{cores}")
    help_met = help_run["median_s"] < TARGET_HELP_S
    print(f"target `nmt translate --help` < {TARGET_HELP_S} s: {'met' if help_met else 'MISSED'}")
    targets = onnx_targets(records)
    labels = {"latency_ratio": ("ONNX single-sentence beam-5 median latency / torch's", "<="),
              "batched_speedup": ("ONNX batched beam-5 sentences/s / torch's", ">="),
              "int8_bleu_drop": ("int8 ONNX BLEU below fp32 ONNX (beam 5)", "<=")}
    for key, (label, sign) in labels.items():
        if key in targets:
            t = targets[key]
            print(f"target {label} {sign} {t['target']:g}: {t['value']:.2f}, "
                  f"{'met' if t['met'] else 'MISSED'}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        result = {"src": args.src, "ref": args.ref, "model": args.model, "limit": args.limit,
                  "threads": args.threads, "batch_tokens": args.batch_tokens,
                  "load_average_at_start": load, "configs": records,
                  "translate_help_s": {k: v for k, v in help_run.items() if k != "last_stdout"},
                  "one_sentence_s": one_run, "one_sentence_onnx_s": one_onnx,
                  "export_s": export_s, "hardware": hardware(), "onnx_targets": targets,
                  "fastest_within_bleu": {s: r and r["config"] for s, r in best.items()},
                  "targets": {"beam5_sentences_per_s": TARGET_SENT_PER_S,
                              "bleu_drop": TARGET_BLEU_DROP, "translate_help_s": TARGET_HELP_S,
                              "threads": TARGET_THREADS}}
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
