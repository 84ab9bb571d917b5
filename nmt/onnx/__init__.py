"""The ONNX room: a model directory as ONNX graphs, and ONNX Runtime behind the model's API.

- :mod:`~nmt.onnx.manifest`: the export format, its manifest and the install hint;
- :mod:`~nmt.onnx.export`: ``nmt export`` (tracing, int8 quantisation, parity check);
- :mod:`~nmt.onnx.runtime`: :class:`~nmt.onnx.runtime.OnnxModel`, an export searched like a
  torch model.

Imports the models and data rooms and the shared modules, never training. (Inside this
package, ``import onnx`` still means the ONNX library: imports are absolute.)
"""
