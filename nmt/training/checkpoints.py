"""Training checkpoints: what ``--resume`` needs beyond the weights.

A training run's directory adds to a model directory ``trainer_state.pt`` (the optimizer,
schedule and step, the data position and every process's random generator states; tensors,
numbers and strings only, loaded with ``torch.load(weights_only=True)``) and ``checkpoints/``
(the weights of the last ``training.keep_last`` validations, rotated). Weights themselves are
read and written by :mod:`nmt.models.weights`; file names come from :mod:`nmt.layout`. Every
file is written atomically, so a run killed at any instant resumes from its last checkpoint.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from nmt.config import Config, load_config, to_dict
from nmt.errors import NMTError
from nmt.fileio import write_bytes_atomic
from nmt.layout import RunDir
from nmt.models.weights import load_weights, save_weights
from nmt.training.distributed import Dist, gather

log = logging.getLogger(__name__)
#: Layout of trainer_state.pt: 2 stores the schedule's own state under 'schedule'.
TRAINER_STATE_VERSION = 2


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
    if bool(saved.training.init_from) != bool(config.training.init_from):
        was = f"fine-tuned from {saved.training.init_from}" if saved.training.init_from \
            else "trained from scratch"
        raise NMTError(f"cannot resume: the run in {run.root} was {was}; resume it with "
                       f"training.init_from as it started (the config's {run.config.name})")
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
