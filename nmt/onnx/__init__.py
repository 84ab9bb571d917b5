"""The ONNX room: a model directory as ONNX graphs, and ONNX Runtime behind the model's API.

- :mod:`~nmt.onnx.manifest`: the export format, its manifest and the install hint;
- :mod:`~nmt.onnx.export`: ``nmt export`` (tracing, int8 quantisation, parity check);
- :mod:`~nmt.onnx.runtime`: :class:`OnnxModel`, an export searched like a torch model.

Imports the models room and the shared modules. (Inside this package, ``import onnx`` still
means the ONNX library: imports are absolute.)
"""
