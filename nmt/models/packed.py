"""Weights laid out once for oneDNN's kernels at inference, kept while they stay the same.

oneDNN lays a weight out for its kernels at every call of ``F.linear`` or ``nn.LSTM``, which
costs more than the product itself when a search holds few rows. The decoder's output layer
(:meth:`nmt.models.decoder.Decoder._output_logits`) and the encoder's LSTM
(:func:`nmt.models.encoder._lstm`) keep the laid-out weights here, off the modules (which are
copied and saved as they are): by id of the first weight, with weak references to the weights
and their versions, so that a weight changed in place is laid out again and an entry leaves
with its weight. A fused optimizer's step changes weights without their versions, so the
modules :func:`forget` theirs whenever they enter or leave training.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

T = TypeVar("T")

#: id of the first weight -> (weak references to the weights, their versions, the layouts by
#: variant)
CACHE: dict[int, tuple[tuple[weakref.ref, ...], tuple[int, ...], dict[Hashable, object]]] = {}


def laid_out(weights: tuple[torch.Tensor, ...], make: Callable[[], T],
             variant: Hashable = None) -> T:
    """The layout ``make()`` of ``weights``, made once and again only when one of them is
    another tensor or has changed in place. ``variant`` tells apart layouts of the same weights
    for different calls (oneDNN's LSTM wants another for a batch of one on some CPUs)."""
    key = id(weights[0])
    versions = tuple(w._version for w in weights)
    entry = CACHE.get(key)
    if (entry is None or entry[1] != versions
            or any(ref() is not w for ref, w in zip(entry[0], weights, strict=True))):
        refs = (weakref.ref(weights[0], lambda _, key=key: CACHE.pop(key, None)),
                *(weakref.ref(w) for w in weights[1:]))
        entry = CACHE[key] = (refs, versions, {})
    layouts = entry[2]
    if variant not in layouts:
        layouts[variant] = make()
    return layouts[variant]  # type: ignore[return-value]


def forget(*weights: torch.Tensor | None) -> None:
    """Drop the layouts made from these (first) weights; None and unknown ones are ignored."""
    for weight in weights:
        if weight is not None:
            CACHE.pop(id(weight), None)


def plain_cpu_fp32(x: torch.Tensor) -> bool:
    """Whether ``x`` runs in plain fp32 on a CPU: no autocast, nothing traced (an ONNX export).
    The condition of the inference shortcuts: the decoder's ``lstm_cell`` step and output layer
    on a packed weight, the encoder's LSTM on weights laid out once."""
    return (x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export())
