"""Bidirectional LSTM encoder and the bridge from its final (h, c) to the decoder's start.

Shapes: B batch, S source length, E embedding size, H units per direction, L encoder layers,
Hd decoder units, Ld decoder layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.errors import ConfigError
from nmt.tokenizer import PAD_ID


@dataclass
class EncoderOutput:
    """What the encoder hands to the bridge, the attention and the search.

    Attributes:
        outputs: (B, S, 2H) top-layer outputs, forward and backward joined; zero at padding.
        h: (2L, B, H) final hidden states, index ``2 * layer + direction`` (0 forward).
        c: (2L, B, H) final cell states, same layout.
        mask: (B, S) True at real tokens, False at padding.
        lengths: (B,) source lengths (on the CPU).
    """

    outputs: torch.Tensor
    h: torch.Tensor
    c: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor


class Encoder(nn.Module):
    """Embedding + ``nn.LSTM(bidirectional=True)`` over packed sequences.

    Packing makes each direction's final state belong to the sentence's real last token: the
    result for a sentence does not depend on the padding of its batch.
    """

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, pad_id: int = PAD_ID) -> None:
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True,
                           bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)

    @property
    def output_size(self) -> int:
        """Size of an output vector: 2H."""
        return 2 * self.hidden_size

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Encode ``src`` (B, S) token ids with true ``lengths`` (B,)."""
        lengths = lengths.cpu()
        x = self.dropout(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_out, (h, c) = self.rnn(packed)  # h, c: (2L, B, H), in the original batch order
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=src.size(1))
        positions = torch.arange(src.size(1), device=src.device)
        mask = positions[None, :] < lengths.to(src.device)[:, None]  # (B, S)
        return EncoderOutput(self.dropout(outputs), h, c, mask, lengths)

    @staticmethod
    def join_directions(state: torch.Tensor) -> torch.Tensor:
        """(2L, B, H) -> (L, B, 2H): each layer's forward and backward states side by side."""
        two_l, batch, hidden = state.shape
        return state.view(two_l // 2, 2, batch, hidden).transpose(1, 2).reshape(
            two_l // 2, batch, 2 * hidden)

    def sentence_vectors(self, enc: EncoderOutput) -> torch.Tensor:
        """(B, 2H): the top layer's final forward and backward hidden states joined."""
        return self.join_directions(enc.h)[-1]


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
