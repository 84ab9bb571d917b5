"""Benchmark: padding fraction of token-budget batching, bucketed against random, in one run.

Prepares the LibreOffice help corpus (en->de, SentencePiece unigram 8k joint) with the toolkit's
own data stage, then batches the training split at a token budget (default 4,000) with
:class:`nmt.data.batching.TokenBatchSampler` and with random batching (same budget, no sorting), and
reports the share of padded positions (source and target together), batches per epoch and the
time to build an epoch's batches. Target: bucketed padding <= 10%.

    python scripts/bench_padding.py [--data ../shared/data/lohelp-en-de] [--tokens 4000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nmt.config import load_config
from nmt.data.batching import TokenBatchSampler, padding_fraction, random_batches
from nmt.data.prepare import prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--data", default=str(here.parent.parent / "shared/data/lohelp-en-de"))
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=5, help="epochs measured (median taken)")
    parser.add_argument("--out", help="run directory (default: a temporary one)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if not Path(f"{args.data}/train.{args.src}").is_file():
        print(f"corpus not found: {args.data}/train.{args.src}", file=sys.stderr)
        return 2
    out = args.out or tempfile.mkdtemp(prefix="bench_padding.")
    config = load_config(None, [
        f"output_dir={out}", "data.format=text", f"data.src_lang={args.src}",
        f"data.tgt_lang={args.tgt}", f"data.train={args.data}/train",
        "tokenizer.vocab_size=8000", "tokenizer.type=unigram", "tokenizer.joint=true"])
    prepared = prepare(config, splits=("train",))
    train = prepared.splits["train"]
    src, tgt = train.lengths()  # (N,) each: the kept pairs
    sampler = TokenBatchSampler(src, tgt, args.tokens, seed=1)
    rng = np.random.default_rng(1)
    rows = {"bucketed": [], "random": []}
    for epoch in range(args.epochs):
        start = time.perf_counter()
        batches = sampler.batches(epoch)
        seconds = time.perf_counter() - start
        rows["bucketed"].append((padding_fraction(batches, src, tgt), len(batches), seconds))
        start = time.perf_counter()
        batches = random_batches(np.maximum(src, tgt), args.tokens, rng)
        seconds = time.perf_counter() - start
        rows["random"].append((padding_fraction(batches, src, tgt), len(batches), seconds))
    result = {"pairs": len(train), "max_tokens": args.tokens, "epochs": args.epochs}
    print(f"{len(train)} training pairs, {args.tokens} tokens a batch, median of "
          f"{args.epochs} epochs")
    print(f"{'batching':<10} {'padding':>8} {'batches':>8} {'build s':>8}")
    for name, values in rows.items():
        pad_frac = statistics.median(v[0] for v in values)
        count = statistics.median(v[1] for v in values)
        secs = statistics.median(v[2] for v in values)
        result[name] = {"padding": pad_frac, "batches": count, "build_seconds": secs}
        print(f"{name:<10} {pad_frac:>8.1%} {count:>8.0f} {secs:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
