"""Trainer: teacher-forced cross-entropy, Adam, schedules, validation with BLEU, checkpoints.

The loop reads top to bottom in :meth:`Trainer.fit`: for each epoch, the seeded sampler gives
token-budget batches; each update sums ``accumulate`` batches' gradients, clips, steps Adam and
the schedule; every ``valid_every`` updates the model is validated (loss, perplexity, greedy
BLEU and chrF with sacreBLEU), the best weights are kept as ``model.safetensors`` and a
checkpoint plus ``trainer_state.pt`` are written, so ``--resume`` continues from there.

Precision: ``bf16`` autocast on CPUs with AVX-512-BF16/AMX (``auto``) and on CUDA; ``fp16``
with a gradient scaler on CUDA devices without bf16. Loss and softmax stay in float32.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# oneDNN keeps a compiled kernel per LSTM shape (batch x length) it meets, 1,024 by default;
# with token-budget batches nearly every batch is a new shape and memory grows by hundreds of
# MB. 64 cut peak RSS of the 'small' benchmark from 2.3 to 1.7 GB for about 2% speed. Read when
# oneDNN first runs, so it must be set before the first LSTM call of the process.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

import torch
import torch.nn.functional as F

from nmt import distributed
from nmt.batching import Batch, Corpus, TokenBatchSampler
from nmt.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    MODEL_FILE,
    load_trainer_state,
    load_weights,
    save_trainer_state,
    save_weights,
)
from nmt.config import Config, save_config, to_dict
from nmt.data import TRAINER_STATE_FILE as STATE_FILE
from nmt.data import Prepared, prepare
from nmt.device import autocast, precision_name, resolve_device, resolve_precision
from nmt.errors import NMTError
from nmt.evaluate import bleu_tokenizer, score
from nmt.loss import linear_cross_entropy
from nmt.model import Seq2Seq, build_model, count_parameters
from nmt.search import greedy
from nmt.tokenizer import PAD_ID, Tokenizer

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
METRIC_FIELDS = ("step", "epoch", "train_loss", "lr", "valid_loss", "valid_ppl", "bleu", "chrf",
                 "tokens_per_s", "elapsed_s")


# --------------------------------------------------------------------------- loss and schedules


def sequence_loss(logits: torch.Tensor, gold: torch.Tensor,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of logits (B, T, V) against gold ids (B, T); padding ignored."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), gold.reshape(-1),
                           ignore_index=PAD_ID, label_smoothing=label_smoothing,
                           reduction="sum")


def inverse_sqrt(warmup: int) -> Any:
    """LR multiplier: linear warmup to 1 over ``warmup`` steps, then ``sqrt(warmup / step)``."""
    def factor(step: int) -> float:
        step = max(step, 1)
        if warmup and step < warmup:
            return step / warmup
        return math.sqrt(max(warmup, 1) / step)

    return factor


def cosine(spent: float, step: int, warmup: int, floor: float) -> float:
    """LR multiplier of the ``cosine`` schedule for the update after ``step`` updates.

    Linear warmup over the first ``warmup`` updates, times half a cosine that falls from 1 when
    none of the training budget is ``spent`` (0) to ``floor`` when all of it is (1).
    """
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    spent = min(max(spent, 0.0), 1.0)
    return warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * spent)))


class TrainingLoss(torch.nn.Module):
    """The summed, label-smoothed training loss of a batch as one module call.

    Wrapping the model this way lets :class:`~torch.nn.parallel.DistributedDataParallel` see
    the whole computation in ``forward`` (its gradient hooks need that). The vocabulary
    projection is fused with the loss over the real (non-padding) target tokens only
    (:func:`nmt.loss.linear_cross_entropy`).
    """

    def __init__(self, model: Seq2Seq, label_smoothing: float, teacher_forcing_ratio: float):
        super().__init__()
        self.model = model
        self.label_smoothing, self.teacher_forcing_ratio = label_smoothing, teacher_forcing_ratio

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor,
                tgt: torch.Tensor) -> torch.Tensor:
        """Summed loss of source (B, S) and BOS + target + EOS (B, T + 1)."""
        tgt_in, gold = tgt[:, :-1], tgt[:, 1:]  # BOS + gold[:-1] -> gold
        real = gold != PAD_ID  # (B, T)
        features = self.model.features(src, src_lengths, tgt_in,
                                       self.teacher_forcing_ratio)  # (B, T, Hd)
        return linear_cross_entropy(features[real], self.model.output_layer, gold[real],
                                    self.label_smoothing)


# --------------------------------------------------------------------------- translation helper


@torch.no_grad()
def translate_corpus(model: Seq2Seq, corpus: Corpus, tgt_tok: Tokenizer, batch_tokens: int,
                     device: torch.device, dtype: torch.dtype | None, max_len_a: float,
                     max_len_b: int) -> list[str]:
    """Greedy translations of every source in ``corpus``, in corpus order."""
    model.eval()
    sampler = TokenBatchSampler(corpus.src_lengths, None, max(batch_tokens,
                                int(corpus.src_lengths.max(initial=1))), shuffle=False)
    out: list[str] = [""] * len(corpus)
    for indices in sampler.batches():
        batch = corpus.batch(indices, with_target=False).to(device)
        with autocast(device, dtype):
            ids = greedy(model, batch.src, batch.src_lengths, max_len_a, max_len_b)
        for index, seq in zip(indices.tolist(), ids, strict=True):
            out[index] = tgt_tok.decode(seq)
    return out


# --------------------------------------------------------------------------- the trainer


class TrainingInterrupted(NMTError):
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint."""

    def __init__(self, signum: int, step: int, out: Path) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} at update {step}; the "
                         f"checkpoint is saved: continue with nmt train --config "
                         f"{out / CONFIG_FILE} --resume")
        self.exit_code = 128 + signum


@dataclass
class Progress:
    """Where training stands: everything ``--resume`` needs besides weights and optimizer."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_score: float = float("-inf")  # validation BLEU, or -training loss without validation
    best_step: int = 0
    bad_validations: int = 0
    bad_updates: int = 0  # consecutive updates skipped for a non-finite loss or gradient
    elapsed: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class Trainer:
    """Trains one run: ``Trainer(config).fit()`` writes the model directory ``output_dir``."""

    def __init__(self, config: Config, resume: bool = False, quiet: bool = False,
                 prepared: Prepared | None = None) -> None:
        self.config, self.quiet = config, quiet
        self.out = config.out
        self.tcfg = config.training
        if not resume and (self.out / STATE_FILE).exists():
            raise NMTError(f"{self.out} already holds a training run ({STATE_FILE}); continue it "
                           "with --resume, or choose another output_dir")
        if resume and not (self.out / STATE_FILE).exists():
            raise NMTError(f"nothing to resume: {self.out / STATE_FILE} does not exist")
        if resume:
            _check_resume_config(config)
        torch.manual_seed(self.tcfg.seed)
        self.device = resolve_device(self.tcfg.device)
        self.dist = distributed.setup(self.device.type)  # a no-op without torchrun
        if not self.dist.main:  # only rank 0 logs
            logging.getLogger("nmt").setLevel(logging.WARNING)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if not self.dist.main:
            distributed.barrier(self.dist)  # rank 0 prepares first; the others re-use its files
        self.prepared = prepared or prepare(config)
        if self.dist.main:
            distributed.barrier(self.dist)
        self.dtype = resolve_precision(self.tcfg.precision, self.device)
        self.src_tok, self.tgt_tok = self.prepared.src_tok, self.prepared.tgt_tok
        self.model = build_model(config.model, self.src_tok.vocab_size,
                                 self.tgt_tok.vocab_size).to(self.device)
        self.params = count_parameters(self.model)
        if self.dist.rank:
            torch.manual_seed(self.tcfg.seed + self.dist.rank)  # own dropout masks per rank
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.tcfg.lr,
                                          weight_decay=self.tcfg.weight_decay)
        self.scheduler = self._make_scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.dtype == torch.float16)
        self.train_corpus = Corpus(self.prepared.splits["train"])
        valid = self.prepared.splits.get("valid")
        self.valid_corpus = Corpus(valid) if valid is not None and len(valid) else None
        self.valid_refs = list(valid["tgt"]) if self.valid_corpus is not None else []
        self.sampler = TokenBatchSampler(self.train_corpus.src_lengths,
                                         self.train_corpus.tgt_lengths, self.tcfg.batch_tokens,
                                         seed=self.tcfg.seed)
        # batches per epoch (the count varies a little with the shuffle); set by the loop
        self._epoch_batches = len(self.sampler.batches(0))
        span = self.tcfg.accumulate * self.dist.world
        if self.dist.enabled and self._epoch_batches < span:
            raise NMTError(f"the training data make {self._epoch_batches} batches an epoch, fewer "
                           f"than one update of {self.dist.world} processes x accumulate "
                           f"{self.tcfg.accumulate}: use fewer processes or smaller "
                           "training.batch_tokens")
        self.progress = Progress()
        if resume:
            self._load_state()
        self.loss_module = TrainingLoss(self.model, self.tcfg.label_smoothing,
                                        self.tcfg.teacher_forcing_ratio)
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(  # broadcasts rank 0's weights
                self.loss_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.writer = None

    # ----------------------------------------------------------------- setup helpers

    def _make_scheduler(self) -> Any:
        if self.tcfg.schedule == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="max", factor=self.tcfg.plateau_factor,
                patience=self.tcfg.plateau_patience, min_lr=self.tcfg.min_lr)
        if self.tcfg.schedule == "inverse_sqrt":
            floor = self.tcfg.min_lr / self.tcfg.lr
            decay = inverse_sqrt(self.tcfg.warmup_steps)
            return torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: max(decay(step), floor))
        return None

    @property
    def lr(self) -> float:
        """Current learning rate."""
        return self.optimizer.param_groups[0]["lr"]

    # ----------------------------------------------------------------- the loop

    def fit(self) -> Progress:
        """Train until a stopping rule fires; returns the final progress.

        Under torchrun only rank 0 logs, validates and writes files; every rank trains.
        """
        handler = self._open_run_files() if self.dist.main else None
        previous = self._catch_signals()
        try:
            self._loop()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
            if handler is not None:
                self._close_run_files(handler)
            distributed.teardown(self.dist)
        if self.dist.main:
            self._plot_curve()
        return self.progress

    def _open_run_files(self) -> logging.Handler:
        """config.yaml, train.log (INFO whatever the console shows) and TensorBoard."""
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.out / CONFIG_FILE)
        handler = logging.FileHandler(self.out / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        package_logger = logging.getLogger("nmt")
        package_logger.addHandler(handler)
        self._log_level = package_logger.level
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        self.writer = self._tensorboard()
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        log.info("training on %s, precision %s, %s parameters, %d pairs, %d batches an epoch%s",
                 self.device, precision_name(self.dtype),
                 f"{self.params:,}", len(self.train_corpus), self._epoch_batches,
                 f", {self.dist.world} processes ({backend})" if self.dist.enabled else "")
        return handler

    def _close_run_files(self, handler: logging.Handler) -> None:
        package_logger = logging.getLogger("nmt")
        package_logger.removeHandler(handler)
        package_logger.setLevel(self._log_level)
        handler.close()
        if self.writer is not None:
            self.writer.close()

    def _catch_signals(self) -> dict[int, Any]:
        """SIGINT / SIGTERM set a flag; the loop saves a checkpoint after the current update."""
        self._signal: int | None = None
        if threading.current_thread() is not threading.main_thread():
            return {}

        def note(signum: int, _frame: object) -> None:
            self._signal = signum

        return {signum: signal.signal(signum, note) for signum in (signal.SIGINT, signal.SIGTERM)}

    def _interrupted(self, start: float, signum: int) -> None:
        """Save a checkpoint at the current update and stop with :class:`TrainingInterrupted`."""
        p = self.progress
        p.elapsed = time.perf_counter() - start
        self._save_checkpoint()
        name = signal.Signals(signum).name
        if self.dist.main:
            log.warning("%s at update %d: checkpoint saved; continue with: nmt train --config "
                        "%s --resume", name, p.step, self.out / CONFIG_FILE)
        raise TrainingInterrupted(signum, p.step, self.out)

    def _loop(self) -> None:
        p, t = self.progress, self.tcfg
        start = time.perf_counter() - p.elapsed
        bar = self._bar()
        window_tokens, window_start, losses = 0, time.perf_counter(), []
        validated_at = p.step

        def rate() -> float:  # target tokens per second since the last validation
            return window_tokens / max(time.perf_counter() - window_start, 1e-9)

        # one update takes `accumulate` batches on each of the `world` processes, disjoint
        span = t.accumulate * self.dist.world
        rank_slice = slice(self.dist.rank * t.accumulate, (self.dist.rank + 1) * t.accumulate)

        def update_left(batches: list) -> bool:  # several processes need a batch each
            return p.batch_in_epoch + (span if self.dist.enabled else 1) <= len(batches)

        while not self._should_stop(p, start):
            batches = self.sampler.batches(p.epoch)
            self._epoch_batches = len(batches)
            while update_left(batches) and not self._should_stop(p, start):
                if t.schedule == "cosine":
                    self._follow_budget(start)
                chunk = batches[p.batch_in_epoch: p.batch_in_epoch + span]
                loss, tokens = self.train_step(chunk[rank_slice])
                p.batch_in_epoch += len(chunk)
                signum = self._agreed_signal()  # one snapshot per update, the same on every rank
                if not math.isfinite(loss):
                    self._skipped_update()
                    if signum:
                        self._interrupted(start, signum)
                    continue
                p.bad_updates = 0
                p.step += 1
                losses.append(loss)
                window_tokens += tokens
                if signum:
                    if bar is not None:
                        bar.close()
                    self._interrupted(start, signum)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.lr:.2e}",
                                    tok_s=f"{rate():,.0f}")
                if p.step % t.log_every == 0:
                    mean = sum(losses) / len(losses)
                    log.info("step %d epoch %d: loss %.4f, lr %.2e, %.0f target tokens/s",
                             p.step, p.epoch + 1, mean, self.lr, rate())
                    self._scalar("train/loss", mean)
                    self._scalar("train/lr", self.lr)
                    self._scalar("train/tokens_per_s", rate())
                if p.step % t.valid_every == 0:
                    p.elapsed = time.perf_counter() - start
                    self._validate_and_save(sum(losses) / max(len(losses), 1), rate())
                    validated_at = p.step
                    window_tokens, window_start, losses = 0, time.perf_counter(), []
            if not update_left(batches):
                p.epoch += 1
                p.batch_in_epoch = 0
        if p.step != validated_at:
            p.elapsed = time.perf_counter() - start
            self._validate_and_save(sum(losses) / max(len(losses), 1), rate())
        if bar is not None:
            bar.close()
        log.info("training finished after %d updates, %d epochs, %.0f s; best %s %.2f at "
                 "step %d", p.step, p.epoch, p.elapsed,
                 "BLEU" if self.valid_corpus is not None else "-(training loss)", p.best_score,
                 p.best_step)

    def _budget_spent(self, start: float) -> float:
        """Share of the training budget spent: the furthest along of max_steps, max_epochs
        (counting the batches of the current epoch) and max_minutes; the same on every process."""
        p, t = self.progress, self.tcfg
        shares = []
        if t.max_steps is not None:
            shares.append(p.step / t.max_steps)
        if t.max_epochs is not None:
            shares.append((p.epoch + p.batch_in_epoch / max(self._epoch_batches, 1))
                          / t.max_epochs)
        if t.max_minutes is not None:
            shares.append((time.perf_counter() - start) / (t.max_minutes * 60))
        spent = max(shares)
        if self.dist.enabled and t.max_minutes is not None:  # clocks differ between processes
            spent = distributed.sum_floats(self.dist, [spent], self.device)[0] / self.dist.world
        return spent

    def _follow_budget(self, start: float) -> None:
        """Set the ``cosine`` schedule's rate for the coming update."""
        t = self.tcfg
        factor = cosine(self._budget_spent(start), self.progress.step, t.warmup_steps,
                        t.min_lr / t.lr if t.lr else 0.0)
        for group in self.optimizer.param_groups:
            group["lr"] = t.lr * factor

    def _should_stop(self, p: Progress, start: float) -> bool:
        """Whether a stopping rule fires (on any process: all processes stop together)."""
        t = self.tcfg
        stop = ((t.max_steps is not None and p.step >= t.max_steps)
                or (t.max_epochs is not None and p.epoch >= t.max_epochs)
                or (t.max_minutes is not None
                    and time.perf_counter() - start >= t.max_minutes * 60)
                or bool(t.patience and p.bad_validations >= t.patience))
        return bool(distributed.any_true(self.dist, [stop], self.device)[0])

    def _agreed_signal(self) -> int:
        """The SIGINT/SIGTERM seen by any process (0: none), so that every process stops at the
        same update. A snapshot: decisions use it, never the flag the handler may set later."""
        pending = self._signal or 0
        return int(distributed.any_true(self.dist, [pending], self.device)[0])

    def _skipped_update(self) -> None:
        """Log an update skipped for a non-finite loss or gradient; stop after too many."""
        p, limit = self.progress, self.tcfg.max_bad_updates
        p.bad_updates += 1
        if self.dist.main:
            log.warning("update %d skipped: %s (%d in a row; training stops at %d)",
                        p.step + 1, self._skip_reason, p.bad_updates, limit)
        if p.bad_updates >= limit:
            raise NMTError(f"training diverged: {p.bad_updates} updates in a row had a "
                           f"non-finite loss or gradient after update {p.step}; the last "
                           f"checkpoint is intact: lower training.lr or training.clip_norm, or "
                           "use training.precision=fp32, then resume with --resume")

    def train_step(self, indices_group: list) -> tuple[float, int]:
        """One optimizer update over ``accumulate`` batches; returns (loss per token, tokens).

        An update whose loss or gradient norm is not finite is skipped (no optimizer or
        schedule step) and returned with a non-finite loss. With an fp16 gradient scaler,
        gradient overflow is the scaler's business: it skips the step and lowers the scale.
        """
        self.model.train()
        # normalise by the target tokens of the whole update (all processes), known before any
        # backward pass; DDP averages gradients over processes, hence the factor `world`
        local_tokens = sum(int((self.train_corpus.tgt_lengths[i] - 1).sum())
                           for i in indices_group)
        total_tokens = int(distributed.sum_floats(self.dist, [local_tokens], self.device)[0])
        scale = self.dist.world / max(total_tokens, 1)
        total_loss = 0.0
        for number, indices in enumerate(indices_group):
            batch = self.train_corpus.batch(indices).to(self.device)
            last = number == len(indices_group) - 1
            # gradients are exchanged once an update, after its last batch
            sync = (self.ddp.no_sync() if self.ddp is not None and not last
                    else contextlib.nullcontext())
            with sync:
                loss, _ = self._batch_loss(batch)
                self.scaler.scale(loss * scale).backward()
            total_loss += loss.item()
        total_loss = distributed.sum_floats(self.dist, [total_loss], self.device)[0]
        finite = math.isfinite(total_loss)
        if finite and (self.tcfg.clip_norm > 0 or not self.scaler.is_enabled()):
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                  self.tcfg.clip_norm or math.inf)
            finite = self.scaler.is_enabled() or bool(torch.isfinite(norm))
        if not finite:
            self._skip_reason = ("non-finite gradient norm" if math.isfinite(total_loss)
                                 else f"loss is {total_loss}")
            self.optimizer.zero_grad(set_to_none=True)  # (the scaler recorded nothing to update)
            return math.nan, total_tokens
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.tcfg.schedule == "inverse_sqrt":
            self.scheduler.step()
        return total_loss / max(total_tokens, 1), total_tokens

    def _batch_loss(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """Summed training loss of a batch and its number of target tokens (through DDP when
        several processes train; see :class:`TrainingLoss`)."""
        module = self.ddp if self.ddp is not None else self.loss_module
        with autocast(self.device, self.dtype):
            loss = module(batch.src, batch.src_lengths, batch.tgt)
        return loss, batch.ntokens

    # ----------------------------------------------------------------- validation and files

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss, perplexity, and greedy BLEU / chrF against the references."""
        if self.valid_corpus is None:
            return {}
        self.model.eval()
        total, tokens = 0.0, 0
        sampler = TokenBatchSampler(self.valid_corpus.src_lengths, self.valid_corpus.tgt_lengths,
                                    max(self.tcfg.batch_tokens,
                                        int(self.sampler.longest.max(initial=1)),
                                        int(self.valid_corpus.tgt_lengths.max(initial=1)),
                                        int(self.valid_corpus.src_lengths.max(initial=1))),
                                    shuffle=False)
        for indices in sampler.batches():
            batch = self.valid_corpus.batch(indices).to(self.device)
            with autocast(self.device, self.dtype):
                logits = self.model(batch.src, batch.src_lengths, batch.tgt[:, :-1])
            total += sequence_loss(logits, batch.tgt[:, 1:]).item()
            tokens += batch.ntokens
        dec = self.config.decoding
        hyps = translate_corpus(self.model, self.valid_corpus, self.tgt_tok, dec.batch_tokens,
                                self.device, self.dtype, dec.max_len_a, dec.max_len_b)
        scores = score(hyps, [self.valid_refs],
                       tokenize=bleu_tokenizer(self.config.data.tgt_lang))
        loss = total / max(tokens, 1)
        return {"valid_loss": loss, "valid_ppl": math.exp(min(loss, 50)), "bleu": scores.bleu,
                "chrf": scores.chrf}

    def _validate_and_save(self, train_loss: float, tokens_per_s: float) -> None:
        p = self.progress
        # rank 0 validates; every process takes the same decisions from its figures
        metrics = distributed.broadcast(self.dist, self.validate() if self.dist.main else None)
        epochs = p.epoch + p.batch_in_epoch / max(self._epoch_batches, 1)
        row = {"step": p.step, "epoch": round(epochs, 3), "train_loss": train_loss, "lr": self.lr,
               "tokens_per_s": tokens_per_s, "elapsed_s": p.elapsed, **metrics}
        bleu = metrics.get("bleu", -train_loss)  # without a validation set: lowest train loss
        improved = bleu > p.best_score
        if improved:
            p.best_score, p.best_step, p.bad_validations = bleu, p.step, 0
            if self.dist.main:
                save_weights(self.model, self.out / MODEL_FILE)
        else:
            p.bad_validations += 1
        if self.tcfg.schedule == "plateau":
            self.scheduler.step(bleu)
        p.history.append({k: float(v) for k, v in row.items()})
        if not self.dist.main:
            self._save_checkpoint()
            return
        self._write_metrics()
        for key in ("valid_loss", "valid_ppl", "bleu", "chrf"):
            if key in metrics:
                self._scalar(f"valid/{key}", metrics[key])
        if metrics:
            log.info("validation at step %d: loss %.4f, ppl %.2f, BLEU %.2f, chrF %.2f%s",
                     p.step, metrics["valid_loss"], metrics["valid_ppl"], metrics["bleu"],
                     metrics["chrf"], " (best)" if improved else "")
        self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        """Weights under checkpoints/, then the trainer state that points at them (rank 0;
        every process calls it, to hand in its random state)."""
        rng_states = distributed.gather(self.dist, torch.get_rng_state())
        cuda_states = (distributed.gather(self.dist, torch.cuda.get_rng_state(self.device))
                       if self.dist.enabled and self.device.type == "cuda" else [])
        if not self.dist.main:
            return
        p = self.progress
        directory = self.out / CHECKPOINT_DIR
        name = f"step-{p.step:08d}.safetensors"
        save_weights(self.model, directory / name)
        state = {
            "format_version": 1, "checkpoint": f"{CHECKPOINT_DIR}/{name}",
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "torch_rng_ranks": rng_states if self.dist.enabled else [],
            "cuda_rng_ranks": cuda_states,
            "world_size": self.dist.world,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "progress": {k: v for k, v in vars(p).items() if k != "history"},
            "history": p.history,
        }
        save_trainer_state(state, self.out / STATE_FILE)
        best = f"step-{p.best_step:08d}.safetensors"
        kept = sorted(directory.glob("step-*.safetensors"))
        for old in kept[: -self.tcfg.keep_last]:
            if old.name != best:  # the best checkpoint is never deleted
                old.unlink()

    def _load_state(self) -> None:
        state = load_trainer_state(self.out / STATE_FILE)
        load_weights(self.model, self.out / state["checkpoint"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ranks = state.get("torch_rng_ranks") or []
        if self.dist.enabled and len(ranks) == self.dist.world:
            torch.set_rng_state(ranks[self.dist.rank])
        else:
            torch.set_rng_state(state["torch_rng"])
            if self.dist.rank:
                torch.manual_seed(self.tcfg.seed + self.dist.rank + state["progress"]["step"])
        if state.get("world_size", 1) != self.dist.world:
            log.warning("resuming a run of %d process(es) with %d: updates now take %d batches",
                        state.get("world_size", 1), self.dist.world,
                        self.dist.world * self.tcfg.accumulate)
        cuda_ranks = state.get("cuda_rng_ranks") or []
        if self.dist.enabled and self.device.type == "cuda" and len(cuda_ranks) == self.dist.world:
            torch.cuda.set_rng_state(cuda_ranks[self.dist.rank], self.device)
        elif state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.progress = Progress(**state["progress"], history=list(state["history"]))
        log.info("resumed from %s: step %d, epoch %d", state["checkpoint"], self.progress.step,
                 self.progress.epoch + 1)

    def _write_metrics(self) -> None:
        """metrics.csv from the history, rewritten atomically (after a resume it holds exactly
        the validations of the checkpointed history, none twice)."""
        from nmt.fileio import atomic_write

        with atomic_write(self.out / METRICS_FILE, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            for row in self.progress.history:
                writer.writerow({k: int(row[k]) if k == "step" else row.get(k, "")
                                 for k in METRIC_FIELDS})

    def _bar(self) -> Any:
        if self.quiet or not self.dist.main:
            return None
        from tqdm import tqdm

        return tqdm(total=self.tcfg.max_steps, initial=self.progress.step, unit="step",
                    dynamic_ncols=True, leave=False)

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: no TensorBoard events are written")
            return None
        # on resume, events logged after the checkpoint are dropped: they are about to be redone
        return SummaryWriter(log_dir=str(self.out / "tensorboard"),
                             purge_step=self.progress.step + 1 if self.progress.step else None)

    def _scalar(self, tag: str, value: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.progress.step)

    def _plot_curve(self) -> None:
        """curve.png: training loss and validation BLEU against updates."""
        history = self.progress.history
        if not history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from nmt.fileio import atomic_write

        steps = [h["step"] for h in history]
        fig, loss_ax = plt.subplots(figsize=(7, 4))
        loss_ax.plot(steps, [h["train_loss"] for h in history], color="tab:blue",
                     label="training loss")
        if "valid_loss" in history[0]:
            loss_ax.plot(steps, [h["valid_loss"] for h in history], color="tab:cyan",
                         label="validation loss")
        loss_ax.set_xlabel("update")
        loss_ax.set_ylabel("loss per token")
        loss_ax.legend(loc="upper left")
        if "bleu" in history[0]:
            bleu_ax = loss_ax.twinx()
            bleu_ax.plot(steps, [h["bleu"] for h in history], color="tab:red", marker="o",
                         label="validation BLEU")
            bleu_ax.set_ylabel("BLEU")
            bleu_ax.legend(loc="upper right")
        loss_ax.set_title(f"{self.config.name}: learning curve")
        fig.tight_layout()
        with atomic_write(self.out / "curve.png", "wb") as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)


def train(config: Config, resume: bool = False, quiet: bool = False) -> Progress:
    """Train the run described by ``config`` (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, quiet=quiet).fit()


def _check_resume_config(config: Config) -> None:
    """On resume, the settings that fix the model and the batch order must be unchanged.

    Model, data and tokenizer settings, and the batching keys (a different seed, budget or
    accumulation would make the saved position point into a different list of batches).
    """
    from nmt.config import load_config

    saved_path = config.out / CONFIG_FILE
    if not saved_path.exists():
        return
    saved = load_config(saved_path)
    for section in ("model", "data", "tokenizer"):
        if to_dict(getattr(saved, section)) != to_dict(getattr(config, section)):
            raise NMTError(f"cannot resume: the {section} settings differ from those in "
                           f"{saved_path}; resume with the same config or start a new "
                           "output_dir")
    for key in ("seed", "batch_tokens", "accumulate"):
        old, new = getattr(saved.training, key), getattr(config.training, key)
        if old != new:
            raise NMTError(f"cannot resume: training.{key} was {old} and is now {new}; the "
                           "saved data position depends on it: resume with the same value")


__all__ = ["Trainer", "train", "translate_corpus", "sequence_loss", "load_weights"]
