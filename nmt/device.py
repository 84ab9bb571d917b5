"""Device and precision selection shared by training and translation.

``auto`` picks CUDA when present; precision ``auto`` picks bf16 autocast on CUDA (fp16 where
CUDA lacks bf16) and on CPUs where bf16 matrix products are faster than fp32: always with AMX;
with AVX-512-BF16 alone only when a short probe measures it (it is on AMD Zen 4/5; on an Intel
Xeon whose AMX is not exposed it measured 1.8x slower than fp32). Everywhere else fp32.

:func:`keep_large_allocations` tunes glibc's allocator for batched search on the CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import platform
import sys
import time

import torch

from nmt.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is 'cuda' but no CUDA device is available; use auto "
                          "or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# bf16 autocast must beat fp32 matrix products by this much to be picked by ``auto`` without
# AMX: a margin, so that a noisy probe near a tie keeps the exact precision
BF16_MIN_SPEEDUP = 1.2


def _cpu_flag(name: str) -> bool:
    return bool(getattr(torch.cpu, name, lambda: False)())


def cpu_has_bf16_instructions() -> bool:
    """Whether this CPU has bf16 instructions at all (AVX-512-BF16 or AMX); without them bf16
    is emulated and far slower than fp32."""
    return _cpu_flag("_is_avx512_bf16_supported") or _cpu_flag("_is_amx_tile_supported")


@functools.cache
def cpu_bf16_speedup(size: int = 1024, reps: int = 3) -> float:
    """bf16 over fp32 matrix-product throughput on this CPU: the best of ``reps`` timed
    ``size``-cubed products each, after one untimed (about 0.2 s in all; measured once a
    process). Above 1 bf16 is faster."""
    best, generator = {}, torch.Generator().manual_seed(0)  # leaves torch's global RNG alone
    for dtype in (torch.float32, torch.bfloat16):
        a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
        torch.mm(a, b)  # warm-up: oneDNN picks and caches its kernel
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 autocast pays on this CPU: with AMX always; with AVX-512-BF16 alone when
    :func:`cpu_bf16_speedup` measures at least ``BF16_MIN_SPEEDUP``; otherwise not."""
    if _cpu_flag("_is_amx_tile_supported"):
        return True
    if not _cpu_flag("_is_avx512_bf16_supported"):
        return False
    return cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


@functools.cache
def cpu_runs_bf16_lstm() -> bool:
    """Whether torch can run an LSTM under CPU bf16 autocast here (a tiny probe, run once):
    oneDNN has no bf16 LSTM kernel on AVX2-only CPUs and fails there."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.LSTM(4, 4)(torch.zeros(1, 1, 4))
    except RuntimeError:
        return False
    return True


def has_onednn_ops(*ops: str) -> bool:
    """Whether this torch has oneDNN and each of ``ops`` (``"namespace.name"`` under
    ``torch.ops``): the ops that run a product on weights laid out once, which search uses
    where it can (the decoder's output layer, the encoder's LSTM)."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        for op in ops:
            namespace, name = op.split(".")
            if not callable(getattr(getattr(torch.ops, namespace), name)):
                return False
        return True
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``auto | fp32 | bf16`` on ``device``; None means plain fp32."""
    if name == "fp32":
        return None
    if name == "bf16":
        if device.type == "cpu" and not cpu_runs_bf16_lstm():
            raise ConfigError("precision bf16: this CPU cannot run an LSTM in bf16 (torch's "
                              "oneDNN has no bf16 LSTM kernel for it); use fp32, or auto, "
                              "which is fp32 here")
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """A resolved precision as written in logs and results: fp32, bfloat16 or float16."""
    return "fp32" if dtype is None else str(dtype).split(".")[-1]


def precision_dtype(name: str) -> torch.dtype | None:
    """The inverse of :func:`precision_name`."""
    return None if name == "fp32" else getattr(torch, name)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


#: glibc's ``mallopt`` parameters, and the size up to which freed memory stays with the process
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_BYTES = 512 << 20
#: ``NMT_MALLOC_TUNING=0`` leaves glibc's allocator as it is
MALLOC_TUNING_ENV = "NMT_MALLOC_TUNING"


@functools.cache
def keep_large_allocations() -> bool:
    """Let this process reuse its freed memory for tensors up to 512 MiB (once; on Linux with
    glibc; True when set).

    glibc serves an allocation above its ``mmap`` threshold (at most 32 MiB by default) with
    fresh pages from the kernel and returns them when it is freed, so a tensor that size made
    at every step is zero-filled page by page every step. Batched beam search makes several
    (beams x vocabulary) tensors a step: 2,000 rows x 8,000 pieces is 64 MB, and its
    log-softmax and copy mixture ran 3x slower so (torch's batched beam search 1.07x to 1.3x
    faster with this, peak memory up to 200 MB higher; docs/benchmarks.md). Raising the
    ``mmap`` and trim thresholds keeps those pages in the heap for the next step; the price is
    that memory freed after a peak stays with the process. ``NMT_MALLOC_TUNING=0`` leaves the
    allocator alone."""
    if os.environ.get(MALLOC_TUNING_ENV, "1") == "0":
        return False
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                         KEEP_BYTES))
    log.debug("glibc malloc thresholds raised to %d MiB: %s", KEEP_BYTES >> 20, done)
    return done
