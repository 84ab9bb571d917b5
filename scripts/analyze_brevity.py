"""Why are hypotheses short? Measures the candidate causes of a low BLEU length ratio.

For a trained model directory and a test (or validation) set it reports, in one run:

1. **Search settings**: BLEU, chrF, the length ratio (hypothesis / reference length in
   sacreBLEU tokens) and the brevity penalty for greedy search and beam search with several
   beam sizes and GNMT length penalties (no word reward), then with word rewards, plus the
   share of hypotheses that ended at the maximum length rule (``a * source length + b``), and
   the same with a rule twice as loose.
2. **Where the missing length is**: the length ratio by reference length (quarters of the
   set), for the default search.
3. **EOS under teacher forcing** (the model on the reference prefixes): the probability of EOS
   at the reference's end, and how often EOS is the model's first choice before the end
   (the model would stop early even given a perfect prefix).
4. **Model error or search error** (Stahlberg & Byrne 2019): for each sentence whose
   hypothesis is shorter than the reference, whether the model scores the reference higher
   than its own hypothesis (the search missed a better, longer output) or lower (the model
   itself prefers the short output), by summed log-probability and per token.

    python scripts/analyze_brevity.py -m runs/lohelp_en_de [--src test.en --ref test.de]
        [--limit 1000] [--rewards 0.3 0.5] [--json out.json]

Without ``--src``/``--ref`` the model's ``data.test`` split is used. Every figure names the
CPU it ran on (``--json`` adds ``lscpu``'s model name).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
import torch

from nmt.data.batching import TokenBatchSampler, collate
from nmt.data.sources import load_splits
from nmt.models.search import decode_all, max_lengths
from nmt.models.weights import load_model_dir
from nmt.scoring import bleu_tokenizer, read_lines


def corpus_figures(hyps: list[str], refs: list[str], tokenize: str) -> dict[str, float]:
    """BLEU, chrF, length ratio and brevity penalty of a hypothesis set."""
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize)
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    return {"bleu": bleu.score, "chrf": chrf.score, "ratio": bleu.sys_len / bleu.ref_len,
            "bp": bleu.bp, "sys_len": bleu.sys_len, "ref_len": bleu.ref_len}


def search_table(model: torch.nn.Module, sources: list[list[int]], refs: list[str],
                 detok: Any, config: Any, tokenize: str,
                 rewards: list[float]) -> tuple[list[dict], list[str]]:
    """Figures per search setting; also returns the default setting's hypotheses.

    Every setting runs without a word reward (the toolkit's default, whatever the model's
    config says), then beam 5 with GNMT penalty 1 runs once per reward in ``rewards``."""
    dec = config.decoding
    settings = [("greedy", dict(beam_size=1, length_penalty=0.0)),
                ("beam 5, lp 0", dict(beam_size=5, length_penalty=0.0)),
                ("beam 5, lp 1 (default)", dict(beam_size=5, length_penalty=1.0)),
                ("beam 5, lp 1.5", dict(beam_size=5, length_penalty=1.5)),
                ("beam 5, lp 2", dict(beam_size=5, length_penalty=2.0)),
                ("beam 10, lp 1", dict(beam_size=10, length_penalty=1.0)),
                ("beam 5, lp 1, max len 2x looser",
                 dict(beam_size=5, length_penalty=1.0, max_len_a=2 * dec.max_len_a,
                      max_len_b=2 * dec.max_len_b))]
    settings = [(name, {"word_reward": 0.0, **overrides}) for name, overrides in settings]
    settings += [(f"beam 5, lp 1, word reward {r:g}",
                  dict(beam_size=5, length_penalty=1.0, word_reward=r)) for r in rewards]
    rows, default_hyps = [], []
    src_lengths = torch.tensor([len(s) for s in sources])
    for name, overrides in settings:
        options = dec.updated(overrides, n_best=1)
        start = time.perf_counter()
        out = decode_all(model, sources, options, torch.device("cpu"), None)
        tokens = [h[0].tokens for h in out]
        hyps = [detok.decode(t) for t in tokens]
        limits = max_lengths(src_lengths, options.max_len_a, options.max_len_b)
        at_limit = float(np.mean([len(t) + 1 >= int(lim) for t, lim in
                                  zip(tokens, limits.tolist(), strict=True)]))
        row = {"setting": name, **corpus_figures(hyps, refs, tokenize), "at_max_len": at_limit,
               "seconds": time.perf_counter() - start}
        rows.append(row)
        print(f"  {name}: BLEU {row['bleu']:.2f}, ratio {row['ratio']:.3f}, "
              f"at max len {at_limit:.1%}", file=sys.stderr, flush=True)
        if "default" in name:
            default_hyps = hyps
    return rows, default_hyps


def by_length(hyps: list[str], refs: list[str], tokenize: str) -> list[dict]:
    """Length ratio in quarters of the set by reference length (sacreBLEU tokens)."""
    tok = sacrebleu.BLEU(tokenize=tokenize).tokenizer

    def length(text: str) -> int:
        return len(tok(text).split())

    ref_len = np.array([length(r) for r in refs])
    hyp_len = np.array([length(h) for h in hyps])
    order = np.argsort(ref_len, kind="stable")
    out = []
    for part in np.array_split(order, 4):
        out.append({"ref_len_range": [int(ref_len[part].min()), int(ref_len[part].max())],
                    "ratio": float(hyp_len[part].sum() / max(ref_len[part].sum(), 1)),
                    "share_shorter": float(np.mean(hyp_len[part] < ref_len[part]))})
    return out


@torch.no_grad()
def sequence_log_probs(model: torch.nn.Module, sources: list[list[int]],
                       targets: list[list[int]], batch_tokens: int = 4000,
                       eos_id: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Teacher-forced figures per sentence, for targets given as BOS + pieces + EOS:

    summed log-probability (N,), tokens scored (N,), p(EOS) at the end (N,), and whether EOS
    was the argmax at some position before the end (N,).
    """
    n = len(sources)
    total, count = np.zeros(n), np.zeros(n, dtype=np.int64)
    p_end, early = np.zeros(n), np.zeros(n, dtype=bool)
    src_len = np.array([len(s) for s in sources])
    tgt_len = np.array([len(t) for t in targets])
    for rows in TokenBatchSampler(src_len, tgt_len, max(batch_tokens, int(tgt_len.max()),
                                                       int(src_len.max())),
                                  shuffle=False).batches():
        batch = collate([sources[i] for i in rows], [targets[i] for i in rows], rows)
        logits = model(batch.src, batch.src_lengths, batch.tgt[:, :-1])  # (B, T, V)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        gold = batch.tgt[:, 1:]  # (B, T)
        picked = log_probs.gather(2, gold[..., None]).squeeze(2)  # (B, T)
        argmax = log_probs.argmax(-1)  # (B, T)
        for b, row in enumerate(rows.tolist()):
            steps = int(batch.tgt_lengths[b]) - 1  # positions with a gold token, EOS included
            total[row] = float(picked[b, :steps].sum())
            count[row] = steps
            p_end[row] = float(log_probs[b, steps - 1, eos_id].exp())
            early[row] = bool((argmax[b, : steps - 1] == eos_id).any())
    return total, count, p_end, early


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", required=True, help="model directory")
    parser.add_argument("--src", help="source file (default: the model's data.test split)")
    parser.add_argument("--ref", help="reference file (with --src)")
    parser.add_argument("--limit", type=int, default=None, help="first N sentences only")
    parser.add_argument("--json", help="write the figures to this JSON file")
    parser.add_argument("--rewards", type=float, nargs="*", default=[0.3, 0.5],
                        help="word rewards to try with beam 5, GNMT penalty 1 (default 0.3 0.5)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, config, src_tok, tgt_tok = load_model_dir(args.model)
    if args.src:
        src_lines, refs = read_lines(args.src), read_lines(args.ref)
    else:
        from nmt.data.id_cache import cache_dir
        test = load_splits(config.data, cache_dir(config), ("test",))["test"]
        src_lines, refs = list(test["src"]), list(test["tgt"])
    if args.limit:
        src_lines, refs = src_lines[: args.limit], refs[: args.limit]
    tokenize = bleu_tokenizer(config.data.tgt_lang)
    sources = [src_tok.encode(s.strip()) for s in src_lines]
    print(f"{len(sources)} sentences, model {args.model}", file=sys.stderr, flush=True)

    searches, hyps = search_table(model, sources, refs, tgt_tok, config, tokenize, args.rewards)
    lengths = by_length(hyps, refs, tokenize)
    ref_ids = [tgt_tok.encode(r.strip(), add_bos=True, add_eos=True) for r in refs]
    hyp_ids = [tgt_tok.encode(h, add_bos=True, add_eos=True) for h in hyps]
    ref_lp, ref_n, p_end, early = sequence_log_probs(model, sources, ref_ids)
    hyp_lp, hyp_n, _, _ = sequence_log_probs(model, sources, hyp_ids)
    shorter = hyp_n < ref_n
    some = bool(shorter.any())  # the shares of "those" are None when no hypothesis is shorter
    errors = {
        "sentences_shorter_than_reference": float(shorter.mean()),
        "of_those_model_prefers_reference_sum":
            float((ref_lp[shorter] > hyp_lp[shorter]).mean()) if some else None,
        "of_those_model_prefers_reference_per_token": float(
            (ref_lp[shorter] / ref_n[shorter] > hyp_lp[shorter] / hyp_n[shorter]).mean())
        if some else None,
    }
    eos = {"p_eos_at_reference_end_mean": float(p_end.mean()),
           "p_eos_at_reference_end_median": float(np.median(p_end)),
           "eos_argmax_before_reference_end": float(early.mean())}
    result = {"model": str(args.model), "sentences": len(sources), "search": searches,
              "ratio_by_reference_length": lengths, "teacher_forced_eos": eos,
              "model_or_search_error": errors}

    print("\n| search | BLEU | chrF | length ratio | BP | at max length |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in searches:
        print(f"| {r['setting']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['ratio']:.3f} | "
              f"{r['bp']:.3f} | {r['at_max_len']:.1%} |")
    print("\n| reference length | length ratio | shorter than reference |")
    print("|---|---:|---:|")
    for r in lengths:
        print(f"| {r['ref_len_range'][0]}-{r['ref_len_range'][1]} | {r['ratio']:.3f} | "
              f"{r['share_shorter']:.1%} |")
    print(f"\nteacher forcing: p(EOS) at the reference end: mean "
          f"{eos['p_eos_at_reference_end_mean']:.3f}, median "
          f"{eos['p_eos_at_reference_end_median']:.3f}; EOS is the first choice "
          f"before the end in {eos['eos_argmax_before_reference_end']:.1%} of sentences")
    print(f"hypotheses shorter than the reference (in pieces): "
          f"{errors['sentences_shorter_than_reference']:.1%}", end="")
    if some:
        print(f"; the model scores the reference higher in "
              f"{errors['of_those_model_prefers_reference_sum']:.1%} of them (summed "
              f"log-probability: search errors), per token in "
              f"{errors['of_those_model_prefers_reference_per_token']:.1%}")
    else:
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
