"""The training room: from encoded data to a trained model directory.

- :mod:`~nmt.training.trainer`: the training loop (``Trainer.fit``) and the update step;
- :mod:`~nmt.training.loss`: the fused, chunked training loss and the validation loss;
- :mod:`~nmt.training.schedule`: learning-rate schedules and the training budget;
- :mod:`~nmt.training.ema`: the weights' exponential moving average;
- :mod:`~nmt.training.validation`: validation loss, perplexity, greedy BLEU / chrF;
- :mod:`~nmt.training.run_log`: what a run tells (``train.log``, TensorBoard, ``metrics.csv``,
  ``curve.png``, the progress bar);
- :mod:`~nmt.training.checkpoints`: training checkpoints (optimizer, RNG, rotation);
- :mod:`~nmt.training.distributed`: torchrun process groups, collectives, stop signals.

Imports the models and data rooms and the shared modules; nothing that translates imports it.
"""
