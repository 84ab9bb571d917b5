"""LSTM decoder with optional attention, input feeding and scheduled sampling.

Shapes: B batch, T target length, S source length, E embedding size, Hd decoder units,
Ld decoder layers, K = 2H encoder output size, V target vocabulary.

In training with teacher forcing and without input feeding the whole target runs through one
fused ``nn.LSTM`` call; input feeding (the previous attentional state joined to the next input)
or scheduled sampling (teacher-forcing ratio < 1) need the step-by-step loop, which is also
what search uses through :meth:`Decoder.step`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from nmt.data.tokenizer import PAD_ID
from nmt.device import has_onednn_ops
from nmt.errors import ConfigError
from nmt.models.attention import build_attention
from nmt.models.encoder import EncoderOutput, WordDropout
from nmt.models.packed import forget, laid_out, plain_cpu_fp32

#: whether this torch has oneDNN's linear on a packed weight (the ops inductor uses)
PACKED_PRODUCTS = has_onednn_ops("mkldnn._reorder_linear_weight", "mkldnn._linear_pointwise")


@dataclass
class OutputSubset:
    """The part of the output layer a lexical shortlist leaves to search.

    Attributes:
        ids: (M,) sorted target ids; the special ids first, at their own positions.
        weight: (M, Hd) and bias (M,): the output projection's rows of those ids (None on the
            ONNX backend, whose step graph gathers them itself).
    """

    ids: torch.Tensor
    weight: torch.Tensor | None
    bias: torch.Tensor | None


@dataclass
class DecoderState:
    """Everything a decoding step needs; every tensor has the batch (or beam) dimension.

    Attributes:
        h, c: (Ld, B, Hd) LSTM states.
        feed: (B, Hd) previous attentional state (input feeding), else None.
        keys: (B, S, K) encoder outputs, None without attention.
        proj_keys: keys projected once for the attention scorer, None without attention.
        mask: (B, S) True at real source tokens.
        weights: (B, S) attention weights of the last step (for display and copying), or None.
        group: consecutive rows sharing one row of keys / proj_keys / mask / src; after
            :meth:`expand` (beam search) those hold one row per sentence, (B / group, S, ...).
        src: (B, S) source ids, with copy attention (the attention weights are scattered onto
            them); else None. Memory like ``keys``. With a ``subset``, their positions in it.
        src_first: (B, S) int64 with ``src``: each source position's first position holding the
            same id (:func:`first_positions`), found once per sentence rather than at every
            step (padding, whose weight is 0, points to a padding position); None: the mixture
            finds them. Memory like ``keys``.
        subset: a lexical shortlist's output vocabulary (:class:`OutputSubset`), shared by all
            rows; None for the whole vocabulary. With one, tokens in and out of a step are
            positions in ``subset.ids``, not vocabulary ids.
        penalty: (B, M) float, with a subset: 0 at the positions each sentence's own shortlist
            holds and -inf elsewhere (the subset is the union of the batch's), added to its
            logits so that a sentence's output does not depend on its batch; None: every
            position. Memory like ``keys``.
    """

    h: torch.Tensor
    c: torch.Tensor
    feed: torch.Tensor | None
    keys: torch.Tensor | None
    proj_keys: torch.Tensor | None
    mask: torch.Tensor
    weights: torch.Tensor | None = None
    group: int = 1
    src: torch.Tensor | None = None
    subset: OutputSubset | None = None
    src_first: torch.Tensor | None = None
    penalty: torch.Tensor | None = None

    def evolve(self, **changes: object) -> DecoderState:
        """A copy with ``changes`` (field names) applied: :func:`dataclasses.replace` without
        its per-call field inspection, for the once-a-step copies of search."""
        new = object.__new__(DecoderState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def index_select(self, index: torch.Tensor, same_memory: bool = False) -> DecoderState:
        """The state of rows ``index`` (B',) of the batch: for beam search reordering.

        The encoder memory follows at the granularity of groups: when every block of ``group``
        new rows comes from one memory row (beams reordered within their sentence, or finished
        sentences dropped), memory rows are selected once per block, or not at all when they
        are unchanged; otherwise the memory is expanded to one row per new row.
        ``same_memory``: the caller knows that new row ``i`` reads the memory row that old row
        ``i`` read (beams reordered within their sentences, as every step of beam search
        reorders them), so the memory is kept without checking the index (two fewer device
        synchronisations a step).

        When the memory rows change, the memory is cut to the longest source left: beyond it
        every row is padding, which a continuous search (sentences joining while others leave)
        would otherwise keep at the width of the longest sentence it ever held.
        """
        def pick(x: torch.Tensor | None, rows: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
            return None if x is None else x.index_select(dim, rows)

        if not same_memory:
            memory, group = index // self.group, self.group
            blocks = memory.view(-1, group) if memory.numel() % group == 0 else None
            if blocks is not None and bool((blocks == blocks[:, :1]).all()):
                memory = blocks[:, 0]
                same_memory = memory.numel() == self.mask.size(0) and bool(
                    (memory == torch.arange(memory.numel(), device=memory.device)).all())
            else:
                group = 1
        if same_memory:
            return self.evolve(h=pick(self.h, index, 1), c=pick(self.c, index, 1),
                               feed=pick(self.feed, index), weights=pick(self.weights, index))
        mask = pick(self.mask, memory)  # (B'', S)
        width = max(1, int(mask.sum(1).max())) if mask.numel() else mask.size(1)

        def cut(x: torch.Tensor | None, rows: torch.Tensor = memory) -> torch.Tensor | None:
            # (rows, S, ...) -> (rows', width, ...), one copy (picking rows of the narrowed
            # view: keys of 16 sentences, 94 -> 80 positions, 83 against 210 microseconds)
            return None if x is None else pick(x[:, :width], rows)

        return replace(self, h=pick(self.h, index, 1), c=pick(self.c, index, 1),
                       feed=pick(self.feed, index), keys=cut(self.keys),
                       proj_keys=cut(self.proj_keys), mask=mask[:, :width].contiguous(),
                       weights=cut(self.weights, index), group=group, src=cut(self.src),
                       penalty=pick(self.penalty, memory), src_first=cut(self.src_first))

    def concat(self, other: DecoderState) -> DecoderState:
        """This state's rows followed by ``other``'s (continuous batching: sentences joining a
        running search), without the last step's attention weights. Both must share one
        ``group`` (beams per memory row) and have no output subset; the memory of the shorter
        sources is padded (masked out, so a row's steps do not change)."""
        if self.group != other.group:
            raise ValueError(f"cannot join states of {self.group} and {other.group} rows per "
                             "source")
        if self.subset is not None or other.subset is not None:
            raise ValueError("states searched over a lexical shortlist cannot be joined")
        width = max(self.mask.size(1), other.mask.size(1))

        def join(a: torch.Tensor | None, b: torch.Tensor | None, dim: int = 0,
                 fill: float | bool = 0) -> torch.Tensor | None:
            if a is None:
                return None
            if a.dim() > 1 and dim == 0:  # (N, S, ...) memory: pad S to the wider one
                a, b = (x if x.size(1) == width else torch.cat(
                    [x, x.new_full((x.size(0), width - x.size(1), *x.shape[2:]), fill)], 1)
                    for x in (a, b))
            return torch.cat([a, b], dim)

        def first(x: torch.Tensor) -> torch.Tensor:  # (N, S) -> (N, width): padding added
            if x.size(1) == width:                     # here is its own first position
                return x
            extra = torch.arange(x.size(1), width, device=x.device).expand(x.size(0), -1)
            return torch.cat([x, extra], 1)

        return replace(self, h=join(self.h, other.h, 1), c=join(self.c, other.c, 1),
                       feed=torch.cat([self.feed, other.feed]) if self.feed is not None else None,
                       keys=join(self.keys, other.keys), proj_keys=join(self.proj_keys,
                                                                        other.proj_keys),
                       mask=join(self.mask, other.mask, fill=False),
                       weights=None,  # the next step sets them (nothing reads the last)
                       src=join(self.src, other.src, fill=PAD_ID),
                       src_first=None if self.src_first is None or other.src_first is None
                       else torch.cat([first(self.src_first), first(other.src_first)]))

    def expand(self, k: int) -> DecoderState:
        """Each row repeated ``k`` times (beams), the encoder memory shared, not copied."""
        index = torch.arange(self.h.size(1), device=self.h.device).repeat_interleave(k)
        def pick(x: torch.Tensor | None, dim: int = 0) -> torch.Tensor | None:
            return None if x is None else x.index_select(dim, index)

        return replace(self, h=pick(self.h, 1), c=pick(self.c, 1), feed=pick(self.feed),
                       weights=pick(self.weights), group=self.group * k)


class Decoder(nn.Module):
    """Target embedding, ``nn.LSTM``, attention, attentional layer and output projection."""

    def __init__(self, vocab_size: int, embed_size: int, hidden_size: int, num_layers: int,
                 key_size: int, attention: str = "general", input_feeding: bool = False,
                 tie_embeddings: bool = False, dropout: float = 0.0,
                 pad_id: int = PAD_ID, word_dropout: float = 0.0,
                 copy_attention: bool = False) -> None:
        super().__init__()
        self.hidden_size, self.input_feeding = hidden_size, input_feeding
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=pad_id)
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = WordDropout(word_dropout)  # of the previous target tokens
        rnn_input = embed_size + (hidden_size if input_feeding else 0)
        self.rnn = nn.LSTM(rnn_input, hidden_size, num_layers, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0)
        self.attention = build_attention(attention, hidden_size, key_size)
        # attentional state tanh(W [context; h]) (Luong); without attention, h itself
        self.combine = (nn.Linear(key_size + hidden_size, hidden_size, bias=False)
                        if self.attention is not None else None)
        self.output = nn.Linear(hidden_size, vocab_size)
        if copy_attention and self.attention is None:
            raise ConfigError("model.copy_attention copies through the attention weights: it "
                              "needs model.attention other than none")
        # copy attention: p_copy = sigmoid(gate(attentional state)) per target position
        self.copy_gate = nn.Linear(hidden_size, 1) if copy_attention else None
        if tie_embeddings:
            if embed_size != hidden_size:
                raise ConfigError(f"model.tie_embeddings needs embed_size ({embed_size}) equal "
                                  f"to decoder_hidden_size ({hidden_size})")
            self.output.weight = self.embed.weight

    def train(self, mode: bool = True) -> Decoder:
        """``nn.Module.train`` (``eval()`` calls it too), forgetting the packed output weight:
        training changes the weight, and a fused optimizer does so without its version."""
        forget(self.output.weight)
        return super().train(mode)

    def init_state(self, enc: EncoderOutput, h0: torch.Tensor, c0: torch.Tensor) -> DecoderState:
        """The state before the first step, from bridged (h0, c0) (Ld, B, Hd)."""
        feed = h0.new_zeros(h0.size(1), self.hidden_size) if self.input_feeding else None
        if self.attention is None:
            return DecoderState(h0, c0, feed, None, None, enc.mask)
        src = enc.src if self.copy_gate is not None else None
        return DecoderState(h0, c0, feed, enc.outputs, self.attention.project_keys(enc.outputs),
                            enc.mask, src=src,
                            src_first=None if src is None else first_positions(src))

    def _attend(self, out: torch.Tensor,
                state: DecoderState) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attentional states (B, T, Hd) and weights (B, T, S) for LSTM outputs (B, T, Hd)."""
        if self.attention is None:
            return out, None
        context, weights = self.attention(out, state.keys, state.proj_keys, state.mask)
        return torch.tanh(self.combine(torch.cat([context, out], dim=-1))), weights

    def forward(self, tgt_in: torch.Tensor, state: DecoderState,
                teacher_forcing_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and attention weights (B, T, S) for decoder inputs (B, T).

        With copy attention the first are the mixture's log-probabilities (cross-entropy,
        log-softmax and argmax treat them as logits of the same distribution).
        """
        features, weights = self.features(tgt_in, state, teacher_forcing_ratio)
        logits = self.output(features)
        if self.copy_gate is None:
            return logits, weights
        batch, steps, vocab = logits.shape  # a sentence's T steps share its source row
        mixed = copy_log_probs(logits.reshape(-1, vocab), self.copy_gate(features).reshape(-1, 1),
                               weights.reshape(batch * steps, -1), state.src, state.src_first)
        return mixed.view(batch, steps, vocab), weights

    def features(self, tgt_in: torch.Tensor, state: DecoderState,
                 teacher_forcing_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inputs of the output projection (B, T, Hd), dropout applied, and weights (B, T, S).

        ``tgt_in`` is BOS + gold[:-1]. With ``teacher_forcing_ratio`` < 1 each sentence takes,
        at each step after the first, the gold token with that probability and otherwise the
        model's own previous prediction (scheduled sampling). The trainer applies the output
        projection itself, fused with the loss (:mod:`nmt.training.loss`).
        """
        if not self.input_feeding and teacher_forcing_ratio >= 1.0:
            x = self.dropout(self.word_dropout(self.embed(tgt_in)))  # (B, T, E)
            out, _ = self.rnn(x, (state.h, state.c))  # (B, T, Hd): one fused call
            att, weights = self._attend(out, state)
            return self.dropout(att), weights
        features, weights = [], []
        tokens = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            if t > 0:
                tokens = tgt_in[:, t]
                if teacher_forcing_ratio < 1.0:
                    draw = torch.rand(tokens.shape, device=tokens.device)
                    use_gold = draw < teacher_forcing_ratio
                    with torch.no_grad():
                        predicted = self.output(features[-1]).argmax(-1)
                    tokens = torch.where(use_gold, tokens, predicted)
            att, state = self._step_features(tokens, state)
            features.append(self.dropout(att))
            weights.append(state.weights)
        stacked = torch.stack(weights, 1) if weights[0] is not None else None
        return torch.stack(features, 1), stacked

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One step: logits (B, V) for previous tokens (B,), and the next state."""
        att, state = self._step_features(tokens, state)
        return self._output_logits(self.dropout(att)), state

    def _output_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer on one step's rows x (B, Hd): logits (B, V).

        At inference on a CPU in fp32 the product runs on the weight packed once for oneDNN:
        ``F.linear`` packs the 8,000 x 256 weight at every call, which costs more than the
        product when a search holds few rows (on a 2-core AMD EPYC, one thread: 5 rows 1,841
        against 659 microseconds, 160 rows 10.6 against 9.1 ms; two threads 1.2-3.3x
        faster from 5 to 2,000 rows; ``docs/translating.md``). The same product up to float
        rounding. Elsewhere (training, autocast, int8, an ONNX export, a GPU) ``self.output``.
        """
        weight = self.output.weight
        if (self.training or not PACKED_PRODUCTS or type(self.output) is not nn.Linear
                or weight.dtype != torch.float32 or torch.is_grad_enabled()
                or not plain_cpu_fp32(x)):
            return self.output(x)
        packed = laid_out((weight,),
                          lambda: torch.ops.mkldnn._reorder_linear_weight(weight.detach()))
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.output.bias, "none", [], "")

    def step_log_probs(self, tokens: torch.Tensor,
                       state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One step: log-probabilities (B, V) float32 of the next token, and the next state.

        With copy attention they are those of the mixture :func:`copy_log_probs` makes. With a
        shortlist (``state.subset``) they are (B, M), normalised over its M pieces, and
        ``tokens`` are positions in it.
        """
        att, state = self._step_features(tokens, state)
        if state.subset is None:
            logits = self._output_logits(self.dropout(att))  # (B, V)
        else:  # (B, M): the shortlist's rows of the output layer only
            logits = F.linear(self.dropout(att), state.subset.weight, state.subset.bias)
            if state.penalty is not None:  # each sentence's own shortlist: (N, M) memory rows
                rows, size = logits.shape  # an additive mask broadcast over a sentence's beams
                # (ONNX Runtime runs a broadcast Add several times faster than a broadcast Where)
                logits = (logits.view(state.penalty.size(0), -1, size)
                          + state.penalty[:, None, :]).view(rows, size)
        if self.copy_gate is None:
            return torch.log_softmax(logits.float(), dim=-1), state
        return copy_log_probs(logits, self.copy_gate(att), state.weights, state.src,
                              state.src_first), state

    def restrict(self, state: DecoderState, ids: torch.Tensor,
                 allowed: torch.Tensor | None = None) -> DecoderState:
        """The state with its output vocabulary cut to ``ids`` (M,) sorted target ids that
        begin with the special ids (a lexical shortlist), and each sentence's rows to the
        positions ``allowed`` (N, M) bool marks for it (None: all). With copy attention the
        source ids are mapped to their positions among ``ids``, so each must be one of them.
        A dynamically quantised (int8) output layer is dequantised for the rows kept."""
        weight, bias = self.output.weight, self.output.bias
        if callable(weight):  # torch.ao's dynamic int8 Linear: weight() and bias() methods
            weight, bias = weight().dequantize(), bias()
        ids = ids.to(weight.device)
        subset = OutputSubset(ids, weight[ids], None if bias is None else bias[ids])
        src = state.src
        if src is not None:
            src = map_to_subset(ids, src)
        return replace(state, subset=subset, src=src, penalty=mask_penalty(allowed, ids.device))

    def _step_features(self, tokens: torch.Tensor,
                       state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One step: attentional state (B, Hd) for previous tokens (B,), and the next state."""
        if state.subset is not None:  # positions in the shortlist -> vocabulary ids
            tokens = state.subset.ids[tokens]
        x = self.dropout(self.word_dropout(self.embed(tokens)[:, None, :]))  # (B, 1, E)
        if self.input_feeding:
            x = torch.cat([x, state.feed[:, None, :].to(x.dtype)], dim=-1)  # (B, 1, E + Hd)
        out, h, c = self._rnn_step(x, state.h, state.c)  # out: (B, 1, Hd)
        att, weights = self._attend(out, state)  # (B, 1, Hd), (B, 1, S)
        att = att.squeeze(1)
        new = state.evolve(h=h, c=c, feed=att if self.input_feeding else None,
                           weights=None if weights is None else weights.squeeze(1))
        return att, new

    def _rnn_step(self, x: torch.Tensor, h: torch.Tensor,
                  c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One LSTM step: x (B, 1, In), h and c (Ld, B, Hd) -> out (B, 1, Hd), h, c.

        In fp32 each layer is one ``torch.lstm_cell`` on ``self.rnn``'s weights: for a single
        step ``nn.LSTM`` costs several times as much on a CPU (668 against 100 microseconds at 5
        rows, 16 against 13 ms at 2,000; ``docs/benchmarks.md``). ``nn.LSTM`` itself runs
        elsewhere: under autocast (its bf16 LSTM), in an ONNX export (one LSTM node), int8
        (torch.ao's dynamic LSTM) and off the CPU (not measured).
        """
        if type(self.rnn) is not nn.LSTM or not plain_cpu_fp32(x):
            out, (h, c) = self.rnn(x, (h, c))
            return out, h, c
        inp, hs, cs = x[:, 0], [], []
        # per layer (weight_ih, weight_hh, bias_ih, bias_hh), as lstm_cell takes them
        for layer, weights in enumerate(self.rnn.all_weights):
            if layer:  # nn.LSTM's dropout between layers
                inp = F.dropout(inp, self.rnn.dropout, self.training)
            h_l, c_l = torch.lstm_cell(inp, (h[layer], c[layer]), *weights)
            hs.append(h_l)
            cs.append(c_l)
            inp = h_l
        return inp[:, None], torch.stack(hs), torch.stack(cs)


def mask_penalty(allowed: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """(N, M) float32: 0 where ``allowed`` (N, M) bool, -inf elsewhere (None stays None)."""
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, device=device).masked_fill(~allowed.to(device),
                                                                 float("-inf"))


def map_to_subset(ids: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Positions of ``tokens`` (any shape) in the sorted ``ids`` (M,); each must be there."""
    positions = torch.searchsorted(ids, tokens)
    if not bool((ids[positions.clamp(max=ids.numel() - 1)] == tokens).all()):
        raise ValueError("a source id is not in the shortlist: copy attention needs the "
                         "source's own ids in it")
    return positions


def first_positions(src: torch.Tensor) -> torch.Tensor:
    """(N, S) int64: for each position of source ids ``src`` (N, S), the first position of its
    row holding the same id (itself for a word's first occurrence; padding points to the first
    padding position)."""
    same = src[:, :, None] == src[:, None, :]  # (N, S, S)
    return same.to(torch.uint8).argmax(-1)  # argmax: the first of equal maxima


def copy_log_probs(logits: torch.Tensor, gate: torch.Tensor, weights: torch.Tensor,
                   src: torch.Tensor, src_first: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probabilities (N, V) float32 of the pointer-generator mixture (See et al. 2017).

    ``p(w) = (1 - p_copy) softmax(logits)[w] + p_copy sum_{s: src_s = w} weights_s``, with
    ``p_copy = sigmoid(gate)``. Args: logits (R, V), gate (R, 1), attention weights (R, S)
    (zero at padding), source ids (N, S) where N divides R: consecutive groups of R / N rows
    (a sentence's beams, or its target steps) share one source row, as they share the encoder
    memory; ``src_first`` (N, S), :func:`first_positions` of ``src`` (found here when None).

    Only the S columns of the source's words mix in a copy term; every other word keeps the
    generate term ``log(1 - p_copy) + log_softmax(logits)`` as it is (as in the training loss,
    :func:`nmt.training.loss.copy_cross_entropy`). So the full-vocabulary work is one
    log-softmax and one scatter, and the mixture is computed on (R, S) only: beam search with
    copy attention costs little more than without. A word repeated in the source sums the
    weights of its positions at its first position, read back at each (a scatter-add and a
    gather on (R, S); the (N, S, S) comparison of ids behind ``src_first`` is made once per
    sentence, not at every step). The copy term is floored at 1e-30 (padding has weight 0).
    """
    logits, gate, weights = logits.float(), gate.float(), weights.float()
    rows, memory_rows = weights.size(0), src.size(0)
    if src_first is None:
        src_first = first_positions(src)
    if rows != memory_rows:  # (N, S) -> (R, S), each source row once per row of its group
        group = rows // memory_rows
        src = src[:, None, :].expand(-1, group, -1).reshape(rows, src.size(1))
        src_first = src_first[:, None, :].expand(-1, group, -1).reshape(rows, src.size(1))
    # each source position's word's total attention (repeated words add up), (R, S)
    copied = torch.zeros_like(weights).scatter_add_(1, src_first, weights).gather(1, src_first)
    generate = torch.log_softmax(logits, dim=-1)  # (R, V)
    # in search (no autograd, no ONNX export traced) in place: the (R, V) passes are most of
    # the mixture's time (80 rows: 1.43 -> 1.06 ms on a 2-core AMD EPYC, docs/serving.md)
    inplace = not generate.requires_grad and not torch.onnx.is_in_onnx_export()
    generate = generate.add_(F.logsigmoid(-gate)) if inplace else generate + F.logsigmoid(-gate)
    copy = F.logsigmoid(gate) + copied.clamp_min(1e-30).log()  # (R, S)
    at_src = generate.gather(1, src)  # (R, S)
    top = torch.maximum(at_src, copy)  # log(e^a + e^b), as ONNX (opset 17) can run it
    mixed = top + torch.log(torch.exp(at_src - top) + torch.exp(copy - top))
    # a word repeated in the source gets the same value from each of its positions; for the
    # gradient only its first position counts (scatter's backward would hand each its own)
    if mixed.requires_grad:
        first = src_first == torch.arange(src.size(1), device=src.device)  # (R, S)
        mixed = torch.where(first, mixed, mixed.detach())
    return generate.scatter_(1, src, mixed) if inplace else generate.scatter(1, src, mixed)
