"""Model directories and checkpoints: weights in safetensors, configs in YAML, never pickles.

A model directory (the unit a user moves around) holds ``config.yaml``, ``model.safetensors``
(best weights) and the SentencePiece model(s); a training run adds ``trainer_state.pt`` (loaded
with ``torch.load(weights_only=True)``), ``checkpoints/``, ``metrics.csv``, ``train.log``,
TensorBoard events and ``curve.png`` (names: :mod:`nmt.layout`). Every file is written atomically.

This module owns reading and writing them: weights (:func:`save_weights`, :func:`load_weights`,
:func:`load_model_dir`, :func:`average_model_dir`) and training checkpoints with the trainer
state, random generator states included (:func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`random_states`, :func:`restore_random_states`).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from nmt import FORMAT_VERSION
from nmt.config import Config, load_config, save_config, to_dict
from nmt.distributed import Dist, gather
from nmt.errors import NMTError
from nmt.fileio import write_bytes_atomic
from nmt.layout import CHECKPOINT_DIR as CHECKPOINT_DIR  # re-exports, for code without RunDir
from nmt.layout import CONFIG_FILE as CONFIG_FILE
from nmt.layout import MODEL_FILE as MODEL_FILE
from nmt.layout import RunDir
from nmt.model import Seq2Seq, build_model
from nmt.tokenizer import Tokenizer, load_from_dir, model_files

log = logging.getLogger(__name__)
#: Layout of trainer_state.pt: 2 stores the schedule's own state under 'schedule'.
TRAINER_STATE_VERSION = 2


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


def save_trainer_state(state: dict[str, Any], path: str | Path) -> None:
    """Write the trainer state (tensors, numbers, strings only) atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Read a trainer state with ``weights_only=True``: a pickle that runs code is refused."""
    path = Path(path)
    if not path.is_file():
        raise NMTError(f"trainer state not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about legacy pickles before refusing them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError variants
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.debug("torch.load(weights_only=True) refused %s: %s", path, exc)
        raise NMTError(f"{path}: refused to load the trainer state: it is not one written by "
                       "nmt (it holds more than tensors, numbers and strings, or is damaged); "
                       f"nothing in it was run ({reason[:80]})") from None


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


def checkpoints_of(run_dir: Path) -> list[Path]:
    """The checkpoints of a run, oldest first (names carry the zero-padded update number)."""
    return RunDir(run_dir).checkpoint_files()


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
    for name in (*model_files(joint=True), *model_files(joint=False)):  # the SentencePiece models
        if (run.root / name).is_file():
            write_bytes_atomic(out.root / name, (run.root / name).read_bytes())
    config = load_config(run.config)
    config.output_dir = str(out.root)  # its own directory, not the run it came from
    save_config(config, out.config)
    save_weights(model, out.model)
    write_text_atomic(out.averaged, json.dumps(
        {"run": str(run.root), "checkpoints": [str(p) for p in paths]}, indent=2) + "\n")
    return paths


# --------------------------------------------------------------------------- training checkpoints


def random_states(d: Dist, device: torch.device) -> dict[str, Any]:
    """Every process's random generator states (a collective: every process calls it)."""
    ranks = gather(d, torch.get_rng_state())
    cuda_ranks = (gather(d, torch.cuda.get_rng_state(device))
                  if d.enabled and device.type == "cuda" else [])
    return {"torch_rng": torch.get_rng_state(), "torch_rng_ranks": ranks if d.enabled else [],
            "cuda_rng_ranks": cuda_ranks, "world_size": d.world,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_random_states(state: dict[str, Any], d: Dist, device: torch.device, seed: int,
                          step: int) -> None:
    """Put back this process's generator states from :func:`random_states`' values.

    A run resumed with another number of processes gives the new ranks fresh seeds.
    """
    ranks = state.get("torch_rng_ranks") or []
    if d.enabled and len(ranks) == d.world:
        torch.set_rng_state(ranks[d.rank])
    else:
        torch.set_rng_state(state["torch_rng"])
        if d.rank:
            torch.manual_seed(seed + d.rank + step)
    cuda_ranks = state.get("cuda_rng_ranks") or []
    if d.enabled and device.type == "cuda" and len(cuda_ranks) == d.world:
        torch.cuda.set_rng_state(cuda_ranks[d.rank], device)
    elif state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def save_checkpoint(run: RunDir, model: torch.nn.Module, stateful: dict[str, Any],
                    progress: dict[str, Any], keep_last: int, d: Dist,
                    device: torch.device) -> None:
    """Write a training checkpoint (every process calls it, to hand in its random state).

    Rank 0 writes the weights of update ``progress["step"]`` under ``checkpoints/``, then
    ``trainer_state.pt`` pointing at them: the ``state_dict()`` of each ``stateful`` object
    (optimizer, schedule, gradient scaler), the random states and ``progress`` (a dict whose
    ``history`` list is stored on its own). Only the newest ``keep_last`` checkpoints are
    kept, and the best one (``progress["best_step"]``) is never deleted. A run killed at any
    instant leaves the previous pair readable.
    """
    rng = random_states(d, device)
    if not d.main:
        return
    path = run.checkpoint(progress["step"])
    save_weights(model, path)
    state = {"format_version": TRAINER_STATE_VERSION,
             "checkpoint": path.relative_to(run.root).as_posix(),
             **{name: obj.state_dict() for name, obj in stateful.items()}, **rng,
             "progress": {k: v for k, v in progress.items() if k != "history"},
             "history": progress["history"]}
    save_trainer_state(state, run.trainer_state)
    best = run.checkpoint(progress["best_step"]).name
    for old in run.checkpoint_files()[:-keep_last]:
        if old.name != best:
            old.unlink()


def load_checkpoint(run: RunDir, model: torch.nn.Module, stateful: dict[str, Any], d: Dist,
                    device: torch.device, seed: int) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``model`` and the ``stateful`` objects,
    and this process's random states; returns the progress dict, ``history`` included."""
    state = load_trainer_state(run.trainer_state)
    load_weights(model, run.root / state["checkpoint"])
    if state.get("format_version", 1) < 2 and "optimizer" in state:  # the rate was the optimizer's
        state["schedule"] = {"current": state["optimizer"]["param_groups"][0]["lr"]}
    for name, obj in stateful.items():
        if state.get(name):
            obj.load_state_dict(state[name])
    restore_random_states(state, d, device, seed, state["progress"]["step"])
    if state.get("world_size", 1) != d.world:
        log.warning("resuming a run of %d process(es) with %d processes: an update now takes "
                    "other batches", state.get("world_size", 1), d.world)
    log.info("resumed from %s: step %d, epoch %d", state["checkpoint"],
             state["progress"]["step"], state["progress"]["epoch"] + 1)
    return {**state["progress"], "history": list(state["history"])}


def check_run_dir(config: Config, resume: bool) -> None:
    """A new run needs a directory without a training run in it; a resumed one needs one whose
    settings that fix the model and the batch order are unchanged.

    Model, data and tokenizer settings, and the batching keys (a different seed, budget or
    accumulation would make the saved position point into a different list of batches).
    """
    run = RunDir(config.out)
    if not resume and run.trainer_state.exists():
        raise NMTError(f"{run.root} already holds a training run ({run.trainer_state.name}); "
                       "continue it with --resume, or choose another output_dir")
    if resume and not run.trainer_state.exists():
        raise NMTError(f"nothing to resume: {run.trainer_state} does not exist")
    if not resume or not run.config.exists():
        return
    saved = load_config(run.config)
    for section in ("model", "data", "tokenizer"):
        if to_dict(getattr(saved, section)) != to_dict(getattr(config, section)):
            raise NMTError(f"cannot resume: the {section} settings differ from those in "
                           f"{run.config}; resume with the same config or start a new "
                           "output_dir")
    for key in ("seed", "batch_tokens", "accumulate"):
        old, new = getattr(saved.training, key), getattr(config.training, key)
        if old != new:
            raise NMTError(f"cannot resume: training.{key} was {old} and is now {new}; the "
                           "saved data position depends on it: resume with the same value")
