"""The weights of a model directory: safetensors only, never pickles.

A model directory (the unit a user moves around) holds ``config.yaml``, ``model.safetensors``
(the best weights) and the SentencePiece model(s) (names: :mod:`nmt.layout`). This module
reads and writes the weights (:func:`save_weights`, :func:`load_weights`), loads a whole model
directory for translation, export or averaging (:func:`load_model_dir`) and averages
checkpoints into a new one (:func:`average_model_dir`). Training checkpoints (optimizer, RNG,
rotation) live in :mod:`nmt.training.checkpoints`. Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nmt.config import Config, load_config, save_config
from nmt.data.tokenizer import Tokenizer, load_from_dir, model_files
from nmt.errors import NMTError
from nmt.fileio import write_bytes_atomic
from nmt.layout import FORMAT_VERSION, RunDir
from nmt.models.seq2seq import Seq2Seq, build_model


def _unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict without the second name of tied (shared) tensors, as safetensors wants."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().cpu().contiguous()
    return out


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write the model's weights as safetensors, atomically; non-finite weights are refused."""
    state = _unique_state(model)
    bad = [name for name, t in state.items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise NMTError(f"not writing {path}: weights {', '.join(bad[:3])} hold NaN or infinite "
                       "values; the previous files are left as they were")
    data = st_save(state, metadata={"format_version": str(FORMAT_VERSION)})
    write_bytes_atomic(path, data)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``model``; mismatches are reported with both shapes."""
    load_tensors(model, read_weights(path), Path(path))


def load_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load tensors read from ``path`` into ``model``, checking every name and shape."""
    expected = model.state_dict()
    tied = set(expected) - set(_unique_state(model))
    for name, tensor in tensors.items():
        if name not in expected:
            raise NMTError(f"{path}: unexpected weight '{name}': the weights do not match the "
                           "model described by config.yaml")
        if tensor.shape != expected[name].shape:
            raise NMTError(f"{path}: weight '{name}' has shape {tuple(tensor.shape)} but the "
                           f"config makes {tuple(expected[name].shape)}: the weights do not "
                           "match config.yaml (or the SentencePiece vocabulary)")
    missing = set(expected) - set(tensors) - tied
    if missing:
        raise NMTError(f"{path}: missing weights {sorted(missing)[:3]}: the weights do not "
                       "match config.yaml")
    model.load_state_dict(tensors, strict=False)


def load_model_dir(directory: str | Path,
                   device: str | torch.device = "cpu") -> tuple[Seq2Seq, Config, Tokenizer,
                                                                 Tokenizer]:
    """Model (eval mode), config and tokenizers of a model directory."""
    run = RunDir(directory)
    if run.root.is_file():
        raise NMTError(f"{run.root} is a file: -m takes a model directory ({run.config.name}, "
                       f"{run.model.name} and the SentencePiece model)")
    if not run.root.is_dir():
        raise NMTError(f"model directory not found: {run.root}")
    config = load_config(run.config)
    src_tok, tgt_tok = load_from_dir(run.root)
    tensors = read_weights(run.model)
    _check_vocab_sizes(run.model, tensors, src_tok, tgt_tok)
    model = build_model(config.model, src_tok.vocab_size, tgt_tok.vocab_size)
    load_tensors(model, tensors, run.model)
    return model.to(device).eval(), config, src_tok, tgt_tok


def _check_vocab_sizes(path: Path, tensors: dict[str, torch.Tensor], src_tok: Tokenizer,
                       tgt_tok: Tokenizer) -> None:
    """The embeddings' rows must equal the SentencePiece vocabularies (both sizes named)."""
    for side, name, tok in (("source", "encoder.embed.weight", src_tok),
                            ("target", "decoder.embed.weight", tgt_tok)):
        if name in tensors and tensors[name].shape[0] != tok.vocab_size:
            raise NMTError(f"{path.parent}: the {side} vocabulary of the weights has "
                           f"{tensors[name].shape[0]} entries but its SentencePiece model has "
                           f"{tok.vocab_size}: the weights and the tokenizer come from "
                           "different runs")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (never a pickle)."""
    path = Path(path)
    if not path.is_file():
        raise NMTError(f"weights not found: {path}")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, ValueError) as exc:
        raise NMTError(f"{path}: not a safetensors file ({exc}); model weights are only read "
                       "from safetensors") from None


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of weight files with the same names and shapes (float64 sums)."""
    if not paths:
        raise NMTError("no checkpoints to average")
    first = read_weights(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for path in paths[1:]:
        tensors = read_weights(path)
        if tensors.keys() != first.keys():
            raise NMTError(f"cannot average {paths[0]} and {path}: they hold different weights "
                           "(checkpoints of different models?)")
        for name, tensor in tensors.items():
            if tensor.shape != first[name].shape:
                raise NMTError(f"cannot average {paths[0]} and {path}: '{name}' has shapes "
                               f"{tuple(first[name].shape)} and {tuple(tensor.shape)}")
            if tensor.is_floating_point():
                sums[name] += tensor.double()
    return {k: (v / len(paths)).to(first[k].dtype) if first[k].is_floating_point() else v
            for k, v in sums.items()}


def average_model_dir(run_dir: str | Path, out_dir: str | Path, last: int | None = None,
                      checkpoints: list[str | Path] | None = None) -> list[Path]:
    """Write a model directory whose weights average checkpoints of ``run_dir``.

    Either the ``last`` N checkpoints under ``run_dir/checkpoints`` or explicit ``checkpoints``
    paths. ``out_dir`` gets ``config.yaml``, the SentencePiece model(s), ``model.safetensors``
    and ``averaged.json`` naming the sources; it must not hold a model already.
    """
    import json

    from nmt.fileio import write_text_atomic

    run, out = RunDir(run_dir), RunDir(out_dir)
    model, _, _, _ = load_model_dir(run.root)  # checks config, vocabulary and weights agree
    if checkpoints:
        paths = [Path(c) for c in checkpoints]
    else:
        available = run.checkpoint_files()
        if last is None or last < 1:
            raise NMTError("give --last N (N >= 1) or the checkpoint files to average")
        if len(available) < last:
            raise NMTError(f"{run.checkpoints} holds {len(available)} checkpoints, "
                           f"fewer than --last {last} (training.keep_last sets how many are kept)")
        paths = available[-last:]
    if out.model.exists():
        raise NMTError(f"{out.root} already holds a model: choose a new output directory")
    load_tensors(model, average_weights(paths), paths[0])
    out.root.mkdir(parents=True, exist_ok=True)
    # the SentencePiece models, and the lexical shortlist (it depends on them, not the weights)
    for name in (*model_files(joint=True), *model_files(joint=False), run.shortlist.name):
        if (run.root / name).is_file():
            write_bytes_atomic(out.root / name, (run.root / name).read_bytes())
    config = load_config(run.config)
    config.output_dir = str(out.root)  # its own directory, not the run it came from
    save_config(config, out.config)
    save_weights(model, out.model)
    write_text_atomic(out.averaged, json.dumps(
        {"run": str(run.root), "checkpoints": [str(p) for p in paths]}, indent=2) + "\n")
    return paths
