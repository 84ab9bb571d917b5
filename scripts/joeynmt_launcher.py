"""Runs JoeyNMT 2.3.0 for ``scripts/bench_vs_joeynmt.py``, inside JoeyNMT's own virtual env.

JoeyNMT 2.3.0 was released for torch 2.1 and sentencepiece 0.1; with torch 2.13.0 and
sentencepiece 0.2.3 two calls break. They are patched here, at run time, never in
JoeyNMT's files:

- ``ReduceLROnPlateau(verbose=...)``: the argument was removed from torch; it is dropped.
- ``SentencePieceProcessor.SetVocabulary`` no longer exists; JoeyNMT calls it to restrict
  the pieces to its vocabulary file. The benchmark writes the full SentencePiece vocabulary
  there, so skipping the call changes nothing.

JoeyNMT's ``torch.load`` calls need nothing: torch now defaults to ``weights_only=True``,
and its checkpoints (tensors, numbers, plain containers) load that way.

It also measures, the same way ``bench_vs_joeynmt.py`` measures our toolkit:

- ``train``: the wall-clock budget starts when the training loop starts. JoeyNMT has no time
  limit of its own: when the budget is spent a timer sets its "maximum number of updates
  reached" flag, which it checks after every batch, so it stops between updates (a
  validation under way finishes first), as our ``training.max_minutes`` does. The last
  weights are then validated once more if they were not, so that ``best.ckpt`` is the best
  validated state, as in ours. Written to ``--report`` as JSON: updates, target tokens,
  seconds (all, and in validation), and the timeline of validation BLEU against seconds
  since the start.
- ``test``: seconds of each ``predict`` call less the time of its ``evaluate`` call (batching,
  search and detokenisation included; model and data loading and JoeyNMT's own scoring
  excluded), as the benchmark times our ``Translator.translate``.

    python joeynmt_launcher.py train CONFIG --minutes M --report FILE [--threads 2]
    python joeynmt_launcher.py test CONFIG --output-path PREFIX --report FILE [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any


def patch_compatibility() -> None:
    """The two run-time patches described in the module docstring."""
    import torch
    from joeynmt import builders, tokenizers

    class Plateau(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def __init__(self, *args: Any, verbose: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    builders.ReduceLROnPlateau = Plateau

    def set_vocab(self: Any, vocab: Any) -> None:
        tokenizers.BasicTokenizer.set_vocab(self, vocab)
        if hasattr(self.spm, "SetVocabulary"):
            self.spm.SetVocabulary(vocab._itos)

    tokenizers.SentencePieceTokenizer.set_vocab = set_vocab


def instrument_training(minutes: float, report: Path) -> None:
    """Budget timer, validation timeline and the final report around TrainManager."""
    from joeynmt.training import TrainManager

    record: dict[str, Any] = {"timeline": [], "valid_seconds": 0.0}
    original_train, original_validate = TrainManager.train_and_validate, TrainManager._validate
    original_report = TrainManager._add_report

    def add_report(self: Any, valid_scores: dict, new_best: bool = False) -> None:
        original_report(self, valid_scores=valid_scores, new_best=new_best)
        record["last_scores"] = dict(valid_scores)

    def validate(self: Any, valid_data: Any) -> None:
        begin = time.perf_counter()
        try:
            original_validate(self, valid_data)
        finally:
            record["valid_seconds"] += time.perf_counter() - begin
        end = time.perf_counter()
        record["validated_step"] = self.stats.steps
        scores = record.get("last_scores", {})
        record["timeline"].append({"seconds": end - record["start"], "step": self.stats.steps,
                                   "bleu": scores.get("bleu")})

    def train_and_validate(self: Any, train_data: Any, valid_data: Any) -> None:
        record["start"] = time.perf_counter()
        def budget_spent() -> None:
            self.stats.is_max_update = True

        timer = threading.Timer(minutes * 60, budget_spent)
        timer.daemon = True
        timer.start()
        try:
            original_train(self, train_data, valid_data)
        finally:
            timer.cancel()
        if record.get("validated_step") != self.stats.steps:
            self._validate(valid_data)  # the last weights, as our trainer does at its end
        total = time.perf_counter() - record["start"]
        out = {"updates": self.stats.steps, "target_tokens": self.stats.total_tokens,
               "seconds": total, "valid_seconds": record["valid_seconds"],
               "timeline": record["timeline"],
               "best_valid_bleu": self.stats.best_ckpt_score,
               "best_step": self.stats.best_ckpt_iter}
        report.write_text(json.dumps(out, indent=2), encoding="utf-8")

    TrainManager.train_and_validate = train_and_validate
    TrainManager._validate = validate
    TrainManager._add_report = add_report


def instrument_prediction(report: Path) -> None:
    """Record JoeyNMT's generation time of each data set it translates in test mode."""
    from joeynmt import prediction

    timings: list[dict[str, Any]] = []
    scoring = [0.0]
    original, original_evaluate = prediction.predict, prediction.evaluate

    def evaluate(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        try:
            return original_evaluate(*args, **kwargs)
        finally:
            scoring[0] += time.perf_counter() - begin

    def predict(*args: Any, **kwargs: Any) -> Any:
        data = kwargs["data"]
        scoring[0] = 0.0
        begin = time.perf_counter()
        result = original(*args, **kwargs)
        seconds = time.perf_counter() - begin - scoring[0]
        timings.append({"sentences": len(data), "seconds": seconds, "scoring_seconds": scoring[0]})
        report.write_text(json.dumps({"predict": timings}, indent=2), encoding="utf-8")
        return result

    prediction.predict, prediction.evaluate = predict, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("train", "test"))
    parser.add_argument("config")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--output-path")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    patch_compatibility()
    if args.mode == "train":
        instrument_training(args.minutes, args.report)
        sys.argv = ["joeynmt", "train", args.config, "--skip-test"]
    else:
        instrument_prediction(args.report)
        sys.argv = ["joeynmt", "test", args.config, "--output-path", args.output_path]
    from joeynmt.__main__ import main as joey_main
    joey_main()


if __name__ == "__main__":
    main()
