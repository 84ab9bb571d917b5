"""The ONNX Runtime backend: an exported model behind the same incremental API as the model.

:class:`OnnxModel` offers ``encode``, ``init_state``, ``step``, ``reorder`` and ``expand`` as
:class:`nmt.model.Seq2Seq` does, on torch tensors, so :mod:`nmt.search` (greedy and beam search)
runs on it unchanged: one search, two backends. The state is the model's own
:class:`~nmt.decoder.DecoderState`, so reordering and expanding (with the encoder memory shared
by a sentence's beams) is the same code too; only ``encode`` and ``step`` run ONNX Runtime
sessions (``encoder.onnx`` and ``decoder_step.onnx``, see :mod:`nmt.export`). Tensors cross
between torch and ONNX Runtime as NumPy arrays without copies.

Loading checks the manifest's format and the SHA-256 of the graphs, and nothing in an export is
executed as Python: ONNX Runtime reads the graphs as data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.decoder import DecoderState
from nmt.errors import ConfigError, NMTError
from nmt.export import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, require_onnx
from nmt.fileio import sha256_file
from nmt.layout import MANIFEST_FILE, RunDir
from nmt.model import Seq2Seq

log = logging.getLogger(__name__)


@dataclass
class OnnxEncoding:
    """The encoder graph's outputs by name (h0, c0 (Ld, B, Hd), mask (B, S), keys ...)."""

    tensors: dict[str, torch.Tensor]


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an export directory, its format and keys checked (a clear error
    otherwise)."""
    run = RunDir(Path(directory))
    if not run.root.exists():
        raise NMTError(f"model directory not found: {run.root}")
    if not run.root.is_dir():
        raise NMTError(f"{run.root} is a file: -m takes a model directory or an ONNX export")
    if not run.manifest.is_file():
        raise NMTError(f"{run.root} is not an ONNX export (it has no {run.manifest.name}): use "
                       "--backend torch (or auto) for a model directory, or export it first "
                       f"with nmt export -m {run.root} -o EXPORT_DIR")
    try:
        manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NMTError(f"{run.manifest}: not a readable manifest ({exc}); export the model "
                       "again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise NMTError(f"{run.manifest}: not an nmt export manifest (format "
                       f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version") != EXPORT_FORMAT_VERSION:
        raise NMTError(f"{run.manifest}: export format version "
                       f"{manifest.get('format_version')}, this nmt reads version "
                       f"{EXPORT_FORMAT_VERSION}; export the model again with this nmt")
    problem = _manifest_problem(manifest)
    if problem:
        raise NMTError(f"{run.manifest}: {problem}; export the model again")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's graphs, files and model entries, or None."""
    files, model, graphs = (manifest.get(k) for k in ("files", "model", "graphs"))
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and name == Path(name).name and isinstance(digest, str)
            for name, digest in files.items()):
        return "'files' must map plain file names to SHA-256 digests"
    if not isinstance(model, dict) or not all(
            isinstance(model.get(k), int) for k in ("decoder_hidden_size", "src_vocab",
                                                    "tgt_vocab")):
        return "'model' lacks the decoder size or the vocabulary sizes"
    if not isinstance(graphs, dict):
        return "'graphs' is missing"
    for graph in ("encoder", "decoder_step"):
        entry = graphs.get(graph)
        if not isinstance(entry, dict) or entry.get("file") not in files or not all(
                isinstance(entry.get(k), list) and all(isinstance(io, dict) and "name" in io
                                                       for io in entry[k])
                for k in ("inputs", "outputs")):
            return f"the '{graph}' graph entry is incomplete"
        if entry.get("int8_file") is not None and entry["int8_file"] not in files:
            return f"the '{graph}' int8 graph is not among the files"
    return None


class OnnxModel:
    """An ONNX export searched through the model's incremental API (CPU, fp32 or int8)."""

    def __init__(self, encoder: Any, step: Any, manifest: dict[str, Any], int8: bool) -> None:
        self.encoder_session, self.step_session = encoder, step
        self.manifest, self.int8 = manifest, int8
        graphs = manifest["graphs"]
        self.encoder_outputs = [o["name"] for o in graphs["encoder"]["outputs"]]
        self.step_inputs = [i["name"] for i in graphs["decoder_step"]["inputs"]]
        self.step_outputs = [o["name"] for o in graphs["decoder_step"]["outputs"]]
        self.input_feeding = "feed" in self.step_inputs
        self.hidden_size = int(manifest["model"]["decoder_hidden_size"])

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
        for graph in ("encoder", "decoder_step"):
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
        try:
            encoder, step = (ort.InferenceSession(str(p), options,
                                                  providers=["CPUExecutionProvider"])
                             for p in files)
        except Exception as exc:  # onnxruntime's own errors (Fail, InvalidGraph, ...)
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise NMTError(f"ONNX Runtime {ort.__version__} cannot load the export in {root} "
                           f"(made with onnxruntime {manifest.get('onnxruntime_version')}, "
                           f"opset {manifest.get('onnx_opset')}): {first}; install an "
                           "onnxruntime at least as new, or export the model again") from None
        return cls(encoder, step, manifest, int8)

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
        return OnnxEncoding(tensors)

    def init_state(self, enc: OnnxEncoding) -> DecoderState:
        """The decoder state before the first step: bridged (h0, c0), zero feed, the memory."""
        t = enc.tensors
        h0 = t["h0"]
        feed = h0.new_zeros(h0.size(1), self.hidden_size) if self.input_feeding else None
        keys = t["keys"] if "keys" in self.step_inputs else None  # None: no attention
        return DecoderState(h0, t["c0"], feed, keys, t.get("proj_keys", keys), t["mask"],
                            src=t.get("src_ids"))

    def step(self, prev_tokens: torch.Tensor,
             state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Log-probabilities (R, V) float32 of the next token given previous tokens (R,)."""
        values = {"tokens": prev_tokens, "h": state.h, "c": state.c, "feed": state.feed,
                  "keys": state.keys, "proj_keys": state.proj_keys, "mask": state.mask,
                  "src_ids": state.src}
        outputs = self.step_session.run(
            self.step_outputs, {name: self._numpy(values[name]) for name in self.step_inputs})
        out = dict(zip(self.step_outputs, (torch.from_numpy(o) for o in outputs), strict=True))
        return out["log_probs"], replace(state, h=out["h_out"], c=out["c_out"],
                                         feed=out.get("feed_out"))

    # the model's own: the state is a DecoderState, its encoder memory shared by the beams
    reorder = staticmethod(Seq2Seq.reorder)
    expand = staticmethod(Seq2Seq.expand)
