"""Benchmark: beam search with copy attention, the mixture on the source columns only against
the whole-vocabulary mixture it replaced.

:func:`nmt.models.decoder.copy_log_probs` mixes the copy term into the S columns of the source's
words and leaves the other V - S columns at the generate term; the version before it mixed
over all V columns (a dozen element-wise passes over (beams, V) a step). This script
translates the same lines with a copy-attention model directory both ways, in alternating
rounds in one process, and reports the median sentences/s of each, their ratio, the BLEU of
each and how many outputs differ (the two agree except on words below e^-69 ~ 1e-30, where
the old floor lifted them).

    python scripts/bench_copy_search.py --model runs/lohelp_en_de \\
        --src recipes/data/lohelp-en-de/valid.en --ref recipes/data/lohelp-en-de/valid.de \\
        [--limit 718] [--rounds 3] [--beam-size 5] [--precision auto] [--json out.json]

Run it on an otherwise idle machine (a warning is printed when the load average is high).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from benchlib import warn_if_busy

import nmt.models.decoder
from nmt.inference.translator import Translator
from nmt.scoring import read_lines, score


def dense_copy_log_probs(logits: torch.Tensor, gate: torch.Tensor, weights: torch.Tensor,
                         src: torch.Tensor) -> torch.Tensor:
    """The mixture over the whole vocabulary, as nmt computed it before (the baseline)."""
    logits, gate, weights = logits.float(), gate.float(), weights.float()
    rows, memory_rows = weights.size(0), src.size(0)
    if rows != memory_rows:
        src = src[:, None, :].expand(-1, rows // memory_rows, -1).reshape(rows, src.size(1))
    copied = torch.zeros_like(logits).scatter_add_(1, src, weights)  # (R, V)
    generate = F.logsigmoid(-gate) + torch.log_softmax(logits, dim=-1)
    copy = F.logsigmoid(gate) + copied.clamp_min(1e-30).log()
    top = torch.maximum(generate, copy)
    return top + torch.log(torch.exp(generate - top) + torch.exp(copy - top))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model directory with copy attention")
    parser.add_argument("--src", required=True, type=Path)
    parser.add_argument("--ref", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N lines")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    warn_if_busy()
    translator = Translator.load(args.model, precision=args.precision)
    if not translator.config.model.copy_attention:
        raise SystemExit(f"bench_copy_search.py: {args.model} has no copy attention")
    src, ref = read_lines(args.src)[:args.limit], read_lines(args.ref)[:args.limit]
    kinds = {"sparse": nmt.models.decoder.copy_log_probs, "dense": dense_copy_log_probs}
    translator.translate(src[:20], beam_size=args.beam_size)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in kinds}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for kind, function in kinds.items():
            nmt.models.decoder.copy_log_probs = function
            start = time.perf_counter()
            outputs[kind] = translator.translate(src, beam_size=args.beam_size)
            times[kind].append(time.perf_counter() - start)
    nmt.models.decoder.copy_log_probs = kinds["sparse"]
    result = {"model": str(args.model), "lines": len(src), "beam_size": args.beam_size,
              "precision": str(translator.dtype), "rounds": args.rounds,
              "threads": torch.get_num_threads()}
    for kind in kinds:
        seconds = statistics.median(times[kind])
        result[kind] = {"median_seconds": round(seconds, 2),
                        "sentences_per_s": round(len(src) / seconds, 1),
                        "bleu": round(score(outputs[kind], [ref]).bleu, 2)}
    result["speedup"] = round(result["sparse"]["sentences_per_s"]
                              / result["dense"]["sentences_per_s"], 2)
    result["outputs_that_differ"] = sum(a != b for a, b in zip(outputs["sparse"],
                                                                 outputs["dense"], strict=True))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
