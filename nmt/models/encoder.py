"""Bidirectional LSTM encoder and the bridge from its final (h, c) to the decoder's start.

Shapes: B batch, S source length, E embedding size, H units per direction, L encoder layers,
Hd decoder units, Ld decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.data.tokenizer import PAD_ID
from nmt.device import has_onednn_ops
from nmt.errors import ConfigError
from nmt.models.packed import forget, laid_out, plain_cpu_fp32

#: whether this torch has oneDNN's LSTM layer on weights laid out once (the ops inductor uses
#: when it freezes an LSTM)
PACKED_RNN = has_onednn_ops("mkldnn._reorder_mkldnn_rnn_layer_weight", "aten.mkldnn_rnn_layer")

def _lstm(rnn: nn.LSTM, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None
          ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``rnn(x, state)`` for one layer and direction, x (B, T, I) batch first, state (1, B, H)
    each or None: at inference on a CPU in fp32 through oneDNN's LSTM layer on the weights laid
    out once, which ``nn.LSTM`` lays out again at every call (a sixth to a half of a short
    sentence's encoding). The same oneDNN computation, bit for bit; elsewhere ``rnn`` itself."""
    if (not PACKED_RNN or type(rnn) is not nn.LSTM or rnn.training or torch.is_grad_enabled()
            or not plain_cpu_fp32(x) or not rnn.bias or rnn.num_layers != 1
            or rnn.bidirectional or not torch._C._get_mkldnn_enabled()):
        return rnn(x, state)
    w_ih, w_hh, b_ih, b_hh = rnn.all_weights[0]
    hidden, batch = rnn.hidden_size, x.size(0)
    # oneDNN may want another weight layout for a batch of one (a sentence joining a running
    # search): on a 2-core AMD EPYC (AVX2) blocks of 32 gates instead of 16, so with one layout
    # for all it reordered both weights at every such call (60-90 microseconds each,
    # docs/serving.md); a batch of one has a layout of its own
    single = batch == 1
    packed = laid_out((w_ih, w_hh), lambda: torch.ops.mkldnn._reorder_mkldnn_rnn_layer_weight(
        w_ih.detach(), w_hh.detach(), hidden, False, True, True,
        list(x.shape) if single else None), variant=single)
    if state is None:
        h0 = c0 = x.new_zeros(1, batch, hidden)
    else:
        h0, c0 = (s.contiguous() for s in state)
    out, h, c, _ = torch.ops.aten.mkldnn_rnn_layer(
        x.transpose(0, 1).contiguous(), packed[0], packed[1], b_ih, b_hh, h0, c0, False, [],
        2, hidden, 1, True, False, True, False)  # 2: oneDNN's LSTM; input time first
    return out.transpose(0, 1), (h, c)


@dataclass
class EncoderOutput:
    """What the encoder hands to the bridge, the attention and the search.

    Attributes:
        outputs: (B, S, 2H) top-layer outputs, forward and backward joined; zero at padding.
        h: (2L, B, H) final hidden states, index ``2 * layer + direction`` (0 forward).
        c: (2L, B, H) final cell states, same layout.
        mask: (B, S) True at real tokens, False at padding.
        lengths: (B,) source lengths (on the CPU).
        src: (B, S) the source ids themselves (copy attention scatters onto them).
    """

    outputs: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    src: torch.Tensor | None = None


class WordDropout(nn.Module):
    """Drop whole tokens in training: embeddings (B, T, E) of a token zeroed with probability
    ``p``, the kept ones scaled by 1 / (1 - p); the identity in eval mode or with p = 0 (then
    no random number is drawn, so runs without it are unchanged)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, E) -> the same shape, whole rows x[b, t] dropped."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[:-1], device=x.device) >= self.p  # (B, T)
        return x * (keep[..., None].to(x.dtype) / (1.0 - self.p))


class Encoder(nn.Module):
    """Embedding + a bidirectional LSTM, one ``nn.LSTM`` per layer and direction.

    Each direction runs over the real tokens of each sentence only, so its final state belongs
    to the sentence's real last token and nothing depends on the padding of the batch:

    - on CUDA the batch is packed (``pack_padded_sequence``, cuDNN's fast path); so is it
      while the encoder is traced (``torch.onnx.export`` in :mod:`nmt.onnx.export`), where packing
      becomes the ONNX LSTM's ``sequence_lens`` and every shape stays dynamic;
    - on the CPU, packed sequences leave oneDNN for a slow step-by-step kernel (4x slower
      here), so the batch is sorted by length and run in length segments instead: positions
      ``[0, l1)`` for every sentence in one oneDNN call, then ``[l1, l2)`` for the sentences
      longer than ``l1``, and so on, each segment starting from the previous one's state. A
      sentence's final (h, c) is the state after the segment where it ends.

    The backward direction is the forward computation on each sentence reversed within its
    length. Padding positions of the outputs are zero.
    """

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, pad_id: int = PAD_ID, word_dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = WordDropout(word_dropout)
        self.layers = nn.ModuleList(
            nn.ModuleList(nn.LSTM(embed_size if i == 0 else 2 * hidden_size, hidden_size,
                                  batch_first=True) for _direction in range(2))
            for i in range(num_layers))

    def train(self, mode: bool = True) -> Encoder:
        """``nn.Module.train`` (``eval()`` calls it too), forgetting the LSTM weights laid out
        for inference (:func:`_lstm`): training changes them, and a fused optimizer does so
        without their version."""
        # int8 (torch.ao's dynamic LSTM) has no such weight
        forget(*(getattr(rnn, "weight_ih_l0", None) for layer in self.layers for rnn in layer))
        return super().train(mode)

    @property
    def output_size(self) -> int:
        """Size of an output vector: 2H."""
        return 2 * self.hidden_size

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Encode ``src`` (B, S) token ids with true ``lengths`` (B,)."""
        lengths = lengths.cpu()
        if not (src.is_cuda or torch.jit.is_tracing()) and bool((lengths == src.size(1)).all()):
            return self._unpadded(src, lengths)
        # work in length-descending order, so the sentences still running are a prefix
        if torch.jit.is_tracing():  # the ONNX exporter: no stable sort there, ties do not matter
            order = torch.argsort(lengths, descending=True)
        else:
            order = torch.argsort(lengths, descending=True, stable=True)
        unorder = torch.argsort(order).to(src.device)
        sorted_lengths = lengths[order]
        x = self.embed(src.index_select(0, order.to(src.device)))  # (B, S, E)
        x = self.dropout(self.word_dropout(x))
        reverse = _reverse_index(sorted_lengths, src.size(1)).to(src.device)  # (B, S)
        finals_h, finals_c = [], []
        for i, (forward_rnn, backward_rnn) in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)  # between layers, as nn.LSTM(dropout=...) does
            out_f, h_f, c_f = self._run(forward_rnn, x, sorted_lengths)
            out_b, h_b, c_b = self._run(backward_rnn, _gather_time(x, reverse), sorted_lengths)
            x = torch.cat([out_f, _gather_time(out_b, reverse)], dim=-1)  # (B, S, 2H)
            finals_h += [h_f, h_b]
            finals_c += [c_f, c_b]
        h = torch.stack(finals_h).index_select(1, unorder)  # (2L, B, H), index 2*layer + dir
        c = torch.stack(finals_c).index_select(1, unorder)
        outputs = x.index_select(0, unorder)
        positions = torch.arange(src.size(1), device=src.device)
        mask = positions[None, :] < lengths.to(src.device)[:, None]  # (B, S)
        return EncoderOutput(self.dropout(outputs), h, c, mask, lengths, src)

    def _unpadded(self, src: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """:meth:`forward` on the CPU for a batch without padding (every sentence S long; a
        sentence alone, as a server's continuous search admits most): the same computation
        without sorting, segments and gathers, the backward direction on the batch flipped in
        time (a sentence alone on a 2-core AMD EPYC, one thread: 12 pieces 2.3 -> 1.9 ms, 30
        pieces 4.3 -> 3.2 ms)."""
        x = self.dropout(self.word_dropout(self.embed(src)))  # (B, S, E)
        finals_h, finals_c = [], []
        for i, (forward_rnn, backward_rnn) in enumerate(self.layers):
            if i > 0:
                x = self.dropout(x)
            out_f, (h_f, c_f) = _lstm(forward_rnn, x, None)
            out_b, (h_b, c_b) = _lstm(backward_rnn, x.flip(1), None)
            x = torch.cat([out_f, out_b.flip(1)], dim=-1)  # (B, S, 2H)
            finals_h += [h_f[0], h_b[0]]
            finals_c += [c_f[0], c_b[0]]
        mask = torch.ones(src.shape, dtype=torch.bool, device=src.device)
        return EncoderOutput(self.dropout(x), torch.stack(finals_h), torch.stack(finals_c), mask,
                             lengths, src)

    @staticmethod
    def _run(rnn: nn.LSTM, x: torch.Tensor,
             lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One direction over length-sorted x (B, S, I): outputs (B, S, H), final h, c (B, H)."""
        if x.is_cuda or torch.jit.is_tracing():
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True)
            out, (h, c) = rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
            return out, h[0], c[0]
        batch, total = x.size(0), x.size(1)
        lens = lengths.tolist()  # descending
        pieces, finals_h, finals_c = [], [], []
        state, start = None, 0
        for end in sorted(set(lens)):
            running = sum(1 for n in lens if n >= end)  # a prefix of the batch
            out, (h, c) = _lstm(rnn, x[:running, start:end], state)  # (running, end - start, H)
            if running < batch:
                out = torch.cat([out, out.new_zeros(batch - running, *out.shape[1:])])
            pieces.append(out)
            longer = sum(1 for n in lens if n > end)
            finals_h.append(h[0, longer:running])  # the sentences that end here
            finals_c.append(c[0, longer:running])
            state, start = (h[:, :longer], c[:, :longer]), end
        if start < total:
            pieces.append(x.new_zeros(batch, total - start, pieces[0].size(-1)))
        # segments ended shortest first, i.e. from the bottom rows of the sorted batch up
        return (torch.cat(pieces, 1), torch.cat(finals_h[::-1]), torch.cat(finals_c[::-1]))

    @staticmethod
    def join_directions(state: torch.Tensor) -> torch.Tensor:
        """(2L, B, H) -> (L, B, 2H): each layer's forward and backward states side by side."""
        two_l, batch, hidden = state.shape
        return state.view(two_l // 2, 2, batch, hidden).transpose(1, 2).reshape(
            two_l // 2, batch, 2 * hidden)

    def sentence_vectors(self, enc: EncoderOutput) -> torch.Tensor:
        """(B, 2H): the top layer's final forward and backward hidden states joined."""
        return self.join_directions(enc.h)[-1]


def _reverse_index(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(B, S) time index reversing each row within its length; padding maps to itself."""
    positions = torch.arange(total)[None, :]
    lengths = lengths[:, None]
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def _gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, S, D) reordered along time by index (B, S)."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.size(-1)))


class Bridge(nn.Module):
    """Maps the encoder's final (h, c) to the decoder's initial (h0, c0), each (Ld, B, Hd).

    Per encoder layer, forward and backward states are joined to (L, B, 2H); then ``linear``
    applies Linear + tanh (one projection for h, one for c), while ``none`` passes them through
    (requires 2H == Hd).

    Depth rule when Ld != L: the layers are aligned at the top. With Ld < L the decoder takes
    the top Ld encoder layers; with Ld > L, decoder layer j takes encoder layer min(j, L - 1),
    so the extra upper decoder layers all start from the top encoder layer.
    """

    def __init__(self, kind: str, encoder_layers: int, decoder_layers: int, enc_size: int,
                 dec_size: int) -> None:
        super().__init__()
        if kind == "none" and enc_size != dec_size:
            raise ConfigError(f"model.bridge 'none' needs decoder_hidden_size ({dec_size}) "
                              f"equal to 2 x hidden_size ({enc_size}); use bridge 'linear'")
        self.kind = kind
        if decoder_layers <= encoder_layers:
            layers = list(range(encoder_layers - decoder_layers, encoder_layers))
        else:
            layers = [min(j, encoder_layers - 1) for j in range(decoder_layers)]
        self.register_buffer("layers", torch.tensor(layers), persistent=False)
        if kind == "linear":
            self.h_proj = nn.Linear(enc_size, dec_size)
            self.c_proj = nn.Linear(enc_size, dec_size)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(2L, B, H) final states -> (Ld, B, Hd) initial decoder states."""
        h = Encoder.join_directions(h).index_select(0, self.layers)  # (Ld, B, 2H)
        c = Encoder.join_directions(c).index_select(0, self.layers)
        if self.kind == "linear":
            h, c = torch.tanh(self.h_proj(h)), torch.tanh(self.c_proj(c))
        return h.contiguous(), c.contiguous()
