"""Device and precision selection shared by training and translation.

``auto`` picks CUDA when present; precision ``auto`` picks bf16 autocast on CPUs with native
bf16 matrix units (AVX-512-BF16 or AMX) and on CUDA (fp16 where CUDA lacks bf16).
"""

from __future__ import annotations

import contextlib
import functools

import torch

from nmt.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is 'cuda' but no CUDA device is available; use auto "
                          "or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AVX-512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


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


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
