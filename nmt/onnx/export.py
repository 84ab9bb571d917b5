"""``nmt export``: a model directory as ONNX graphs for ONNX Runtime, with a manifest.

An export directory (file names in :mod:`nmt.layout`) holds:

- ``encoder.onnx``: the encoder, the bridge and the attention's key projection. Inputs
  ``src`` (B, S) int64 source ids (pieces + EOS, padded with 0) and ``src_lengths`` (B,) int64;
  outputs ``h0``, ``c0`` (Ld, B, Hd), the decoder's initial state, ``mask`` (B, S) bool,
  ``keys`` (B, S, 2H), the top layer's outputs, and with ``general`` or ``mlp`` attention
  ``proj_keys`` (B, S, A).
- ``decoder_step.onnx``: one decoder step. Inputs ``tokens`` (R,) int64, the previous tokens
  (BOS first), ``h``, ``c`` (Ld, R, Hd), with input feeding ``feed`` (R, Hd), and with attention
  ``keys``, ``proj_keys`` (not for ``dot``) and ``mask`` with N rows, where R = N x G: each
  block of G consecutive rows (the beams of one sentence) shares one row of the encoder memory,
  so beam search neither copies nor reorders it; with copy attention also ``src_ids`` (N, S)
  int64, the source ids (the encoder's ``src``), and ``src_first`` (N, S) int64, each
  position's first position holding the same id
  (:func:`nmt.models.decoder.first_positions`, found once per sentence, not at every step;
  exports made before it find them in the graph), memory rows like ``keys``. Outputs
  ``log_probs`` (R, V) float32, the next token's log-probabilities (with copy attention: of
  the generate / copy mixture), and ``h_out``, ``c_out`` (and ``feed_out``), the next state.
- when the model directory has a lexical shortlist (``shortlist.safetensors``, copied too),
  ``decoder_step.shortlist.onnx``: the same step over a subset of the target vocabulary, with
  two more inputs, ``vocab`` (M,) int64, the subset's sorted target ids (special ids first),
  and ``penalty`` (N, M) float32, 0 at the positions each sentence's own shortlist holds and
  -inf elsewhere (memory rows like ``keys``); ``tokens`` are then positions in ``vocab`` (and
  with copy attention ``src_ids`` too), and ``log_probs`` is (R, M), -inf where not allowed.
  Two more inputs give the output layer's rows of ``vocab``, ``out_weight`` (M, Hd) and
  ``out_bias`` (M,), which the backend gathers once per batch from ``output_layer.safetensors``
  (the layer's weight and bias, written beside it) instead of the graph gathering them each
  step (a fifth of the step's time, one sentence at a time);
- with ``--int8``, the same graphs dynamically quantised by ONNX Runtime
  (``encoder.int8.onnx``, ``decoder_step.int8.onnx``): int8 weights, activations quantised on
  the fly;
- the model's ``config.yaml`` and SentencePiece model(s), copied, and ``manifest.json``: the
  format, the versions of nmt, torch, the ONNX opset and ONNX Runtime, every graph's input and
  output names with their shapes, the SHA-256 of every file, and the parity measured at export.

Batch and source length are dynamic in both graphs. The graphs come from the TorchScript
exporter (``dynamo=False``: the dynamo exporter fixed the source length to the example's),
tracing the very modules that training and search run: the encoder's packed path (which turns
into the ONNX LSTM's ``sequence_lens``) and :meth:`nmt.models.seq2seq.Seq2Seq.step`, traced
with G = 2 so the shared-memory reshape of :class:`nmt.models.attention.Attention` stays in the
graph. :mod:`nmt.onnx.runtime` runs them; :mod:`nmt.onnx.manifest` reads the manifest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors
from torch import nn

from nmt import __version__
from nmt.config import Config
from nmt.data.shortlist import Shortlist
from nmt.data.tokenizer import BOS_ID, SPECIAL_IDS, model_files
from nmt.errors import ConfigError, NMTError
from nmt.fileio import sha256_file, write_bytes_atomic, write_text_atomic
from nmt.layout import (
    CONFIG_FILE,
    ENCODER_ONNX,
    ENCODER_ONNX_INT8,
    FORMAT_VERSION,
    MANIFEST_FILE,
    OUTPUT_LAYER_FILE,
    STEP_ONNX,
    STEP_ONNX_INT8,
    STEP_SHORTLIST_ONNX,
    STEP_SHORTLIST_ONNX_INT8,
    RunDir,
)
from nmt.models.decoder import DecoderState, OutputSubset, mask_penalty
from nmt.models.seq2seq import Seq2Seq
from nmt.models.weights import load_model_dir
from nmt.onnx.manifest import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, require_onnx

log = logging.getLogger(__name__)

#: ONNX opset of the graphs (LSTM with sequence_lens, Where, boolean masks: all in 17).
OPSET = 17
#: Largest |log-probability difference| between torch and ONNX Runtime accepted at export.
PARITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class GraphNames:
    """Input and output names of the two graphs for one model configuration."""

    encoder_outputs: tuple[str, ...]
    step_inputs: tuple[str, ...]
    step_outputs: tuple[str, ...]

    @classmethod
    def for_model(cls, attention: str, input_feeding: bool,
                  copy_attention: bool = False) -> GraphNames:
        """The names for an attention kind (none, dot, general, mlp), input feeding and copy
        attention (whose step also takes the source ids, ``src_ids``, and their first
        positions, ``src_first``, memory rows like keys)."""
        memory: tuple[str, ...] = ()
        if attention != "none":
            memory = ("keys", "mask") if attention == "dot" else ("keys", "proj_keys", "mask")
        feed = ("feed",) if input_feeding else ()
        # the encoder graph gives the keys (its top layer's outputs) even without attention: the
        # TorchScript exporter fails on a packed LSTM whose padded outputs go unused
        return cls(encoder_outputs=("h0", "c0", "mask", "keys",
                                    *(m for m in memory if m not in ("keys", "mask"))),
                   step_inputs=("tokens", "h", "c", *feed, *memory,
                                *(("src_ids", "src_first") if copy_attention else ())),
                   step_outputs=("log_probs", "h_out", "c_out", *(f"{f}_out" for f in feed)))


class EncoderGraph(nn.Module):
    """What ``encoder.onnx`` computes: encode, bridge and project the keys once."""

    def __init__(self, model: Seq2Seq, names: GraphNames) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """src (B, S), src_lengths (B,) -> the tensors named by ``names.encoder_outputs``."""
        enc = self.model.encode(src, src_lengths)
        state = self.model.init_state(enc)
        values = {"h0": state.h, "c0": state.c, "mask": state.mask, "keys": enc.outputs,
                  "proj_keys": state.proj_keys}
        return tuple(values[name] for name in self.names.encoder_outputs)


class StepGraph(nn.Module):
    """What ``decoder_step.onnx`` computes: :meth:`Seq2Seq.step` on a state given as tensors;
    with ``shortlist``, what ``decoder_step.shortlist.onnx`` computes: the step restricted to
    the ids of the input ``vocab`` and, per sentence, to the positions where ``penalty`` is 0
    (:meth:`Seq2Seq.restrict`)."""

    def __init__(self, model: Seq2Seq, names: GraphNames, shortlist: bool = False) -> None:
        super().__init__()
        self.model, self.names, self.shortlist = model, names, shortlist

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tensors named by ``names.step_inputs`` (and ``vocab``) -> those of
        ``names.step_outputs``."""
        inputs_named = (*self.names.step_inputs,
                        *(SHORTLIST_INPUTS if self.shortlist else ()))
        named = dict(zip(inputs_named, inputs, strict=True))
        keys = named.get("keys")
        state = DecoderState(named["h"], named["c"], named.get("feed"), keys,
                             named.get("proj_keys", keys), named.get("mask"))
        if self.shortlist:  # src_ids come as positions in vocab already
            state = replace(state, subset=OutputSubset(named["vocab"], named["out_weight"],
                                                       named["out_bias"]),
                            penalty=named["penalty"])
        state.src, state.src_first = named.get("src_ids"), named.get("src_first")
        log_probs, new = self.model.step(named["tokens"], state)
        out = [log_probs, new.h, new.c]
        if "feed" in named:
            out.append(new.feed)
        return tuple(out)


def _axes(shape: list[Any]) -> dict[int, str]:
    """Dynamic axes for torch.onnx.export: the positions of named dimensions."""
    return {i: dim for i, dim in enumerate(shape) if isinstance(dim, str)}


def graph_shapes(model: Seq2Seq, attention: str) -> dict[str, list[Any]]:
    """Shape of every graph input and output by name: ints, or names of dynamic dimensions."""
    enc, dec = model.encoder, model.decoder
    layers, hidden = dec.rnn.num_layers, dec.hidden_size
    proj = enc.output_size if attention == "dot" else (
        dec.attention.key_proj.out_features if dec.attention is not None else 0)
    return {
        "src": ["batch", "src_len"], "src_lengths": ["batch"],
        "h0": [layers, "batch", hidden], "c0": [layers, "batch", hidden],
        "mask": ["batch", "src_len"], "keys": ["batch", "src_len", enc.output_size],
        "proj_keys": ["batch", "src_len", proj],
        "tokens": ["rows"], "h": [layers, "rows", hidden], "c": [layers, "rows", hidden],
        "feed": ["rows", hidden], "log_probs": ["rows", dec.output.out_features],
        "h_out": [layers, "rows", hidden], "c_out": [layers, "rows", hidden],
        "feed_out": ["rows", hidden], "src_ids": ["batch", "src_len"],
        "src_first": ["batch", "src_len"],
        "vocab": ["subset"], "penalty": ["batch", "subset"],
        "out_weight": ["subset", hidden], "out_bias": ["subset"],
    }


_DTYPES = {"src": "int64", "src_lengths": "int64", "tokens": "int64", "mask": "bool",
           "src_ids": "int64", "src_first": "int64", "vocab": "int64"}
#: The shortlist step graph's inputs after the step graph's.
SHORTLIST_INPUTS = ("vocab", "penalty", "out_weight", "out_bias")


def _io(names: tuple[str, ...], shapes: dict[str, list[Any]],
        memory_rows: bool = False) -> list[dict[str, Any]]:
    """Manifest entries: name, dtype, shape (in the step graph, memory has 'memory_rows')."""
    out = []
    for name in names:
        shape = list(shapes[name])
        if memory_rows and name in ("keys", "proj_keys", "mask", "src_ids", "src_first",
                                    "penalty"):
            shape[0] = "memory_rows"
        out.append({"name": name, "dtype": _DTYPES.get(name, "float32"), "shape": shape})
    return out


def example_inputs(model: Seq2Seq) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sources of lengths 5 and 3 (B=2, S=5), ids drawn from the real vocabulary."""
    vocab = model.encoder.embed.num_embeddings
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(len(SPECIAL_IDS), max(vocab, len(SPECIAL_IDS) + 1), (2, 5),
                        generator=generator)
    src[1, 3:] = 0
    return src, torch.tensor([5, 3])


def example_subset(model: Seq2Seq, src: torch.Tensor,
                   every: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A shortlist for :func:`example_inputs`: (M,) sorted target ids (the specials, the
    sources' ids and every ``every``-th id), (B, M) bool the positions each sentence may use
    (its own ids, the specials, and every other of the rest), and the sources (B, S) as
    positions in the ids."""
    size = model.decoder.output.out_features
    vocab = torch.unique(torch.cat([torch.arange(len(SPECIAL_IDS)),
                                    src.reshape(-1).clamp(max=size - 1),
                                    torch.arange(len(SPECIAL_IDS), size, every)]))
    positions = torch.searchsorted(vocab, src)
    allowed = (torch.arange(vocab.numel()) % 2 == 0).repeat(src.size(0), 1)
    allowed[:, :len(SPECIAL_IDS)] = True
    allowed.scatter_(1, positions, True)
    return vocab, allowed, positions


@torch.no_grad()
def _export_graphs(model: Seq2Seq, names: GraphNames, shapes: dict[str, list[Any]],
                   directory: Path, shortlist: bool = False) -> None:
    """Trace and write encoder.onnx and decoder_step.onnx into ``directory`` (and with
    ``shortlist`` decoder_step.shortlist.onnx)."""
    src, lengths = example_inputs(model)
    with warnings.catch_warnings(), _native_stderr_to_debug():
        warnings.simplefilter("ignore")  # the tracer's and the exporter's notes
        torch.onnx.export(
            EncoderGraph(model, names).eval(), (src, lengths), str(directory / ENCODER_ONNX),
            input_names=["src", "src_lengths"], output_names=list(names.encoder_outputs),
            dynamic_axes={n: _axes(shapes[n]) for n in ("src", "src_lengths",
                                                        *names.encoder_outputs)},
            opset_version=OPSET, dynamo=False, do_constant_folding=True)
        # two beams per sentence, so the graph keeps the reshape for shared encoder memory
        state = model.expand(model.init_state(model.encode(src, lengths)), 2)
        values = {"tokens": torch.full((4,), BOS_ID, dtype=torch.long), "h": state.h,
                  "c": state.c, "feed": state.feed, "keys": state.keys,
                  "proj_keys": state.proj_keys, "mask": state.mask, "src_ids": state.src,
                  "src_first": state.src_first}
        step_shapes = dict(shapes)
        for name in ("keys", "proj_keys", "mask", "src_ids", "src_first"):
            step_shapes[name] = ["memory_rows", *shapes[name][1:]]
        torch.onnx.export(
            StepGraph(model, names).eval(), tuple(values[n] for n in names.step_inputs),
            str(directory / STEP_ONNX), input_names=list(names.step_inputs),
            output_names=list(names.step_outputs),
            dynamic_axes={n: _axes(step_shapes[n])
                          for n in (*names.step_inputs, *names.step_outputs)},
            opset_version=OPSET, dynamo=False, do_constant_folding=True)
        if not shortlist:
            return
        # a subset of the vocabulary that holds the specials and the example's source ids
        values["vocab"], allowed, values["src_ids"] = example_subset(model, src)
        values["penalty"] = mask_penalty(allowed, allowed.device)
        output, rows = model.decoder.output, values["vocab"]
        values["out_weight"], values["out_bias"] = output.weight[rows], output.bias[rows]
        step_shapes["log_probs"] = ["rows", "subset"]
        step_shapes["penalty"] = ["memory_rows", "subset"]
        inputs = (*names.step_inputs, *SHORTLIST_INPUTS)
        torch.onnx.export(
            StepGraph(model, names, shortlist=True).eval(), tuple(values[n] for n in inputs),
            str(directory / STEP_SHORTLIST_ONNX), input_names=list(inputs),
            output_names=list(names.step_outputs),
            dynamic_axes={n: _axes(step_shapes[n]) for n in (*inputs, *names.step_outputs)},
            opset_version=OPSET, dynamo=False, do_constant_folding=True)


@contextlib.contextmanager
def _native_stderr_to_debug() -> Iterator[None]:
    """Send what C++ code writes to file descriptor 2 meanwhile to the debug log: the
    TorchScript exporter warns there that prim::PackPadded has no shape inference, which is
    expected (packing becomes the LSTM's sequence_lens) and says nothing to a user."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("exporter messages:\n%s", text)


def _quantize(directory: Path) -> None:
    """Write the int8 graphs with ONNX Runtime's dynamic quantisation (weights int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for source, target in ((ENCODER_ONNX, ENCODER_ONNX_INT8), (STEP_ONNX, STEP_ONNX_INT8),
                           (STEP_SHORTLIST_ONNX, STEP_SHORTLIST_ONNX_INT8)):
        if not (directory / source).is_file():
            continue
        disabled = logging.root.manager.disable
        # its root-logger lines: one per tensor left in float, advice on pre-processing
        logging.disable(max(disabled, logging.WARNING))
        try:
            quantize_dynamic(directory / source, directory / target,
                             weight_type=QuantType.QInt8)
        finally:
            logging.disable(disabled)


@torch.no_grad()
def parity(model: Seq2Seq, directory: Path, manifest: dict[str, Any], int8: bool = False,
           steps: int = 4, shortlist: bool = False) -> float:
    """Largest |log-probability difference| between torch and the exported graphs over a few
    greedy steps on :func:`example_inputs` (beams of 2 sharing the memory); with
    ``shortlist``, of the steps restricted to :func:`example_subset` (another subset than the
    one traced, so a size or an id the tracer kept as a constant would show)."""
    from nmt.onnx.runtime import OnnxModel

    backend = OnnxModel.open(directory, manifest, int8=int8, verify=False)
    src, lengths = example_inputs(model)
    states = [m.init_state(m.encode(src, lengths)) for m in (model, backend)]
    if shortlist:
        vocab, allowed, _ = example_subset(model, src, every=2)
        states = [m.restrict(s, vocab, allowed)
                  for m, s in zip((model, backend), states, strict=True)]
    states = [m.expand(s, 2) for m, s in zip((model, backend), states, strict=True)]
    tokens = torch.full((4,), BOS_ID, dtype=torch.long)
    worst = 0.0
    for _ in range(steps):
        (ref, states[0]), (got, states[1]) = (m.step(tokens, s)
                                              for m, s in zip((model, backend), states,
                                                              strict=True))
        worst = max(worst, float((ref - got).abs().max()))
        tokens = ref.argmax(-1)
    return worst


def export_model(model_dir: str | Path, out_dir: str | Path, int8: bool = False) -> dict:
    """Export a model directory to ``out_dir`` (see the module docstring); returns the manifest.

    ``out_dir`` must not exist, be empty, or hold an earlier export (which is replaced). The
    export is written beside it and renamed into place, so a failure leaves nothing half
    written. Every graph is checked against the torch model before it is kept.
    """
    require_onnx("nmt export")
    out = Path(out_dir)
    _check_target(out)
    model, config, src_tok, tgt_tok = load_model_dir(model_dir, "cpu")
    started = time.perf_counter()
    attention = config.model.attention
    names = GraphNames.for_model(attention, config.model.input_feeding,
                                 config.model.copy_attention)
    shapes = graph_shapes(model, attention)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConfigError(f"cannot write the export to {out}: {exc.strerror or exc}{where}; "
                          "give -o a directory that can be created") from None
    table = RunDir(Path(model_dir)).shortlist
    shortlist = table.is_file()
    if shortlist:  # checked before it is copied: damaged or for other vocabularies, refused
        Shortlist.load(table, src_tok.vocab_size, tgt_tok.vocab_size)
    try:
        _export_graphs(model, names, shapes, work, shortlist)
        if shortlist:
            output = model.decoder.output
            write_bytes_atomic(work / OUTPUT_LAYER_FILE, save_tensors(
                {"weight": output.weight.detach().contiguous(),
                 "bias": output.bias.detach().contiguous()}))
        if int8:
            _quantize(work)
        manifest = _manifest(model, config, names, shapes, int8, Path(model_dir), shortlist)
        check = {"fp32_max_abs_diff": parity(model, work, manifest)}
        if shortlist:
            check["fp32_max_abs_diff"] = max(check["fp32_max_abs_diff"],
                                             parity(model, work, manifest, shortlist=True))
        if check["fp32_max_abs_diff"] > PARITY_TOLERANCE:
            raise NMTError(f"the exported graphs disagree with the torch model (log-probabilities "
                           f"differ by {check['fp32_max_abs_diff']:.2g}); nothing was written")
        if int8:
            check["int8_max_abs_diff"] = parity(model, work, manifest, int8=True)
            if shortlist:
                check["int8_max_abs_diff"] = max(check["int8_max_abs_diff"], parity(
                    model, work, manifest, int8=True, shortlist=True))
        files = [CONFIG_FILE, *model_files(src_tok is tgt_tok)]
        for name in files + ([RunDir(work).shortlist.name] if shortlist else []):
            shutil.copyfile(Path(model_dir) / name, work / name)
        manifest["parity"] = check
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(work.iterdir())
                             if p.is_file()}
        write_text_atomic(work / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("exported %s to %s in %.1f s (torch vs ONNX Runtime: %.1e)", model_dir, out,
             time.perf_counter() - started, check["fp32_max_abs_diff"])
    return manifest


def _manifest(model: Seq2Seq, config: Config, names: GraphNames, shapes: dict[str, list[Any]],
              int8: bool, source: Path, shortlist: bool = False) -> dict:
    """The manifest without ``files`` and ``parity`` (added once those are known)."""
    import onnxruntime

    graphs = {
        "encoder": {"file": ENCODER_ONNX, "int8_file": ENCODER_ONNX_INT8 if int8 else None,
                    "inputs": _io(("src", "src_lengths"), shapes),
                    "outputs": _io(names.encoder_outputs, shapes)},
        "decoder_step": {"file": STEP_ONNX, "int8_file": STEP_ONNX_INT8 if int8 else None,
                         "inputs": _io(names.step_inputs, shapes, memory_rows=True),
                         "outputs": _io(names.step_outputs, shapes)},
    }
    if shortlist:
        subset = {**shapes, "log_probs": ["rows", "subset"]}
        graphs["decoder_step_shortlist"] = {
            "file": STEP_SHORTLIST_ONNX, "int8_file": STEP_SHORTLIST_ONNX_INT8 if int8 else None,
            "inputs": _io((*names.step_inputs, *SHORTLIST_INPUTS), subset, memory_rows=True),
            "outputs": _io(names.step_outputs, subset)}
    m = config.model
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION,
        "nmt_version": __version__, "model_format_version": FORMAT_VERSION,
        "torch_version": torch.__version__, "onnx_opset": OPSET,
        "onnxruntime_version": onnxruntime.__version__,
        "model": {"attention": m.attention, "input_feeding": m.input_feeding,
                  "copy_attention": m.copy_attention,
                  "encoder_layers": m.encoder_layers, "decoder_layers": m.decoder_layers,
                  "hidden_size": m.hidden_size, "decoder_hidden_size": m.decoder_hidden_size,
                  "src_vocab": model.encoder.embed.num_embeddings,
                  "tgt_vocab": model.decoder.output.out_features},
        "special_ids": dict(SPECIAL_IDS),
        "graphs": graphs,
        "source_model_sha256": sha256_file(RunDir(source).model),
    }


def _check_target(out: Path) -> None:
    """Refuse an ``-o`` that is a file, or a directory holding anything but an earlier export
    (the files its manifest lists): replacing it must not delete a user's files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} is a file: -o takes a directory for the export")
    present = {p.name for p in out.iterdir()}
    if not present:
        return
    from nmt.onnx.manifest import read_manifest

    try:
        listed = {*read_manifest(out)["files"], MANIFEST_FILE}
    except NMTError:
        listed = set()
    others = sorted(present - listed)
    if not listed or others:
        raise ConfigError(f"{out} is not empty and not an earlier export (it holds "
                          f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): give "
                          "a new or empty directory to -o, or remove those files")


def _replace_dir(work: Path, out: Path) -> None:
    """Move the finished export ``work`` to ``out``, replacing an earlier export there."""
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp made it private
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    try:
        work.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)  # the earlier export back in place
        raise
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
