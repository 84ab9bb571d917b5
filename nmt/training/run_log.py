"""What a training run tells: ``train.log``, TensorBoard, ``metrics.csv``, ``curve.png`` and the
progress bar.

:class:`Reporter` is the trainer's one channel out. Under torchrun only rank 0 reports: the
other ranks get a reporter whose methods do nothing. Nothing here decides anything about
training; it only writes down what the trainer hands it.
"""

from __future__ import annotations

import csv
import logging
import time
from typing import Any

from nmt.fileio import atomic_write
from nmt.layout import RunDir

log = logging.getLogger("nmt.training.trainer")

METRIC_FIELDS = ("step", "epoch", "train_loss", "lr", "valid_loss", "valid_ppl", "bleu", "chrf",
                 "tokens_per_s", "elapsed_s")


class Window:
    """Training loss and target tokens/s since the last validation."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.tokens = 0
        self.start = time.perf_counter()

    def add(self, loss: float, tokens: int) -> None:
        """One finished update's loss per token and target tokens."""
        self.losses.append(loss)
        self.tokens += tokens

    @property
    def loss(self) -> float:
        """Mean loss of the updates so far (summed in order, as logged); NaN before any."""
        return sum(self.losses) / len(self.losses) if self.losses else float("nan")

    @property
    def rate(self) -> float:
        """Target tokens per second since the window started."""
        return self.tokens / max(time.perf_counter() - self.start, 1e-9)


class Reporter:
    """Logs, TensorBoard scalars, ``metrics.csv``, the learning curve and the progress bar."""

    def __init__(self, run: RunDir, title: str, enabled: bool = True, quiet: bool = False,
                 total_steps: int | None = None, first_step: int = 0) -> None:
        self.run, self.title, self.enabled, self.quiet = run, title, enabled, quiet
        self.total_steps, self.step = total_steps, first_step
        self.bar: Any = None
        self.writer: Any = None
        self.handler: logging.Handler | None = None
        self._level = logging.NOTSET

    def open(self) -> None:
        """Start ``train.log`` (INFO whatever the console shows), TensorBoard and the bar."""
        if not self.enabled:
            return
        self.run.root.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.run.log, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.INFO)
        package = logging.getLogger("nmt")
        package.addHandler(self.handler)
        self._level = package.level
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)
        self.writer = self._tensorboard()
        if not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step",
                            dynamic_ncols=True, leave=False)

    def close(self) -> None:
        """Close the bar, TensorBoard and ``train.log`` (safe to call twice)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.handler is not None:
            package = logging.getLogger("nmt")
            package.removeHandler(self.handler)
            package.setLevel(self._level)
            self.handler.close()
            self.handler = None

    def info(self, message: str, *args: Any) -> None:
        """A line in the log (rank 0 only)."""
        if self.enabled:
            log.info(message, *args)

    def warning(self, message: str, *args: Any) -> None:
        """A warning in the log (rank 0 only)."""
        if self.enabled:
            log.warning(message, *args)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """One finished update: the progress bar moves."""
        self.step = step
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")

    def training(self, step: int, epoch: int, loss: float, lr: float,
                 tokens_per_s: float) -> None:
        """The mean training loss of the last ``log_every`` updates: log and TensorBoard."""
        self.info("step %d epoch %d: loss %.4f, lr %.2e, %.0f target tokens/s", step, epoch,
                  loss, lr, tokens_per_s)
        for tag, value in (("train/loss", loss), ("train/lr", lr),
                           ("train/tokens_per_s", tokens_per_s)):
            self._scalar(tag, value, step)

    def validation(self, step: int, metrics: dict[str, float], improved: bool,
                   history: list[dict[str, float]]) -> None:
        """A validation's figures: TensorBoard, the log, and ``metrics.csv`` from ``history``."""
        if not self.enabled:
            return
        self._write_metrics(history)
        for key in ("valid_loss", "valid_ppl", "bleu", "chrf"):
            if key in metrics:
                self._scalar(f"valid/{key}", metrics[key], step)
        if metrics:
            log.info("validation at step %d: loss %.4f, ppl %.2f, BLEU %.2f, chrF %.2f%s", step,
                     metrics["valid_loss"], metrics["valid_ppl"], metrics["bleu"],
                     metrics["chrf"], " (best)" if improved else "")

    def finish(self, history: list[dict[str, float]]) -> None:
        """``curve.png``: training loss and validation BLEU against updates."""
        if self.enabled and history:
            plot_curve(self.run, history, self.title)

    # ----------------------------------------------------------------- files

    def _write_metrics(self, history: list[dict[str, float]]) -> None:
        """metrics.csv from the history, rewritten atomically (after a resume it holds exactly
        the validations of the checkpointed history, none twice)."""
        with atomic_write(self.run.metrics, "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS, extrasaction="ignore",
                                    lineterminator="\n")
            writer.writeheader()
            for row in history:
                writer.writerow({k: int(row[k]) if k == "step" else row.get(k, "")
                                 for k in METRIC_FIELDS})

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed: no TensorBoard events are written")
            return None
        # on resume, events logged after the checkpoint are dropped: they are about to be redone
        return SummaryWriter(log_dir=str(self.run.tensorboard),
                             purge_step=self.step + 1 if self.step else None)

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)


def plot_curve(run: RunDir, history: list[dict[str, float]], title: str) -> None:
    """Write ``curve.png``: training (and validation) loss, and validation BLEU, per update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    loss_ax.set_title(f"{title}: learning curve")
    fig.tight_layout()
    with atomic_write(run.curve, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
