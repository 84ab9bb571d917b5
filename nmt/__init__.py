"""nmt: LSTM sequence-to-sequence neural machine translation on PyTorch.

The library is a house of rooms, each a subpackage with one role (``docs/architecture.md``
gives the layer order that a test enforces):

- shared modules at the top: :mod:`nmt.errors`, :mod:`nmt.fileio`, :mod:`nmt.layout` (the
  run-directory layout), :mod:`nmt.config`, :mod:`nmt.device`, :mod:`nmt.scoring` (sacreBLEU),
  :mod:`nmt.console` (what the command and the recipes share on a terminal);
- :mod:`nmt.data`: corpora, SentencePiece, the encoded-id cache, batching, the prepare stage;
- :mod:`nmt.models`: the network, its weights and the search;
- :mod:`nmt.training`: the trainer, loss, schedule, validation, checkpoints, torchrun;
- :mod:`nmt.onnx`: export and the ONNX Runtime backend;
- :mod:`nmt.inference`: the :class:`~nmt.inference.translator.Translator` and evaluating a
  model;
- :mod:`nmt.serve` (a LibreTranslate-compatible server) and :mod:`nmt.pipeline` (recipes);
- :mod:`nmt.cli`: the ``nmt`` command.

Importing ``nmt`` is cheap: the public names below load their module (and torch) on first
use (PEP 562), so ``from nmt import Translator`` works and ``nmt --help`` starts without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    "Config": "nmt.config", "DecodingConfig": "nmt.config", "load_config": "nmt.config",
    "NMTError": "nmt.errors", "ConfigError": "nmt.errors", "DataError": "nmt.errors",
    "FORMAT_VERSION": "nmt.layout", "RunDir": "nmt.layout",
    "score": "nmt.scoring", "evaluate_files": "nmt.scoring",
    "Tokenizer": "nmt.data.tokenizer", "prepare": "nmt.data.prepare",
    "Seq2Seq": "nmt.models.seq2seq", "Ensemble": "nmt.models.seq2seq",
    "build_model": "nmt.models.seq2seq",
    "load_model_dir": "nmt.models.weights", "average_model_dir": "nmt.models.weights",
    "Trainer": "nmt.training.trainer", "train": "nmt.training.trainer",
    "export_model": "nmt.onnx.export",
    "Translator": "nmt.inference.translator", "evaluate_model": "nmt.inference.evaluate",
}

__all__ = ["__version__", *_PUBLIC]

def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'nmt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
