"""Lexical shortlist sizes: speed, BLEU and identical outputs against the full vocabulary, side
by side in one process.

    python scripts/bench_shortlist.py -m runs/lohelp_en_de \\
        --src ../shared/data/lohelp-en-de/test.en --ref ../shared/data/lohelp-en-de/test.de \\
        --sizes 20:100,50:200,100:500 [--single-limit 200] [--json out.json]

The table is built once from the model's training data (IBM Model 1, the largest sizes
asked for) and cut to each size ``PER_SOURCE:FREQUENT`` (its lists are sorted, so a cut is the
table that size would build). For the full vocabulary and each size: beam 5 over the test set
in batches (the model's ``decoding.batch_tokens``) and one sentence per call over the first
``--single-limit`` lines, in the model's precision (``auto``); sentences/s, BLEU, chrF, the
share of lines identical to the full search's, the mean vocabulary of a batch and of a
sentence, and the share of reference pieces a sentence's shortlist holds (coverage). The first
configuration is run twice and the first run dropped (warm-up).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--ref", required=True)
    parser.add_argument("--sizes", default="20:100,50:200,100:500")
    parser.add_argument("--single-limit", type=int, default=200)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json")
    args = parser.parse_args()
    sizes = [tuple(int(x) for x in size.split(":")) for size in args.sizes.split(",")]

    from nmt.data.shortlist import Shortlist
    from nmt.inference.evaluate import make_shortlist
    from nmt.inference.translator import Translator
    from nmt.layout import RunDir
    from nmt.pipeline.reports import hardware
    from nmt.scoring import read_lines, score

    run = RunDir(Path(args.model))
    existing = run.shortlist.read_bytes() if run.shortlist.is_file() else None
    started = time.perf_counter()
    make_shortlist(run.root, max(s for s, _ in sizes), max(f for _, f in sizes))
    build_s = time.perf_counter() - started
    translator = Translator.load(run.root, device="cpu", precision=args.precision)
    table = translator.use_shortlist(run.root).shortlist
    if existing is not None:  # the model directory's own table back in place
        run.shortlist.write_bytes(existing)
    else:
        run.shortlist.unlink()
    src, ref = read_lines(args.src), read_lines(args.ref)
    options = {"beam_size": args.beam_size}
    ref_ids = [translator.tgt_tok.encode(line) for line in ref]

    def measure(size: tuple[int, int] | None) -> dict:
        translator.shortlist = (None if size is None else Shortlist(
            table.candidates[:, :size[0]].contiguous(), table.frequent[:size[1]], table.joint,
            table.target_size))
        record: dict = {"per_source": size and size[0], "frequent": size and size[1]}
        start = time.perf_counter()
        hyps = translator.translate(src, **options)
        record["batched_s"] = time.perf_counter() - start
        record["batched_sent_per_s"] = len(src) / record["batched_s"]
        latencies = []
        for line in src[:args.single_limit]:
            began = time.perf_counter()
            translator.translate([line], **options)
            latencies.append(time.perf_counter() - began)
        record["single_sent_per_s"] = len(latencies) / sum(latencies)
        record["single_median_ms"] = 1000 * statistics.median(latencies)
        scores = score(hyps, [ref])
        record.update(bleu=scores.bleu, chrf=scores.chrf, hyps=hyps)
        if translator.shortlist is not None:
            sizes_one, covered, total = [], 0, 0
            for line, gold in zip(src, ref_ids, strict=True):
                vocab = translator.shortlist.vocabulary(
                    torch.tensor([translator.source_ids(line)[0]]))
                sizes_one.append(vocab.numel())
                allowed = set(vocab.tolist())
                covered += sum(i in allowed for i in gold)
                total += len(gold)
            record["sentence_vocab_mean"] = statistics.mean(sizes_one)
            record["reference_coverage"] = covered / total
        return record

    measure(None)  # warm-up
    records = [measure(None)] + [measure(size) for size in sizes]
    full = records[0]["hyps"]
    print(f"\n{len(src)} lines of {args.src}, beam {args.beam_size}, model {args.model} "
          f"(vocabulary {table.target_size}); table built in {build_s:.1f} s; {hardware()}\n")
    print("| shortlist (per source : frequent) | batched sent/s | 1 sentence sent/s | median "
          "ms | BLEU | chrF | lines as full | sentence vocab | reference coverage |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in records:
        name = ("full vocabulary" if r["per_source"] is None
                else f"{r['per_source']}:{r['frequent']}")
        same = sum(a == b for a, b in zip(full, r["hyps"], strict=True)) / len(full)
        r["same_lines_as_full"] = same
        vocab = f"{r['sentence_vocab_mean']:.0f}" if "sentence_vocab_mean" in r else ""
        cover = f"{100 * r['reference_coverage']:.1f}%" if "reference_coverage" in r else ""
        print(f"| {name} | {r['batched_sent_per_s']:.1f} | {r['single_sent_per_s']:.1f} | "
              f"{r['single_median_ms']:.1f} | {r['bleu']:.2f} | {r['chrf']:.2f} | "
              f"{100 * same:.1f}% | {vocab} | {cover} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"model": args.model, "src": args.src, "hardware": hardware(), "build_s": build_s,
             "records": [{k: v for k, v in r.items() if k != "hyps"} for r in records]},
            indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
