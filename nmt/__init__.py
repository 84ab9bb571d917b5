"""nmt: LSTM sequence-to-sequence neural machine translation on PyTorch.

The package is split into one module per stage (config, tokenizer, data, batching, ...).
Importing ``nmt`` itself is cheap: heavy libraries (torch, datasets) are imported only by the
modules that need them, so the command line starts fast.
"""

__version__ = "0.1.0"

#: Version of the on-disk layout of model directories and configs written by this toolkit.
FORMAT_VERSION = 1
