"""The data room: from a corpus to batches of token ids.

- :mod:`~nmt.data.sources`: corpus loaders (text, TSV, JSON lines, hub, disk) through
  Hugging Face ``datasets``, and the data fingerprint;
- :mod:`~nmt.data.tokenizer`: SentencePiece models and the fixed special ids;
- :mod:`~nmt.data.id_cache`: cleaning and the encoded-id Arrow cache
  (:class:`~nmt.data.id_cache.EncodedSplit`);
- :mod:`~nmt.data.batching`: token-budget batches, ``Corpus``, the resumable update stream;
- :mod:`~nmt.data.subword_sampling`: subword regularisation (each epoch segmented anew);
- :mod:`~nmt.data.prepare`: the prepare stage (tokenizer training, encoded splits, config).

Imports only the shared modules below it.
"""
