"""The sequence-to-sequence model: encoder, bridge, decoder, and the incremental search API.

``forward`` trains with teacher forcing; search uses only ``encode``, ``init_state``,
``expand``, ``step``, ``reorder``, ``concat`` (continuous batching) and ``restrict`` (a lexical
shortlist) and never reaches into
the modules, so an :class:`Ensemble` of models decodes through the same search code.
:func:`build_model` turns a :class:`~nmt.config.ModelConfig` into a model.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from nmt.config import ModelConfig
from nmt.models.decoder import Decoder, DecoderState
from nmt.models.encoder import Bridge, Encoder, EncoderOutput

log = logging.getLogger(__name__)


class Seq2Seq(nn.Module):
    """BiLSTM encoder -> bridge (final h and c) -> attentional LSTM decoder."""

    def __init__(self, encoder: Encoder, bridge: Bridge, decoder: Decoder) -> None:
        super().__init__()
        self.encoder, self.bridge, self.decoder = encoder, bridge, decoder

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
                teacher_forcing_ratio: float = 1.0) -> torch.Tensor:
        """Logits (B, T, V) for source (B, S) with lengths (B,) and decoder inputs (B, T)."""
        state = self.init_state(self.encode(src, src_lengths))
        logits, _ = self.decoder(tgt_in, state, teacher_forcing_ratio)
        return logits

    def features(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
                 teacher_forcing_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs of the output projection (B, T, Hd), so that ``forward`` is
        ``output_layer(features)``, and the attention weights (B, T, S) (None without
        attention), which copy attention mixes in (:func:`nmt.training.loss.copy_cross_entropy`)."""
        state = self.init_state(self.encode(src, src_lengths))
        return self.decoder.features(tgt_in, state, teacher_forcing_ratio)

    @property
    def copy_gate(self) -> nn.Linear | None:
        """Copy attention's gate (Hd -> 1), None when copy attention is off."""
        return self.decoder.copy_gate

    @property
    def output_layer(self) -> nn.Linear:
        """The vocabulary projection (its weight may be tied to the target embedding)."""
        return self.decoder.output

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """Encoder outputs (B, S, 2H), final states (2L, B, H) and mask (B, S)."""
        return self.encoder(src, src_lengths)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """The decoder state before the first step, started from the encoder's final (h, c)."""
        h0, c0 = self.bridge(enc.h, enc.c)
        return self.decoder.init_state(enc, h0, c0)

    def step(self, prev_tokens: torch.Tensor,
             state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Log-probabilities (B, V) in float32 of the next token given previous tokens (B,)
        (with copy attention: of the generate / copy mixture)."""
        return self.decoder.step_log_probs(prev_tokens, state)

    def restrict(self, state: DecoderState, ids: torch.Tensor,
                 allowed: torch.Tensor | None = None) -> DecoderState:
        """The state with the output vocabulary cut to a lexical shortlist's ``ids`` (M,), and
        each sentence to the positions ``allowed`` (B, M) marks (None: all): from then on
        ``step`` takes and gives positions in ``ids`` (log-probabilities (B, M))."""
        return self.decoder.restrict(state, ids, allowed)

    @staticmethod
    def reorder(state: DecoderState, index: torch.Tensor,
                same_memory: bool = False) -> DecoderState:
        """Select (and repeat) rows of the state: ``index`` (B',) into the batch dimension;
        ``same_memory``: each new row reads its old row's encoder memory (beams reordered
        within their sentences; see :meth:`DecoderState.index_select`)."""
        return state.index_select(index, same_memory)

    @staticmethod
    def expand(state: DecoderState, k: int) -> DecoderState:
        """Repeat each row ``k`` times for beam search, sharing the encoder memory."""
        return state.expand(k)

    @staticmethod
    def concat(state: DecoderState, other: DecoderState) -> DecoderState:
        """The rows of ``state`` then those of ``other`` (sentences joining a running search)."""
        return state.concat(other)

    def encode_sentences(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """(B, 2H) fixed-length sentence vectors: top-layer final forward and backward h."""
        return self.encoder.sentence_vectors(self.encode(src, src_lengths))


class Ensemble(nn.Module):
    """Several models sharing vocabularies, searched as one: each step's log-probabilities are
    the average of the models' log-probabilities (B, V). States are lists, one per model."""

    def __init__(self, models: list[Seq2Seq]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> list[EncoderOutput]:
        """Each model's encoding of the source (B, S)."""
        return [m.encode(src, src_lengths) for m in self.models]

    def init_state(self, encs: list[EncoderOutput]) -> list[DecoderState]:
        """Each model's initial decoder state."""
        return [m.init_state(e) for m, e in zip(self.models, encs, strict=True)]

    def step(self, prev_tokens: torch.Tensor,
             states: list[DecoderState]) -> tuple[torch.Tensor, list[DecoderState]]:
        """Mean of the models' log-probabilities (B, V) for the next token, and new states."""
        outputs = [m.step(prev_tokens, s) for m, s in zip(self.models, states, strict=True)]
        log_probs = torch.stack([lp for lp, _ in outputs]).mean(0)
        return log_probs, [s for _, s in outputs]

    def restrict(self, states: list[DecoderState], ids: torch.Tensor,
                 allowed: torch.Tensor | None = None) -> list[DecoderState]:
        """Every model's state with the output vocabulary cut to ``ids`` (M,) (and each
        sentence to ``allowed``)."""
        return [m.restrict(s, ids, allowed) for m, s in zip(self.models, states, strict=True)]

    @staticmethod
    def reorder(states: list[DecoderState], index: torch.Tensor,
                same_memory: bool = False) -> list[DecoderState]:
        """Select (and repeat) rows of every model's state."""
        return [s.index_select(index, same_memory) for s in states]

    @staticmethod
    def expand(states: list[DecoderState], k: int) -> list[DecoderState]:
        """Repeat each row ``k`` times in every model's state."""
        return [s.expand(k) for s in states]

    @staticmethod
    def concat(states: list[DecoderState], others: list[DecoderState]) -> list[DecoderState]:
        """Every model's state joined with its rows of ``others``."""
        return [s.concat(o) for s, o in zip(states, others, strict=True)]


def build_model(cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    """A model from its config and vocabulary sizes; logs the parameter count."""
    encoder = Encoder(src_vocab, cfg.embed_size, cfg.hidden_size, cfg.encoder_layers, cfg.dropout,
                      word_dropout=cfg.word_dropout)
    bridge = Bridge(cfg.bridge, cfg.encoder_layers, cfg.decoder_layers, encoder.output_size,
                    cfg.decoder_hidden_size)
    decoder = Decoder(tgt_vocab, cfg.embed_size, cfg.decoder_hidden_size, cfg.decoder_layers,
                      encoder.output_size, cfg.attention, cfg.input_feeding, cfg.tie_embeddings,
                      cfg.dropout, word_dropout=cfg.word_dropout,
                      copy_attention=cfg.copy_attention)
    model = Seq2Seq(encoder, bridge, decoder)
    initialize(model, cfg.init)
    log.info("model: %s parameters (%s attention, %s bridge, input feeding %s%s)",
             f"{count_parameters(model):,}", cfg.attention, cfg.bridge,
             "on" if cfg.input_feeding else "off", ", copy attention" if cfg.copy_attention
             else "")
    return model


def initialize(model: nn.Module, scheme: str) -> None:
    """Initialise ``model``'s weights in place by ``scheme`` (``model.init``).

    ``torch``: PyTorch's own (embeddings N(0, 1), everything else uniform in +-1/sqrt(fan)).
    ``scaled``: embeddings N(0, 1/embed_size), so that a tied output layer starts with logits
    of unit scale rather than sqrt(embed_size) times that (the padding row stays zero), and
    every LSTM's forget-gate bias at 1 (Jozefowicz et al. 2015), so the cell keeps its
    memory from the first update; the rest as PyTorch's.
    """
    if scheme == "torch":
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, module.embedding_dim ** -0.5)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LSTM):
                size = module.hidden_size  # gates are stacked (input, forget, cell, output)
                for name, param in module.named_parameters():
                    if name.startswith("bias_ih"):
                        param[size:2 * size].fill_(1.0)
                    elif name.startswith("bias_hh"):
                        param[size:2 * size].zero_()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
