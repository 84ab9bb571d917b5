"""The ONNX export format: its name and version, the manifest an export carries (read and
checked here, written by :mod:`nmt.onnx.export`), and the check that the ONNX extra is
installed.

``manifest.json`` names the format, the versions of nmt, torch, the ONNX opset and ONNX
Runtime, every graph's input and output names with their shapes, the SHA-256 of every file and
the parity measured at export; a backend refuses a manifest of another format or version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nmt.errors import ConfigError, NMTError
from nmt.layout import RunDir

#: The export format and the version written; a backend refuses a manifest of another format
#: or of a version outside READ_VERSIONS. Version 2: the shortlist step takes the output
#: layer's rows (``out_weight``, ``out_bias``) as inputs instead of gathering them each step.
EXPORT_FORMAT = "nmt-onnx"
EXPORT_FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
#: What to run when the ONNX extra is missing.
ONNX_EXTRA_HINT = "install the ONNX extra: pip install -e '.[onnx]' (onnx and onnxruntime)"


def require_onnx(what: str = "the ONNX backend") -> None:
    """Raise a ConfigError naming the install command when onnx or onnxruntime is missing."""
    missing = []
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"{what} needs {' and '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: "
                          f"{ONNX_EXTRA_HINT}")


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
    if manifest.get("format_version") not in READ_VERSIONS:
        raise NMTError(f"{run.manifest}: export format version "
                       f"{manifest.get('format_version')}, this nmt reads versions "
                       f"{READ_VERSIONS[0]} to {READ_VERSIONS[-1]}; export the model again "
                       "with this nmt")
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
    for graph in ("encoder", "decoder_step", "decoder_step_shortlist"):
        entry = graphs.get(graph)
        if graph == "decoder_step_shortlist" and entry is None:
            continue  # made only for a model with a lexical shortlist
        if not isinstance(entry, dict) or entry.get("file") not in files or not all(
                isinstance(entry.get(k), list) and all(isinstance(io, dict) and "name" in io
                                                       for io in entry[k])
                for k in ("inputs", "outputs")):
            return f"the '{graph}' graph entry is incomplete"
        if entry.get("int8_file") is not None and entry["int8_file"] not in files:
            return f"the '{graph}' int8 graph is not among the files"
    return None
