"""Learning-rate schedules: the rate of each update as a function of where training stands.

Every schedule answers ``rate(step, spent)``: the learning rate of the update that follows
``step`` finished updates, when the share ``spent`` (0 to 1, or more when overrun) of the
training budget (``max_steps`` / ``max_epochs`` / ``max_minutes``, whichever is furthest along)
is used up. The trainer sets that rate on the optimizer before each update; nothing else
changes it.

- ``constant``: the peak rate ``lr``.
- ``inverse_sqrt``: linear warmup to ``lr``, then ``lr * sqrt(warmup / step)``.
- ``cosine``: linear warmup, times half a cosine from ``lr`` down to ``min_lr`` over the budget.
- ``plateau``: the only one with state: the rate falls by ``plateau_factor`` when validation
  BLEU has not improved for more than ``plateau_patience`` validations (``validated(score)``).

All rates are at least ``min_lr``, except during warmup. :class:`Budget` owns the budget
itself: when training stops, and how much of it is spent.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from nmt.config import TrainingConfig
from nmt.training import distributed
from nmt.training.distributed import Dist


def inverse_sqrt(step: int, warmup: int) -> float:
    """Multiplier of ``inverse_sqrt`` for the update after ``step`` updates.

    Linear warmup to 1 over ``warmup`` updates, then ``sqrt(warmup / step)``.
    """
    step = max(step, 1)
    if warmup and step < warmup:
        return step / warmup
    return math.sqrt(max(warmup, 1) / step)


def cosine(spent: float, step: int, warmup: int, floor: float) -> float:
    """Multiplier of ``cosine`` for the update after ``step`` updates.

    Linear warmup over the first ``warmup`` updates, times half a cosine that falls from 1 when
    none of the training budget is ``spent`` (0) to ``floor`` when all of it is (1).
    """
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    spent = min(max(spent, 0.0), 1.0)
    return warm * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * spent)))


class Schedule:
    """The learning rate of each update, from the training config (see the module docstring)."""

    def __init__(self, cfg: TrainingConfig) -> None:
        self.kind, self.lr, self.min_lr, self.warmup = cfg.schedule, cfg.lr, cfg.min_lr, \
            cfg.warmup_steps
        self.factor, self.patience = cfg.plateau_factor, cfg.plateau_patience
        # plateau state: the current rate, the best score seen, validations since it
        self.current, self.best, self.bad = cfg.lr, float("-inf"), 0

    @property
    def follows_budget(self) -> bool:
        """Whether the rate depends on the share of the budget spent (the trainer then measures
        it before every update)."""
        return self.kind == "cosine"

    def rate(self, step: int, spent: float = 0.0) -> float:
        """The learning rate of the update after ``step`` updates, ``spent`` of the budget used."""
        if self.kind == "inverse_sqrt":
            return self.lr * max(inverse_sqrt(step, self.warmup), self.min_lr / self.lr)
        if self.kind == "cosine":
            return self.lr * cosine(spent, step, self.warmup, self.min_lr / self.lr)
        if self.kind == "plateau":
            return self.current
        return self.lr

    def validated(self, score: float) -> None:
        """Take a validation score (higher is better); ``plateau`` may lower its rate.

        As torch's ``ReduceLROnPlateau(mode="max")``: an improvement beats the best by a
        relative 1e-4; after more than ``patience`` validations without one the rate is
        multiplied by ``plateau_factor`` (not below ``min_lr``) and the count starts again.
        """
        if self.kind != "plateau":
            return
        if score > self.best * (1.0 + 1e-4):
            self.best, self.bad = score, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            lowered = max(self.current * self.factor, self.min_lr)
            if self.current - lowered > 1e-8:
                self.current = lowered
            self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        """What ``--resume`` needs (only ``plateau`` has state)."""
        return {"current": self.current, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values (an empty dict leaves the start state)."""
        self.current = float(state.get("current", self.current))
        self.best = float(state.get("best", self.best))
        self.bad = int(state.get("bad", self.bad))


def describe_budget(c: TrainingConfig) -> str:
    """A training budget in words: its limits, whichever ends first, and early stopping."""
    parts = [f"{c.max_minutes:g} minutes (training.max_minutes)" if c.max_minutes else "",
             f"{c.max_epochs} epochs (training.max_epochs)" if c.max_epochs else "",
             f"{c.max_steps:,} updates (training.max_steps)" if c.max_steps else ""]
    parts = [p for p in parts if p]
    stop = f"; early stop after {c.patience} validations without a better BLEU" \
        if c.patience else ""
    if not parts:
        return f"no step, epoch or time limit{stop}"
    return "at most " + " or ".join(parts) + \
        (", whichever comes first" if len(parts) > 1 else "") + stop


class Budget:
    """The training budget: the stopping rules, and the share of the budget spent.

    ``max_steps``, ``max_epochs`` and ``max_minutes`` (any that are set) and early stopping
    after ``patience`` validations without improvement. Under torchrun every process takes the
    same decisions: a rule that fires on one process fires on all, and the minutes are averaged.
    """

    def __init__(self, cfg: TrainingConfig, dist: Dist, device: torch.device) -> None:
        self.cfg, self.dist, self.device = cfg, dist, device
        self.start = time.perf_counter()

    def resume(self, elapsed: float) -> None:
        """Start the clock as if ``elapsed`` seconds of training had already run."""
        self.start = time.perf_counter() - elapsed

    def elapsed(self) -> float:
        """Seconds of training, resumed runs included."""
        return time.perf_counter() - self.start

    def spent(self, step: int, epochs: float) -> float:
        """The furthest along of ``step / max_steps``, ``epochs / max_epochs`` (fractional)
        and the minutes over ``max_minutes``."""
        c = self.cfg
        shares = [step / c.max_steps if c.max_steps else 0.0,
                  epochs / c.max_epochs if c.max_epochs else 0.0]
        if c.max_minutes is not None:
            minutes = distributed.mean(self.dist, self.elapsed() / 60, self.device)
            shares.append(minutes / c.max_minutes)
        return max(shares)

    def estimate(self, step: int, epochs: float, seconds: float) -> tuple[float, str]:
        """Expected seconds of the whole training at the rate so far (``step`` updates and
        ``epochs`` epochs in ``seconds``), and the limit that ends it (``inf`` without one)."""
        c = self.cfg
        ends = []
        if c.max_minutes:
            ends.append((c.max_minutes * 60, "training.max_minutes"))
        if c.max_epochs and epochs > 0:
            ends.append((seconds * c.max_epochs / epochs, "training.max_epochs"))
        if c.max_steps and step > 0:
            ends.append((seconds * c.max_steps / step, "training.max_steps"))
        return min(ends) if ends else (math.inf, "no limit")

    def exhausted(self, step: int, epoch: int, bad_validations: int) -> bool:
        """Whether a stopping rule fires (on any process)."""
        c = self.cfg
        stop = ((c.max_steps is not None and step >= c.max_steps)
                or (c.max_epochs is not None and epoch >= c.max_epochs)
                or (c.max_minutes is not None and self.elapsed() >= c.max_minutes * 60)
                or bool(c.patience and bad_validations >= c.patience))
        return bool(distributed.any_true(self.dist, [stop], self.device)[0])
