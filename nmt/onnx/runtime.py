"""The ONNX Runtime backend: an exported model behind the same incremental API as the model.

:class:`OnnxModel` offers ``encode``, ``init_state``, ``step``, ``reorder``, ``expand`` and
``restrict`` as :class:`nmt.models.seq2seq.Seq2Seq` does, on torch tensors, so
:mod:`nmt.models.search` (greedy and beam search) runs on it unchanged: one search, two backends.
The state is the model's own :class:`~nmt.models.decoder.DecoderState`, so reordering and expanding
(with the encoder memory shared by a sentence's beams) is the same code too; only ``encode`` and
``step`` run ONNX Runtime sessions (``encoder.onnx`` and ``decoder_step.onnx``, see
:mod:`nmt.onnx.export`). Tensors cross between torch and ONNX Runtime as NumPy arrays without
copies.

Loading checks the manifest's format and the SHA-256 of the graphs, and nothing in an export is
executed as Python: ONNX Runtime reads the graphs as data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.errors import ConfigError, NMTError
from nmt.fileio import sha256_file
from nmt.layout import MANIFEST_FILE, OUTPUT_LAYER_FILE
from nmt.models.decoder import (
    DecoderState,
    OutputSubset,
    first_positions,
    map_to_subset,
    mask_penalty,
)
from nmt.models.seq2seq import Seq2Seq
from nmt.onnx.manifest import read_manifest, require_onnx

log = logging.getLogger(__name__)


@dataclass
class OnnxEncoding:
    """The encoder graph's outputs by name (h0, c0 (Ld, B, Hd), mask (B, S), keys ...)."""

    tensors: dict[str, torch.Tensor]


class OnnxModel:
    """An ONNX export searched through the model's incremental API (CPU, fp32 or int8)."""

    def __init__(self, encoder: Any, step: Any, manifest: dict[str, Any], int8: bool,
                 shortlist_step: Callable[[], Any] | None = None,
                 output_layer: Path | None = None) -> None:
        self.encoder_session, self.step_session = encoder, step
        # decoder_step.shortlist.onnx, opened at its first use (None: the export has none)
        self._open_shortlist, self._shortlist_session = shortlist_step, None
        # output_layer.safetensors: the weight (V, Hd) and bias (V,) whose rows of a shortlist
        # the shortlist step takes as inputs (a shortlist step of export format 1 gathers them)
        self._output_layer_file = output_layer
        self._output_layer: tuple[torch.Tensor, torch.Tensor] | None = None
        self.manifest, self.int8 = manifest, int8
        graphs = manifest["graphs"]
        self.encoder_outputs = [o["name"] for o in graphs["encoder"]["outputs"]]
        self.step_inputs = [i["name"] for i in graphs["decoder_step"]["inputs"]]
        self.shortlist_inputs = [i["name"] for i in graphs.get("decoder_step_shortlist",
                                                               {}).get("inputs", [])]
        self.step_outputs = [o["name"] for o in graphs["decoder_step"]["outputs"]]
        self.input_feeding = "feed" in self.step_inputs
        self.hidden_size = int(manifest["model"]["decoder_hidden_size"])
        # the arrays of the inputs that stay the same tensors from step to step (the encoder
        # memory, a shortlist's ids and penalty): name -> (tensor, its array)
        self._memory: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    @classmethod
    def load(cls, directory: str | Path, int8: bool = False, threads: int | None = None,
             verify: bool = True) -> OnnxModel:
        """Open the graphs of an export directory in ONNX Runtime sessions.

        ``int8``: the dynamically quantised graphs (the export needs ``--int8``);
        ``threads``: intra-op threads (default: torch's, one per core); ``verify``: check the
        graphs' SHA-256 against the manifest.
        """
        root = Path(directory)
        return cls.open(root, read_manifest(root), int8, threads, verify)

    @classmethod
    def open(cls, root: Path, manifest: dict[str, Any], int8: bool = False,
             threads: int | None = None, verify: bool = True) -> OnnxModel:
        """Sessions for the graphs that ``manifest`` names in ``root`` (see :meth:`load`)."""
        require_onnx()
        import onnxruntime as ort

        files = []
        graphs = ["encoder", "decoder_step"]
        if "decoder_step_shortlist" in manifest["graphs"]:
            graphs.append("decoder_step_shortlist")
        for graph in graphs:
            name = manifest["graphs"][graph]["int8_file" if int8 else "file"]
            if name is None:
                raise ConfigError(f"{root} has no int8 graphs: export with nmt export --int8, "
                                  "or translate without --quantize int8")
            files.append(root / name)
        for name, digest in manifest["files"].items() if verify else ():
            path = root / name
            if not path.is_file():
                raise NMTError(f"{path} is missing from the export: export the model again")
            if sha256_file(path) != digest:
                raise NMTError(f"{path} does not match the SHA-256 in {root / MANIFEST_FILE} "
                               "(changed or damaged): export the model again")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings of the optimiser about unused initialisers
        # idle ORT threads must not spin: between steps the search runs torch ops on the cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # denormal floats flushed to zero: a LogSoftmax over a shortlist's -inf (masked) logits
        # otherwise runs 8x slower (exp of the masked values goes through denormals)
        options.add_session_config_entry("session.set_denormal_as_zero", "1")

        def session(path: Path) -> Any:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        shortlist = (None if len(files) < 3 else lambda: _load_session(session, files[2], root,
                                                                        manifest))
        return cls(*(_load_session(session, p, root, manifest) for p in files[:2]), manifest,
                   int8, shortlist, root / OUTPUT_LAYER_FILE)

    def eval(self) -> OnnxModel:
        """Nothing to switch (a graph is always in inference mode); for callers of modules."""
        return self

    def check_vocabularies(self, src_size: int, tgt_size: int, root: Path) -> None:
        """The SentencePiece vocabularies must be those the graphs were exported with."""
        model = self.manifest["model"]
        if (src_size, tgt_size) != (model["src_vocab"], model["tgt_vocab"]):
            raise NMTError(f"{root}: the SentencePiece vocabularies ({src_size} and {tgt_size} "
                           f"pieces) are not those of the graphs ({model['src_vocab']} and "
                           f"{model['tgt_vocab']}): export the model again")

    @staticmethod
    def _numpy(x: torch.Tensor) -> np.ndarray:
        """A CPU tensor as a contiguous NumPy array (no copy when it already is one)."""
        return x.detach().contiguous().numpy()

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> OnnxEncoding:
        """Run the encoder graph on source ids (B, S) with lengths (B,)."""
        outputs = self.encoder_session.run(
            self.encoder_outputs, {"src": self._numpy(src.long()),
                                   "src_lengths": self._numpy(src_lengths.long().cpu())})
        tensors = {name: torch.from_numpy(value)
                   for name, value in zip(self.encoder_outputs, outputs, strict=True)}
        if "src_ids" in self.step_inputs:  # copy attention: the step scatters onto the ids
            tensors["src_ids"] = src.long().cpu()
            if "src_first" in self.step_inputs:  # (exports made before it find them per step)
                tensors["src_first"] = first_positions(tensors["src_ids"])
        return OnnxEncoding(tensors)

    def init_state(self, enc: OnnxEncoding) -> DecoderState:
        """The decoder state before the first step: bridged (h0, c0), zero feed, the memory."""
        t = enc.tensors
        h0 = t["h0"]
        feed = h0.new_zeros(h0.size(1), self.hidden_size) if self.input_feeding else None
        keys = t["keys"] if "keys" in self.step_inputs else None  # None: no attention
        return DecoderState(h0, t["c0"], feed, keys, t.get("proj_keys", keys), t["mask"],
                            src=t.get("src_ids"), src_first=t.get("src_first"))

    def restrict(self, state: DecoderState, ids: torch.Tensor,
                 allowed: torch.Tensor | None = None) -> DecoderState:
        """The state with the output cut to a lexical shortlist's ``ids`` (M,) and each
        sentence to ``allowed`` (N, M), as :meth:`Seq2Seq.restrict` cuts it; the steps then run
        ``decoder_step.shortlist.onnx`` (opened now, the first time)."""
        if self._open_shortlist is None:
            raise ConfigError("this export has no shortlist graph: make the model's shortlist "
                              "(nmt shortlist -m MODEL_DIR) and export it again, or translate "
                              "without --shortlist")
        if self._shortlist_session is None:
            self._shortlist_session = self._open_shortlist()
        ids = ids.long().cpu()
        if allowed is None:  # the graph takes one row per sentence
            allowed = torch.ones(state.mask.size(0), ids.numel(), dtype=torch.bool)
        src = None if state.src is None else map_to_subset(ids, state.src)
        subset = OutputSubset(ids, None, None)
        if "out_weight" in self.shortlist_inputs:  # the rows once here, not in every step
            weight, bias = self._output_rows()
            subset = OutputSubset(ids, weight[ids], bias[ids])
        return replace(state, subset=subset, src=src,
                       penalty=mask_penalty(allowed, torch.device("cpu")))

    def _output_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output layer's weight (V, Hd) and bias (V,), read once (safetensors: data)."""
        if self._output_layer is None:
            from safetensors.torch import load_file

            if self._output_layer_file is None or not self._output_layer_file.is_file():
                raise NMTError("the export's shortlist step takes the output layer's rows but "
                               f"has no {OUTPUT_LAYER_FILE}: export the model again")
            try:
                tensors = load_file(str(self._output_layer_file))
                self._output_layer = (tensors["weight"].float(), tensors["bias"].float())
            except (OSError, KeyError, ValueError, RuntimeError) as exc:
                raise NMTError(f"{self._output_layer_file} is not a readable output layer "
                               f"({exc}): export the model again") from None
        return self._output_layer

    def step(self, prev_tokens: torch.Tensor,
             state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Log-probabilities (R, V) float32 of the next token given previous tokens (R,); with
        a shortlist (R, M) over its ids, the tokens being positions in them."""
        changing = {"tokens": prev_tokens, "h": state.h, "c": state.c, "feed": state.feed}
        memory = {"keys": state.keys, "proj_keys": state.proj_keys, "mask": state.mask,
                  "src_ids": state.src, "src_first": state.src_first}
        session, names = self.step_session, self.step_inputs
        if state.subset is not None:
            memory.update(vocab=state.subset.ids, penalty=state.penalty,
                          out_weight=state.subset.weight, out_bias=state.subset.bias)
            session, names = self._shortlist_session, self.shortlist_inputs
        feeds = {}
        for name in names:
            if name in changing:
                feeds[name] = self._numpy(changing[name])
                continue
            # beam search's steps keep the memory's tensors: their arrays are made once
            tensor = memory[name]
            cached = self._memory.get(name)
            if cached is None or cached[0] is not tensor:
                cached = self._memory[name] = (tensor, self._numpy(tensor))
            feeds[name] = cached[1]
        outputs = session.run(self.step_outputs, feeds)
        out = dict(zip(self.step_outputs, outputs, strict=True))
        feed = out.get("feed_out")
        return torch.from_numpy(out["log_probs"]), state.evolve(
            h=torch.from_numpy(out["h_out"]), c=torch.from_numpy(out["c_out"]),
            feed=None if feed is None else torch.from_numpy(feed))

    # the model's own: the state is a DecoderState, its encoder memory shared by the beams
    reorder = staticmethod(Seq2Seq.reorder)
    expand = staticmethod(Seq2Seq.expand)
    concat = staticmethod(Seq2Seq.concat)


def _load_session(session: Callable[[Path], Any], path: Path, root: Path,
                  manifest: dict[str, Any]) -> Any:
    """``session(path)``, ONNX Runtime's own errors turned into one clear NMTError."""
    import onnxruntime as ort

    try:
        return session(path)
    except Exception as exc:  # onnxruntime's own errors (Fail, InvalidGraph, ...)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise NMTError(f"ONNX Runtime {ort.__version__} cannot load the export in {root} "
                       f"(made with onnxruntime {manifest.get('onnxruntime_version')}, "
                       f"opset {manifest.get('onnx_opset')}): {first}; install an "
                       "onnxruntime at least as new, or export the model again") from None
