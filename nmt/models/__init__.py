"""The models room: the network, its weights and the search over it.

- :mod:`~nmt.models.attention`, :mod:`~nmt.models.encoder`, :mod:`~nmt.models.decoder`,
  :mod:`~nmt.models.seq2seq`: the BiLSTM encoder, bridge, attention and LSTM decoder, put
  together as :class:`~nmt.models.seq2seq.Seq2Seq` (and
  :class:`~nmt.models.seq2seq.Ensemble`) with the incremental API (``encode``,
  ``init_state``, ``step``, ``reorder``, ``expand``);
- :mod:`~nmt.models.search`: greedy and beam search, the one decoding path;
- :mod:`~nmt.models.weights`: the weights of a model directory (load, save, average).

Imports the data room (the special ids, batching) and the shared modules.
"""
