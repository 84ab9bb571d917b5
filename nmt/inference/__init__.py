"""The inference room: translating with a trained model (torch or ONNX Runtime).

- :mod:`~nmt.inference.translator`: :class:`~nmt.inference.translator.Translator`, the line
  contract, long lines, n-best,
  int8, attention maps, sentence vectors;
- :mod:`~nmt.inference.evaluate`: translate a file or split of a model, keep the hypotheses with
  what made them, score them.

Imports the models, ONNX and data rooms and the shared modules, never training.
"""
