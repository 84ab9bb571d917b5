"""Training: the loop, and the update step it repeats.

:meth:`Trainer.fit` reads top to bottom: :func:`updates` yields each update's batches (it
knows epochs, the resume position, ranks and accumulation); before an update the schedule
sets the learning rate; :meth:`Trainer.train_step` sums ``accumulate`` batches' gradients,
clips and steps Adam; every ``valid_every`` updates the model is validated (loss, perplexity,
greedy BLEU and chrF through the one decoding path, :func:`nmt.models.search.decode_all`), the best
weights are kept as ``model.safetensors`` and a checkpoint is written, so ``--resume``
continues from there. Two kinds of weight averaging are options: an exponential moving average
kept during training (``training.ema_decay``, :mod:`nmt.training.ema`: validated and kept
instead of the raw weights), and after training the mean of the last N checkpoints
(``training.average_last``), kept when it validates better. What lives elsewhere: schedules in
:mod:`nmt.training.schedule`, the loss in :mod:`nmt.training.loss`, checkpoints and random
states in :mod:`nmt.training.checkpoints` (weights in :mod:`nmt.models.weights`), the run's
outputs (log, TensorBoard, ``metrics.csv``, ``curve.png``, progress bar) in
:mod:`nmt.training.run_log`.

Precision: ``bf16`` autocast on CPUs where it is faster than fp32 (``auto``; see
:mod:`nmt.device`) and on CUDA; ``fp16`` with a gradient scaler on CUDA devices without bf16.
Loss and softmax stay in float32.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

# oneDNN keeps a compiled kernel per LSTM shape (batch x length) it meets, 1,024 by default;
# with token-budget batches nearly every batch is a new shape and memory grows by hundreds of
# MB. 64 cut peak RSS of the 'small' benchmark from 2.3 to 1.7 GB for about 2% speed. Read when
# oneDNN first runs, so it must be set before the first LSTM call of the process.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")

import numpy as np
import torch

from nmt.config import Config, save_config
from nmt.data.batching import Corpus, TokenBatchSampler, updates
from nmt.data.prepare import Prepared, adopt_base_model, prepare
from nmt.data.subword_sampling import SampledBatches, SampledEpochs
from nmt.device import (
    autocast,
    cpu_has_bf16_instructions,
    cpu_runs_bf16_lstm,
    precision_dtype,
    precision_name,
    resolve_device,
    resolve_precision,
)
from nmt.errors import ConfigError, NMTError, TrainingInterrupted
from nmt.fileio import sha256_file, write_text_atomic
from nmt.layout import RunDir
from nmt.models.seq2seq import build_model, count_parameters
from nmt.models.weights import average_weights, load_tensors, load_weights, save_weights
from nmt.training import distributed
from nmt.training.checkpoints import check_run_dir, load_checkpoint, save_checkpoint
from nmt.training.ema import WeightEMA
from nmt.training.loss import TrainingLoss, sampled_size
from nmt.training.run_log import Reporter, Window
from nmt.training.schedule import Budget, Schedule, describe_budget
from nmt.training.validation import validate


@dataclass
class Progress:
    """Where training stands: everything ``--resume`` needs besides weights and optimizer."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    epoch_batches: int = 1  # batches in the current epoch (it varies a little with the shuffle)
    best_score: float = float("-inf")  # validation BLEU, or -training loss without validation
    best_step: int = 0
    bad_validations: int = 0
    bad_updates: int = 0  # consecutive updates skipped for a non-finite loss or gradient
    elapsed: float = 0.0
    precision: str = ""  # the resolved training precision (fp32, bfloat16, float16)
    history: list[dict[str, float]] = field(default_factory=list)
    averaged: dict | None = None  # training.average_last's outcome (set after training)

    @property
    def epochs(self) -> float:
        """Epochs done, the current one in part."""
        return self.epoch + self.batch_in_epoch / self.epoch_batches

    @property
    def validated(self) -> bool:
        """Whether a validation set was scored (then ``best_score`` is a BLEU)."""
        return any("bleu" in row for row in self.history)


@dataclass
class StepResult:
    """One update: its loss per target token and its target tokens (all processes), or why it
    was skipped (``skipped`` set: no optimizer step was taken)."""

    loss: float
    tokens: int
    skipped: str | None = None


class Trainer:
    """Trains one run: ``Trainer(config).fit()`` writes the model directory ``output_dir``."""

    def __init__(self, config: Config, resume: bool = False, quiet: bool = False,
                 prepared: Prepared | None = None) -> None:
        self.config, self.quiet, self.tcfg = config, quiet, config.training
        self.run = RunDir(config.out)
        # fine-tuning: the base's tokenizer settings, before comparing with a run to resume
        self.base_config = adopt_base_model(config)
        check_run_dir(config, resume)
        torch.manual_seed(self.tcfg.seed)
        self.device = resolve_device(self.tcfg.device)
        self.dist = distributed.setup(self.device.type)  # a no-op without torchrun
        if not self.dist.main:  # only rank 0 logs
            logging.getLogger("nmt").setLevel(logging.WARNING)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.prepared = prepared or distributed.rank0_first(self.dist, lambda: prepare(config))
        self.precision_note = ""
        self.base_record: dict | None = None  # fine-tuning: the model this run started from
        if self.tcfg.precision == "auto":  # may time a probe: rank 0 measures, all follow
            chosen = precision_name(resolve_precision("auto", self.device)) \
                if self.dist.main else None
            self.dtype = precision_dtype(distributed.broadcast(self.dist, chosen))
        else:  # fixed (each rank raises its own error if it cannot)
            self.dtype = resolve_precision(self.tcfg.precision, self.device)
        self.src_tok, self.tgt_tok = self.prepared.src_tok, self.prepared.tgt_tok
        self.model = build_model(config.model, self.src_tok.vocab_size,
                                 self.tgt_tok.vocab_size).to(self.device)
        if self.tcfg.init_from and not resume:  # on resume the checkpoint has the weights
            self._start_from_base(Path(self.tcfg.init_from), self.base_config)
        self.params = count_parameters(self.model)
        if self.dist.rank:
            torch.manual_seed(self.tcfg.seed + self.dist.rank)  # own dropout masks per rank
        # the fused kernel: one pass over all parameters (CPU and CUDA; 3.6x faster than the
        # per-tensor loop on the recipe's 6.3M parameters on an AVX2 CPU)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.tcfg.lr,
                                          weight_decay=self.tcfg.weight_decay,
                                          fused=self.device.type in ("cpu", "cuda"))
        self.schedule, self.budget = Schedule(self.tcfg), Budget(self.tcfg, self.dist, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.train_corpus = Corpus(self.prepared.splits["train"])
        valid = self.prepared.splits.get("valid")
        self.valid_corpus = Corpus(valid) if valid is not None and len(valid) else None
        self.valid_refs = list(valid["tgt"]) if self.valid_corpus is not None else []
        self.sampler = TokenBatchSampler(self.train_corpus.src_lengths,
                                         self.train_corpus.tgt_lengths, self.tcfg.batch_tokens,
                                         seed=self.tcfg.seed)
        self.batches: TokenBatchSampler | SampledBatches = self.sampler
        sample = config.tokenizer
        if sample.sample_alpha > 0:  # subword regularisation: new pieces every epoch
            epochs = SampledEpochs(self.prepared.splits["train"], self.src_tok, self.tgt_tok,
                                   sample.sample_alpha, sample.sample_nbest, self.tcfg.seed,
                                   config.data.max_len, self.tcfg.batch_tokens,
                                   best=self.train_corpus)
            self.batches = SampledBatches(epochs, self.tcfg.batch_tokens, self.tcfg.seed)
        self.progress = Progress(epoch_batches=len(self.sampler.batches(0)))
        distributed.check_epoch(self.dist, self.progress.epoch_batches, self.tcfg.accumulate)
        if self.tcfg.average_last > self.tcfg.keep_last:
            raise ConfigError(f"training.average_last={self.tcfg.average_last} needs as many "
                              f"checkpoints kept: raise training.keep_last (now "
                              f"{self.tcfg.keep_last}) to at least {self.tcfg.average_last}")
        self.ema = WeightEMA(self.model, self.tcfg.ema_decay) if self.tcfg.ema_decay else None
        if resume:
            self.progress = Progress(**load_checkpoint(self.run, self.model, self._stateful(),
                                                       self.dist, self.device, self.tcfg.seed))
            self._keep_precision(self.progress.precision)
        self.progress.precision = precision_name(self.dtype)
        self.sampled = sampled_size(self.tcfg.sampled_softmax, self.device)
        self.loss = TrainingLoss(self.model, self.tcfg.label_smoothing,
                                 self.tcfg.teacher_forcing_ratio, self.sampled)
        self.ddp = distributed.wrap(self.dist, self.loss, self.device)  # None: one process
        self.report = Reporter(self.run, config.name, enabled=self.dist.main, quiet=quiet,
                               total_steps=self.tcfg.max_steps, first_step=self.progress.step)

    @property
    def epoch_corpus(self) -> Corpus:
        """The corpus the current batches index: with subword regularisation, this epoch's."""
        return self.batches.corpus if isinstance(self.batches, SampledBatches) \
            else self.train_corpus

    @property
    def lr(self) -> float:
        """The learning rate of the last update (of the first, before training)."""
        return self.optimizer.param_groups[0]["lr"]

    def fit(self) -> Progress:
        """Train until a stopping rule fires; returns the final progress.

        Under torchrun only rank 0 logs, validates and writes files; every rank trains.
        """
        p, t = self.progress, self.tcfg
        if self.dist.main:
            save_config(self.config, self.run.config)
        self.report.open()
        self.report.info("training on %s, precision %s%s, %s parameters, %d pairs, %d batches "
                         "an epoch%s", self.device, precision_name(self.dtype),
                         self.precision_note, f"{self.params:,}",
                         len(self.train_corpus), p.epoch_batches,
                         f", {self.dist.world} processes" if self.dist.enabled else "")
        if self.base_record is not None:
            self.report.info("fine-tuning from %s (%s, weights sha256 %s...) with a fresh "
                             "optimizer and schedule", self.base_record["path"],
                             self.base_record["name"], self.base_record["weights_sha256"][:16])
        if self.sampled:
            self.report.info("loss: sampled softmax over each batch's own pieces and %d drawn "
                             "from the rest (training.sampled_softmax%s)", self.sampled,
                             "" if t.sampled_softmax is not None else ": null, on a CPU")
        self.report.info("budget: %s", describe_budget(t))
        self.budget.resume(p.elapsed)
        window, validated_at, first_step = Window(), p.step, p.step
        with distributed.catch_signals() as self.caught, contextlib.closing(self.report), \
                distributed.joined(self.dist), contextlib.closing(self.batches):
            for batches in updates(self.batches, p, t.accumulate, self.dist.world, self.dist.rank,
                                   stop=lambda: self.budget.exhausted(p.step, p.epoch,
                                                                      p.bad_validations)):
                spent = self.budget.spent(p.step, p.epochs) \
                    if self.schedule.follows_budget else 0.0
                for group in self.optimizer.param_groups:
                    group["lr"] = self.schedule.rate(p.step, spent)
                result = self.train_step(batches)
                signum = self._agreed_signal()  # one snapshot per update, the same on every rank
                if result.skipped:
                    self._skipped(result.skipped)
                else:
                    p.bad_updates, p.step = 0, p.step + 1
                    window.add(result.loss, result.tokens)
                if signum:
                    self._interrupt(signum)
                if result.skipped:
                    continue
                self.report.update(p.step, result.loss, self.lr, window.rate)
                if p.step % t.log_every == 0:
                    self.report.training(p.step, p.epoch + 1, window.loss, self.lr, window.rate)
                    if p.step - first_step <= t.log_every:  # the first log: the rate is known
                        self._announce_end(p.step)
                if p.step % t.valid_every == 0:
                    if t.valid_after and self.budget.spent(
                            p.step, p.epochs) < t.valid_after:
                        p.elapsed = self.budget.elapsed()
                        self._save()  # too early to validate: a checkpoint only
                        window = Window()  # as a resumed run's window starts here
                        continue
                    self._validate_and_save(window.loss, window.rate)
                    window, validated_at = Window(), p.step
            if p.step != validated_at:
                self._validate_and_save(window.loss, window.rate)
            if self.dist.main and t.average_last > 1 and self.valid_corpus is not None:
                self._average_checkpoints()
            self.report.info("training finished after %d updates, %d epochs, %.0f s; best %s "
                             "%.2f at step %d", p.step, p.epoch, p.elapsed,
                             "BLEU" if p.validated else "-(training loss)", p.best_score,
                             p.best_step)
        self.report.finish(p.history)
        return p

    def train_step(self, indices_group: list[np.ndarray]) -> StepResult:
        """One optimizer update over ``accumulate`` batches (this process's share).

        An update whose loss or gradient norm is not finite is skipped (no optimizer step).
        With an fp16 gradient scaler, gradient overflow is the scaler's business: it skips the
        step and lowers the scale.
        """
        self.model.train()
        # normalise by the target tokens of the whole update (all processes), known before any
        # backward pass; DDP averages gradients over processes, hence the factor `world`
        corpus = self.epoch_corpus
        local = sum(int((corpus.tgt_lengths[i] - 1).sum()) for i in indices_group)
        total_tokens = int(distributed.sum_floats(self.dist, [local], self.device)[0])
        scale, total_loss = self.dist.world / max(total_tokens, 1), 0.0
        for number, indices in enumerate(indices_group):
            batch = corpus.batch(indices).to(self.device)
            last = number == len(indices_group) - 1  # gradients are exchanged after the last
            with self.ddp.no_sync() if self.ddp is not None and not last \
                    else contextlib.nullcontext():
                loss = self.batch_loss(batch.src, batch.src_lengths, batch.tgt)
                self.scaler.scale(loss * scale).backward()
            total_loss += loss.item()
        total_loss = distributed.sum_floats(self.dist, [total_loss], self.device)[0]
        skipped = None if math.isfinite(total_loss) else f"loss is {total_loss}"
        if not skipped and (self.tcfg.clip_norm > 0 or not self.scaler.is_enabled()):
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                  self.tcfg.clip_norm or math.inf)
            if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
                skipped = "non-finite gradient norm"
        if not skipped:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(total_loss / max(total_tokens, 1), total_tokens, skipped)

    def batch_loss(self, src: torch.Tensor, src_lengths: torch.Tensor,
                   tgt: torch.Tensor) -> torch.Tensor:
        """Summed training loss of a batch: src (B, S), BOS + target + EOS (B, T + 1)."""
        with autocast(self.device, self.dtype):
            return (self.ddp or self.loss)(src, src_lengths, tgt)

    def validate(self, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Validation loss, perplexity, and greedy BLEU / chrF of ``model`` (the one trained by
        default); empty without a validation set."""
        if self.valid_corpus is None:
            return {}
        budget = max(self.tcfg.batch_tokens, int(self.sampler.longest.max(initial=1)))
        return validate(model or self.model, self.valid_corpus, self.valid_refs, self.tgt_tok,
                        self.config, self.device, self.dtype, budget)

    # ----------------------------------------------------------------- around the loop

    def _validate_and_save(self, train_loss: float, tokens_per_s: float) -> None:
        """Validate (rank 0; every process takes the same decisions from its figures), keep
        the best weights, and write a checkpoint."""
        p = self.progress
        p.elapsed = self.budget.elapsed()
        averaged = self.ema.applied() if self.ema is not None else contextlib.nullcontext()
        with averaged:  # with training.ema_decay the average is validated and kept
            metrics = distributed.broadcast(self.dist,
                                            self.validate() if self.dist.main else None)
            score_ = metrics.get("bleu", -train_loss)  # without a validation set: lowest loss
            improved = score_ > p.best_score
            if improved and self.dist.main:
                save_weights(self.model, self.run.model)
        row = {"step": p.step, "epoch": round(p.epochs, 3),
               "train_loss": train_loss, "lr": self.lr, "tokens_per_s": tokens_per_s,
               "elapsed_s": p.elapsed, **metrics}
        if improved:
            p.best_score, p.best_step, p.bad_validations = score_, p.step, 0
        else:
            p.bad_validations += 1
        self.schedule.validated(score_)
        p.history.append({k: float(v) for k, v in row.items()})
        self.report.validation(p.step, metrics, improved, p.history)
        self._save()

    def _start_from_base(self, base: Path, base_config: Config) -> None:
        """Fine-tuning: load the base model's weights (before the optimizer and EMA see the
        model) and record which model that was in ``base_model.json``."""
        base_run = RunDir(base)
        load_weights(self.model, base_run.model)
        record = {"path": str(base), "name": base_config.name,
                  "weights_sha256": sha256_file(base_run.model)}
        if self.dist.main:
            write_text_atomic(self.run.base_model, json.dumps(record, indent=2) + "\n")
        self.base_record = record

    def _announce_end(self, step: int) -> None:
        """Log when training will end at the rate so far, and which limit ends it."""
        p = self.progress
        seconds = self.budget.elapsed()
        total, limit = self.budget.estimate(step, p.epochs, seconds)
        if math.isinf(total):
            self.report.info("no step, epoch or time limit: training runs until early stopping "
                             "(training.patience)")
            return
        self.report.info("at this rate training ends in about %.0f minutes (%s), after about "
                         "%s updates", max(total - seconds, 0) / 60, limit,
                         f"{round(step * total / max(seconds, 1e-9)):,}")

    def _keep_precision(self, recorded: str) -> None:
        """On resume with precision ``auto``, train on in the precision the run started with
        (``auto`` may time a probe, and a resumed run must stay bit-exact)."""
        if self.tcfg.precision != "auto" or self.device.type != "cpu" \
                or recorded not in ("fp32", "bfloat16") or recorded == precision_name(self.dtype):
            return  # on CUDA auto is a fixed rule, and fp16's loss scaler is set up already
        if recorded == "bfloat16" and not (cpu_has_bf16_instructions() and cpu_runs_bf16_lstm()):
            return  # moved to a CPU where bf16 is emulated or fails: auto's own choice
        self.precision_note = (f" (the precision this run started with; auto resolves to "
                               f"{precision_name(self.dtype)} here)")
        self.dtype = precision_dtype(recorded)

    def _save(self) -> None:
        save_checkpoint(self.run, self.model, self._stateful(), vars(self.progress),
                        self.tcfg.keep_last, self.dist, self.device)

    def _stateful(self) -> dict:
        extra = {"ema": self.ema} if self.ema is not None else {}
        return {"optimizer": self.optimizer, "schedule": self.schedule, "scaler": self.scaler,
                **extra}

    def _average_checkpoints(self) -> None:
        """``training.average_last``: validate the mean of the last N checkpoints' weights and
        keep it as ``model.safetensors`` when it beats the best validation BLEU (rank 0)."""
        p, n = self.progress, self.tcfg.average_last
        paths = self.run.checkpoint_files()[-n:]
        if len(paths) < 2:
            return
        model = copy.deepcopy(self.model)
        load_tensors(model, average_weights(paths), paths[0])
        bleu = self.validate(model)["bleu"]
        kept = bleu > p.best_score
        p.averaged = {"checkpoints": [path.name for path in paths], "bleu": bleu, "kept": kept,
                      "best_before": p.best_score}
        self.report.info("average of the last %d checkpoints (%s): validation BLEU %.2f %s the "
                         "best %.2f%s", len(paths), ", ".join(path.stem for path in paths), bleu,
                         "beats" if kept else "does not beat", p.best_score,
                         ": kept as the model" if kept else "")
        if kept:
            p.best_score = bleu
            save_weights(model, self.run.model)

    def _agreed_signal(self) -> int:
        """The SIGINT/SIGTERM seen by any process (0: none), so that every process stops at the
        same update. A snapshot: decisions use it, never the flag the handler may set later."""
        return int(distributed.any_true(self.dist, [self.caught["signal"]], self.device)[0])

    def _interrupt(self, signum: int) -> None:
        """Save a checkpoint at the current update and stop with :class:`TrainingInterrupted`."""
        p = self.progress
        p.elapsed = self.budget.elapsed()
        self._save()
        self.report.warning("%s at update %d: checkpoint saved; continue with: nmt train "
                            "--config %s --resume", signal.Signals(signum).name, p.step,
                            self.run.config)
        raise TrainingInterrupted(signum, p.step, self.run.config)

    def _skipped(self, reason: str) -> None:
        """Log an update skipped for a non-finite loss or gradient; stop after too many."""
        p, limit = self.progress, self.tcfg.max_bad_updates
        p.bad_updates += 1
        self.report.warning("update %d skipped: %s (%d in a row; training stops at %d)",
                            p.step + 1, reason, p.bad_updates, limit)
        if p.bad_updates >= limit:
            raise NMTError(f"training diverged: {p.bad_updates} updates in a row had a "
                           f"non-finite loss or gradient after update {p.step}; the last "
                           f"checkpoint is intact: lower training.lr or training.clip_norm, or "
                           "use training.precision=fp32, then resume with --resume")


def train(config: Config, resume: bool = False, quiet: bool = False) -> Progress:
    """Train the run described by ``config`` (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, quiet=quiet).fit()


__all__ = ["Progress", "StepResult", "Trainer", "TrainingInterrupted", "train"]
