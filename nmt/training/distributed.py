"""Data-parallel training across processes, as started by ``torchrun``.

``torchrun --nproc_per_node=N -m nmt train --config run.yaml`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; :func:`setup` then joins the process group with NCCL when training on CUDA
and gloo on the CPU. With one process everything here is a no-op, so the trainer has one code
path: each helper takes the :class:`Dist` and does nothing when ``world == 1``. The signals that
stop a run (SIGINT, SIGTERM) are caught here too (:func:`catch_signals`), so that every process
can agree on them and stop at the same update.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from nmt.errors import NMTError

T = TypeVar("T")


class PeerFailed(NMTError):
    """Another process of the job failed and said so; it reports the error itself, so the
    command line prints nothing more for this one."""

    quiet = True


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: ``world`` processes, this one is ``rank``."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """The process that logs, validates and writes files (rank 0)."""
        return self.rank == 0


def world_from_env() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_type: str) -> Dist:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on the CPU)."""
    world = world_from_env()
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        # validation runs on rank 0 while the others wait: allow it time
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    return Dist(world=dist.get_world_size(), rank=dist.get_rank(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def teardown(d: Dist) -> None:
    """Leave the process group."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait for every process."""
    if d.enabled:
        dist.barrier()


def sum_floats(d: Dist, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over processes (float64)."""
    if not d.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def any_true(d: Dist, flags: list[bool | int], device: torch.device) -> list[int]:
    """Element-wise maximum over processes: a flag (or a signal number) raised anywhere."""
    if not d.enabled:
        return [int(f) for f in flags]
    tensor = torch.tensor([int(f) for f in flags], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(d: Dist, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def mean(d: Dist, value: float, device: torch.device) -> float:
    """The mean of ``value`` over processes (the value itself with one process)."""
    return sum_floats(d, [value], device)[0] / d.world if d.enabled else value


def rank0_first(d: Dist, make: Callable[[], T]) -> T:
    """``make()`` on rank 0 first, then on the others (which re-use the files it wrote).

    Rank 0 tells the others how ``make()`` went instead of only meeting them at a barrier: when
    it fails (a missing file, a bad config), every process raises and leaves after that
    collective has completed, so the job ends by itself and does not depend on torchrun
    killing a process left waiting (with the 2 h timeout) for a rank that has gone.
    """
    if not d.enabled:
        return make()
    if d.main:
        try:
            result = make()
        except BaseException as exc:
            broadcast(d, f"{type(exc).__name__}: {exc}")
            teardown(d)  # leave the group before exiting: a peer's gloo thread may abort else
            raise
        broadcast(d, None)
        return result
    failure = broadcast(d, None)
    if failure is not None:
        teardown(d)
        raise PeerFailed(f"rank 0 failed before this process could start ({failure})")
    return make()


def wrap(d: Dist, module: torch.nn.Module,
         device: torch.device) -> torch.nn.parallel.DistributedDataParallel | None:
    """``module`` in DistributedDataParallel (broadcasting rank 0's weights), or None with one
    process."""
    if not d.enabled:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module,
                                   device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def catch_signals() -> Iterator[dict[str, int]]:
    """Within: SIGINT and SIGTERM set ``caught["signal"]`` instead of stopping the process
    (the trainer then saves a checkpoint after the current update); the old handlers are put
    back after. Outside the main thread, where handlers cannot be set, nothing is caught."""
    caught = {"signal": 0}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def note(signum: int, _frame: object) -> None:
        caught["signal"] = signum

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_epoch(d: Dist, epoch_batches: int, accumulate: int) -> None:
    """An epoch must hold at least one update of every process (``accumulate`` batches each)."""
    if d.enabled and epoch_batches < accumulate * d.world:
        raise NMTError(f"the training data make {epoch_batches} batches an epoch, fewer than "
                       f"one update of {d.world} processes x accumulate {accumulate}: use fewer "
                       "processes or smaller training.batch_tokens")


@contextlib.contextmanager
def joined(d: Dist) -> Iterator[Dist]:
    """Within: this process takes part in the job; on leaving (also by an exception) it
    leaves the process group."""
    try:
        yield d
    finally:
        teardown(d)
