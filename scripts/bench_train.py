"""Benchmark: training throughput, FLOP efficiency and peak memory of the trainer, in one run.

What it measures, on the LibreOffice help corpus (en->de, SentencePiece unigram 8k joint,
prepared with the toolkit's own data stage in a fixed run directory so the tokenizer and the
Arrow cache are re-used between runs) and the 'small' model (embeddings 256, BiLSTM encoder
2 layers x 256 per direction, LSTM decoder 2 layers x 512, general (Luong) attention, batches
of 4,000 tokens, dropout 0.2, label smoothing 0.1, Adam 1e-3, clipping 1.0):

- ``ours-bf16`` / ``ours-fp32``: :meth:`nmt.training.trainer.Trainer.train_step` (one update
  per batch) over the trainer's own sampler batches (epoch 0), bf16 autocast and plain fp32;
- ``ours-fp32-ddp2``: the same in fp32 as data parallelism over the cores: ``torchrun`` with 2
  processes of 1 thread each (gloo, on 127.0.0.1), each taking its own batches of half the
  budget, so an update sees the same number of tokens as the one-process configs;
- ``sampled-bf16`` / ``sampled-fp32``: as ``ours-*`` with ``training.sampled_softmax`` =
  ``--sampled`` (the loss normalised over the batch's own target pieces plus that many drawn
  at random; useful FLOPs are still counted over the whole vocabulary, so the rate compares
  with ``ours-*``);
- ``naive-fp32``: a plain-PyTorch reference written here, as a tutorial would have it:
  embedding + bidirectional ``nn.LSTM`` encoder (no packing), a step-by-step decoder loop
  (two ``nn.LSTMCell``) with input feeding and general attention, output projection at every
  step, fp32, random batches (random order, same 4,000-token budget, no length bucketing),
  Adam and label-smoothed cross-entropy. Same dimensions and vocabulary.

Each configuration runs in its own subprocess, one after another (the script re-invokes
itself with ``--only NAME`` and reads back a JSON line), so ``ru_maxrss`` gives its peak RSS.
After ``--warmup`` steps, ``--steps`` steps are timed; throughput is total target tokens (real
tokens, EOS included, BOS and padding excluded) over total step time, batch gathering included.

Useful FLOPs of a step are counted analytically from the real (non-padding) tokens of its
batch, per sentence with source length S (EOS included) and T target positions (EOS
included, BOS excluded); E embedding, H encoder units per direction, L encoder layers,
K = 2H, Hd decoder units, Ld decoder layers, V target vocabulary:

    encoder, per source token:  sum_l 2 directions x 2*4H*(in_l + H),  in_0 = E, in_l = 2H
    key projection (general):   2*K*Hd per source token
    decoder LSTM, per target:   sum_l 2*4Hd*(in_l + Hd),  in_0 = E (+ Hd with input feeding),
                                in_l = Hd
    attention, per target:      scores 2*S*Hd + context 2*S*K
    attentional layer:          2*(K + Hd)*Hd per target token
    output projection:          2*Hd*V per target token
    training step = 3 x forward (backward = 2 x forward); embeddings, bridge, softmax, loss,
    elementwise gate work and the optimizer are not counted.

Each configuration is charged the FLOPs of its own architecture (the naive reference's input
feeding makes its first decoder layer wider). Achieved FLOP/s = useful FLOPs / step time; it is
compared with the FLOP/s of a 2048 x 2048 x 2048 matrix product in the fastest precision the
CPU really has, measured in the same run (median of ``--matmul-reps``): bf16 where the CPU has
bf16 instructions (AVX-512-BF16 or AMX) and bf16 measures faster, fp32 elsewhere (bf16 is
emulated without them, and AVX-512-BF16 alone ran slower than fp32 on an Intel Xeon).

Targets, for the config of that precision (what precision ``auto`` trains in): >= 6x the naive
reference's target tokens/s, >= 30% of the matmul FLOP/s, peak RSS <= 2 GB.

``--model recipe`` times the lohelp recipe's model (one encoder layer, a 256-unit decoder,
tied embeddings) instead of 'small'; ``--tokens 3000`` gives the recipe's batches and
``--copy-attention`` its copy attention.

    python scripts/bench_train.py [--data ../shared/data/lohelp-en-de] [--out /tmp/bench_train]
        [--steps 30] [--warmup 3] [--json FILE] [--profile]

``--profile`` adds a torch.profiler table of the top operators of a few steps of each
one-process ours-* config (printed on stderr). ``--only NAME`` runs one configuration in this
process and prints its JSON line (what the parent reads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import free_port, parse_configs, peak_rss_mb, run_child, warn_if_busy

CONFIGS = ("ours-bf16", "ours-fp32", "ours-fp32-ddp2", "naive-fp32", "sampled-bf16",
           "sampled-fp32")
TARGET_RATIO, TARGET_MATMUL_SHARE, TARGET_RSS_MB = 6.0, 0.30, 2048.0


@dataclass(frozen=True)
class Dims:
    """Model dimensions (the 'small' config; :data:`MODELS` names the others)."""

    embed: int = 256
    hidden: int = 256
    enc_layers: int = 2
    dec_hidden: int = 512
    dec_layers: int = 2
    vocab: int = 8000
    dropout: float = 0.2
    label_smoothing: float = 0.1
    lr: float = 1e-3
    tie: bool = False


#: ``--model``: 'small' (the benchmark's own), 'recipe' (recipes/lohelp_en_de.yaml's model:
#: one encoder layer, a 256-unit decoder, tied embeddings, dropout 0.1, rate 0.002)
MODELS = {"small": Dims(),
          "recipe": Dims(enc_layers=1, dec_hidden=256, dec_layers=1, dropout=0.1, lr=2e-3,
                         tie=True)}


# --------------------------------------------------------------------------- shared helpers


def data_config(args: argparse.Namespace, output_dir: str, extra: list[str] | None = None) -> Any:
    """The run's Config: data and tokenizer settings of the benchmark, plus ``extra`` overrides."""
    from nmt.config import load_config

    return load_config(None, [
        f"output_dir={output_dir}", "data.format=text", "data.src_lang=en", "data.tgt_lang=de",
        f"data.train={args.data}/train", f"data.valid={args.data}/valid",
        "tokenizer.vocab_size=8000", "tokenizer.type=unigram", "tokenizer.joint=true",
        *(extra or [])])


def prepare_data(args: argparse.Namespace) -> Any:
    """Prepare (or re-use) the SentencePiece model and the Arrow cache in the run directory."""
    from nmt.data.prepare import prepare

    return prepare(data_config(args, args.out), splits=("train", "valid"))


def step_flops(src_lengths: np.ndarray, tgt_lengths: np.ndarray, d: Dims,
               input_feeding: bool) -> float:
    """Useful FLOPs of one training step (forward + backward) for a batch (see module doc).

    ``src_lengths`` are source lengths (EOS included), ``tgt_lengths`` target lengths with BOS
    and EOS, so a sentence predicts ``tgt_len - 1`` tokens.
    """
    h, hd, k = d.hidden, d.dec_hidden, 2 * d.hidden
    s = src_lengths.astype(np.float64)
    t = tgt_lengths.astype(np.float64) - 1.0
    enc = sum(2 * 2 * 4 * h * ((d.embed if layer == 0 else k) + h)
              for layer in range(d.enc_layers))
    enc += 2 * k * hd  # general attention's key projection
    dec_in0 = d.embed + (hd if input_feeding else 0)
    dec = sum(2 * 4 * hd * ((dec_in0 if layer == 0 else hd) + hd)
              for layer in range(d.dec_layers))
    dec += 2 * (k + hd) * hd + 2 * hd * d.vocab  # attentional layer, output projection
    attention = (2 * hd + 2 * k) * s * t  # scores and context: per target token, S positions
    forward = enc * s.sum() + dec * t.sum() + attention.sum()
    return 3.0 * float(forward)


def matmul_flops(dtype_name: str, n: int = 2048, reps: int = 10) -> float:
    """Median FLOP/s of an n x n x n matrix product of ``bf16`` or ``fp32`` tensors."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    if dtype_name == "bf16":
        a, b = a.bfloat16(), b.bfloat16()
    for _ in range(2):
        a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / statistics.median(times)


def summarise(name: str, step_times: list[float], tokens: list[int], flops: list[float],
              extra: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of one configuration."""
    total_time = sum(step_times)
    return {"config": name, "steps": len(step_times), "target_tokens": sum(tokens),
            "seconds": total_time, "tokens_per_s": sum(tokens) / total_time,
            "median_step_tokens_per_s": statistics.median(
                n / s for n, s in zip(tokens, step_times, strict=True)),
            "useful_flops_per_s": sum(flops) / total_time, "peak_rss_mb": peak_rss_mb(),
            **extra}


# --------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """Time ``Trainer.train_step`` over the trainer's own batches at ``precision``."""
    import torch

    from nmt.training.trainer import Trainer

    d = MODELS[args.model]
    ddp = args.only.endswith("-ddp2")  # under torchrun: 2 processes, half the batch each
    prepared = prepare_data(args)
    scratch = Path(args.out) / "trainers"
    scratch.mkdir(parents=True, exist_ok=True)
    output_dir = tempfile.mkdtemp(prefix=f"{precision}.", dir=scratch)
    try:
        config = data_config(args, output_dir, [
            f"model.embed_size={d.embed}", f"model.hidden_size={d.hidden}",
            f"model.encoder_layers={d.enc_layers}", f"model.decoder_hidden_size={d.dec_hidden}",
            f"model.decoder_layers={d.dec_layers}", "model.attention=general",
            f"model.input_feeding={'true' if args.input_feeding else 'false'}",
            f"model.copy_attention={'true' if args.copy_attention else 'false'}",
            f"training.sampled_softmax={args.sampled if args.only.startswith('sampled') else 0}",
            f"model.dropout={d.dropout}", f"model.tie_embeddings={str(d.tie).lower()}",
            f"training.batch_tokens={args.tokens // 2 if ddp else args.tokens}",
            f"training.label_smoothing={d.label_smoothing}", f"training.lr={d.lr}",
            f"training.precision={precision}", "training.device=cpu"])
        trainer = Trainer(config, prepared=prepared, quiet=True)
        vocab = trainer.tgt_tok.vocab_size
        dims = replace(d, vocab=vocab)
        corpus = trainer.train_corpus
        batches = trainer.sampler.batches(0)
        if ddp:  # each update takes one batch per process; rank r its own, disjoint
            batches = batches[trainer.dist.rank::trainer.dist.world]
        needed = args.warmup + args.steps
        if len(batches) < needed:
            raise SystemExit(f"only {len(batches)} batches in an epoch, {needed} needed")
        setup_rss = peak_rss_mb()
        for indices in batches[: args.warmup]:
            trainer.train_step([indices])
        times, tokens, flops, losses = [], [], [], []
        for indices in batches[args.warmup: needed]:
            start = time.perf_counter()
            result = trainer.train_step([indices])
            times.append(time.perf_counter() - start)
            tokens.append(result.tokens)  # of the whole update (every process)
            losses.append(result.loss)
            flops.append(step_flops(corpus.src_lengths[indices], corpus.tgt_lengths[indices],
                                    dims, args.input_feeding) * trainer.dist.world)
        record = summarise(args.only, times, tokens, flops, {
            "setup_rss_mb": setup_rss, "parameters": trainer.params, "vocab": vocab,
            "batches_per_epoch": len(batches), "mean_loss": sum(losses) / len(losses),
            "threads": torch.get_num_threads(), "processes": trainer.dist.world,
            "batch_tokens_per_process": config.training.batch_tokens})
        if args.profile and not ddp:
            profile_steps(trainer, batches[needed: needed + 5], args.only)
        return record
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)


def profile_steps(trainer: Any, batches: list[np.ndarray], name: str) -> None:
    """Print (stderr) the top operators by self CPU time over a few training steps."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for indices in batches:
            trainer.train_step([indices])
    print(f"torch.profiler: {len(batches)} {name} steps, top operators by self CPU time",
          file=sys.stderr)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25),
          file=sys.stderr)


# --------------------------------------------------------------------------- naive reference


def build_naive(d: Dims, pad_id: int) -> Any:
    """The tutorial-style model: BiLSTM encoder, LSTMCell decoder with input feeding."""
    import torch
    from torch import nn

    class NaiveSeq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            k = 2 * d.hidden
            self.src_embed = nn.Embedding(d.vocab, d.embed, padding_idx=pad_id)
            self.tgt_embed = nn.Embedding(d.vocab, d.embed, padding_idx=pad_id)
            self.encoder = nn.LSTM(d.embed, d.hidden, d.enc_layers, batch_first=True,
                                   bidirectional=True, dropout=d.dropout)
            self.bridge_h = nn.Linear(k, d.dec_hidden)
            self.bridge_c = nn.Linear(k, d.dec_hidden)
            self.cells = nn.ModuleList(
                [nn.LSTMCell(d.embed + d.dec_hidden if i == 0 else d.dec_hidden, d.dec_hidden)
                 for i in range(d.dec_layers)])
            self.attn = nn.Linear(k, d.dec_hidden, bias=False)  # general: score = h . W k
            self.combine = nn.Linear(k + d.dec_hidden, d.dec_hidden, bias=False)
            self.out = nn.Linear(d.dec_hidden, d.vocab)
            self.drop = nn.Dropout(d.dropout)

        def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
            batch = src.size(0)
            mask = src != pad_id
            enc_out, (h, c) = self.encoder(self.drop(self.src_embed(src)))
            enc_out = self.drop(enc_out)  # (B, S, K)
            # final states of the top layer's two directions joined -> decoder start
            h0 = torch.tanh(self.bridge_h(torch.cat([h[-2], h[-1]], dim=-1)))
            c0 = torch.tanh(self.bridge_c(torch.cat([c[-2], c[-1]], dim=-1)))
            hs, cs = [h0] * len(self.cells), [c0] * len(self.cells)
            keys = self.attn(enc_out)  # (B, S, Hd)
            feed = src.new_zeros(batch, self.combine.out_features, dtype=torch.float)
            logits = []
            for t in range(tgt_in.size(1)):
                x = torch.cat([self.drop(self.tgt_embed(tgt_in[:, t])), feed], dim=-1)
                for i, cell in enumerate(self.cells):
                    hs[i], cs[i] = cell(x, (hs[i], cs[i]))
                    x = self.drop(hs[i]) if i + 1 < len(self.cells) else hs[i]
                scores = torch.bmm(keys, x.unsqueeze(2)).squeeze(2)  # (B, S)
                weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
                context = torch.bmm(weights.unsqueeze(1), enc_out).squeeze(1)  # (B, K)
                feed = torch.tanh(self.combine(torch.cat([context, x], dim=-1)))
                logits.append(self.out(self.drop(feed)))
            return torch.stack(logits, dim=1)  # (B, T, V)

    return NaiveSeq2Seq()


def run_naive(args: argparse.Namespace) -> dict[str, Any]:
    """Time the plain-PyTorch reference on random batches of the same corpus."""
    import torch
    import torch.nn.functional as F
    from torch.nn.utils.rnn import pad_sequence

    from nmt.data.batching import random_batches
    from nmt.data.tokenizer import PAD_ID

    prepared = prepare_data(args)
    train = prepared.splits["train"]
    d = Dims(vocab=prepared.tgt_tok.vocab_size)
    src = [torch.tensor(x) for x in train["src_ids"]]
    tgt = [torch.tensor(x) for x in train["tgt_ids"]]
    src_len = np.array([len(x) for x in src])
    tgt_len = np.array([len(x) for x in tgt])
    torch.manual_seed(42)
    model = build_naive(d, PAD_ID)
    optimizer = torch.optim.Adam(model.parameters(), lr=d.lr)
    batches = random_batches(np.maximum(src_len, tgt_len), args.tokens,
                             np.random.default_rng(42))

    def step(indices: np.ndarray) -> tuple[float, int]:
        model.train()
        src_b = pad_sequence([src[i] for i in indices], batch_first=True, padding_value=PAD_ID)
        tgt_b = pad_sequence([tgt[i] for i in indices], batch_first=True, padding_value=PAD_ID)
        logits = model(src_b, tgt_b[:, :-1])
        gold = tgt_b[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, d.vocab), gold.reshape(-1),
                               ignore_index=PAD_ID, label_smoothing=d.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item(), int((gold != PAD_ID).sum())

    needed = args.warmup + args.steps
    setup_rss = peak_rss_mb()
    for indices in batches[: args.warmup]:
        step(indices)
    times, tokens, flops, losses = [], [], [], []
    for indices in batches[args.warmup: needed]:
        start = time.perf_counter()
        loss, ntok = step(indices)
        times.append(time.perf_counter() - start)
        tokens.append(ntok)
        losses.append(loss)
        flops.append(step_flops(src_len[indices], tgt_len[indices], d, input_feeding=True))
    return summarise("naive-fp32", times, tokens, flops, {
        "setup_rss_mb": setup_rss, "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": d.vocab, "batches_per_epoch": len(batches), "mean_loss": sum(losses) / len(losses),
        "threads": torch.get_num_threads()})


# --------------------------------------------------------------------------- driver


def run_one(args: argparse.Namespace) -> int:
    """Child mode: run one configuration and print its JSON record as the last stdout line."""
    import logging

    logging.getLogger("nmt").setLevel(logging.WARNING)
    if args.only == "naive-fp32":
        record = run_naive(args)
    else:
        record = run_ours(args, args.only.split("-")[1])
    if os.environ.get("RANK", "0") == "0":  # under torchrun rank 0 reports
        print(json.dumps(record), flush=True)
    return 0


def child(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Run ``--only name`` in a subprocess and parse its JSON line."""
    launcher = [sys.executable]
    env = os.environ.copy()
    if name.endswith("-ddp2"):  # 2 processes of 1 thread each, gloo, on this machine only
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                     "127.0.0.1", "--master_port", str(free_port())]
        env["OMP_NUM_THREADS"] = "1"
    command = [*launcher, str(Path(__file__).resolve()), "--only", name, "--model", args.model,
               "--data", args.data, "--out", args.out, "--tokens", str(args.tokens),
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.profile:
        command.append("--profile")
    if args.input_feeding:
        command.append("--input-feeding")
    if args.copy_attention:
        command.append("--copy-attention")
    command += ["--sampled", str(args.sampled)]
    start = time.perf_counter()
    record = run_child(command, name, env)
    print(f"  {name}: {record['tokens_per_s']:,.0f} target tokens/s "
          f"({time.perf_counter() - start:.0f} s with set-up)", file=sys.stderr, flush=True)
    return record


def main() -> int:
    """Parse arguments; run all configurations one after another and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--data", default=str(here.parent.parent / "shared/data/lohelp-en-de"))
    parser.add_argument("--out", default="/tmp/bench_train",
                        help="run directory: SentencePiece model and Arrow cache, re-used")
    parser.add_argument("--tokens", type=int, default=4000,
                        help="batch token budget of an update (split over the ddp2 processes)")
    parser.add_argument("--model", choices=sorted(MODELS), default="small",
                        help="model dimensions: 'small' or the lohelp recipe's ('recipe')")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--matmul-reps", type=int, default=10)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--copy-attention", action="store_true",
                        help="turn on copy attention in our model (the lohelp recipe has it)")
    parser.add_argument("--sampled", type=int, default=1000,
                        help="sampled-* configs: training.sampled_softmax (pieces drawn besides "
                             "the batch's own)")
    parser.add_argument("--input-feeding", action="store_true",
                        help="turn on input feeding in our model too (off in 'small')")
    parser.add_argument("--profile", action="store_true",
                        help="print a torch.profiler summary of each ours-* config's steps on "
                             "stderr (one process)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--only", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    if not Path(f"{args.data}/train.en").is_file():
        print(f"corpus not found: {args.data}/train.en", file=sys.stderr)
        return 2
    if args.only:
        return run_one(args)
    names = parse_configs(parser, args.configs, CONFIGS)

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # children inherit it
    import torch

    from nmt.device import cpu_has_bf16_instructions, cpu_has_fast_bf16

    start = time.perf_counter()
    load = warn_if_busy()
    print(f"preparing data in {args.out} ...", file=sys.stderr, flush=True)
    prepare_data(args)
    # emulated bf16 (no AVX-512-BF16 / AMX) runs a 2048^3 product for tens of seconds: one rep
    native = cpu_has_bf16_instructions()
    matmul = {"bf16": matmul_flops("bf16", reps=args.matmul_reps if native else 1),
              "fp32": matmul_flops("fp32", reps=max(args.matmul_reps // 2, 3))}
    print(f"  matmul 2048^3: bf16 {matmul['bf16'] / 1e12:.2f} TFLOP/s, "
          f"fp32 {matmul['fp32'] / 1e12:.2f} TFLOP/s", file=sys.stderr, flush=True)
    records = {name: child(args, name) for name in names}  # one after another, never at once
    naive = records.get("naive-fp32")
    print(f"\n{args.steps} timed steps after {args.warmup} warm-up, batches of {args.tokens} "
          f"tokens, {torch.get_num_threads()} threads; matmul 2048^3: bf16 "
          f"{matmul['bf16'] / 1e12:.2f}, fp32 {matmul['fp32'] / 1e12:.2f} TFLOP/s\n")
    # the yardstick is the fastest matrix product this CPU really has: bf16 only where it is
    # native (AVX-512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32
    reference = "bf16" if native and matmul["bf16"] > matmul["fp32"] else "fp32"
    why = ("native bf16" if reference == "bf16" else "no native bf16 on this CPU: bf16 is "
           "emulated" if not native else "fp32 measured faster than bf16")
    print(f"% of peak: of the {reference} matrix product ({why})\n")
    print(f"| config | target tokens/s | vs naive | useful TFLOP/s | % of {reference} matmul "
          "| peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in records.items():
        r["vs_naive"] = r["tokens_per_s"] / naive["tokens_per_s"] if naive else None
        r["matmul_share"] = r["useful_flops_per_s"] / matmul[reference]
        ratio = f"{r['vs_naive']:.2f}x" if r["vs_naive"] is not None else "-"
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {ratio} | "
              f"{r['useful_flops_per_s'] / 1e12:.3f} | {r['matmul_share']:.1%} | "
              f"{r['peak_rss_mb']:,.0f} |")
    headline = "ours-bf16" if cpu_has_fast_bf16() else "ours-fp32"  # what `auto` trains in
    ours = records.get(headline)
    if ours:
        checks = [("speed-up over naive", ours["vs_naive"] is not None,
                   ours["vs_naive"] is not None and ours["vs_naive"] >= TARGET_RATIO,
                   f">= {TARGET_RATIO:g}x"),
                  (f"share of {reference} matmul FLOP/s", True,
                   ours["matmul_share"] >= TARGET_MATMUL_SHARE,
                   f">= {TARGET_MATMUL_SHARE:.0%}"),
                  ("peak RSS", True, ours["peak_rss_mb"] <= TARGET_RSS_MB,
                   f"<= {TARGET_RSS_MB:,.0f} MB")]
        print()
        for label, measured, met, target in checks:
            if measured:
                print(f"target {headline} {label} {target}: {'met' if met else 'MISSED'}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.json:
        result = {"steps": args.steps, "warmup": args.warmup, "batch_tokens": args.tokens,
                  "load_average_at_start": load,
                  "threads": torch.get_num_threads(), "input_feeding_ours": args.input_feeding,
                  "model": args.model, "matmul_flops_per_s": matmul,
                  "matmul_reference": reference, "configs": records,
                  "targets": {"vs_naive": TARGET_RATIO, "matmul_share": TARGET_MATMUL_SHARE,
                              "peak_rss_mb": TARGET_RSS_MB}}
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
