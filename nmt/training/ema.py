"""An exponential moving average (EMA) of the weights, kept while training.

With ``training.ema_decay`` = d > 0 the trainer calls :meth:`WeightEMA.update` after every
optimizer step; validation scores the averaged weights and ``model.safetensors`` keeps them
when they score best, while training itself goes on with the raw weights.

The average is bias-corrected as Adam corrects its moments: the sum starts at zero and the
average after n updates is ``sum / (1 - d^n)``, a true weighted mean of the weights visited,
update k weighing ``d^(n-k)``. So the random initial weights never enter it, and a short run
is not dragged back towards its first updates (with d = 0.998 half of the weight lies on the
last 350 updates). The state (sum, count) is part of the trainer state, so ``--resume``
continues it exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from nmt.errors import NMTError


class WeightEMA:
    """Exponential moving average of ``model``'s parameters (tied ones counted once)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay, self.count = decay, 0
        self.zero_weight = 1.0  # the weight the zero start still holds in the sum: prod(d)
        self.params = dict(model.named_parameters())  # named_parameters skips tied duplicates
        self.sums = {name: torch.zeros_like(p, dtype=torch.float32)
                     for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights in: ``sum = d * sum + (1 - d) * weight``."""
        for name, param in self.params.items():
            self.sums[name].lerp_(param.detach().float(), 1.0 - self.decay)
        self.count += 1
        self.zero_weight *= self.decay

    def averaged(self) -> dict[str, torch.Tensor]:
        """The bias-corrected average of each parameter (float32, as the parameters)."""
        if self.count == 0:
            return {name: p.detach().float().clone() for name, p in self.params.items()}
        correction = 1.0 - self.zero_weight
        return {name: s / correction for name, s in self.sums.items()}

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; afterwards its own again."""
        saved = {name: p.detach().clone() for name, p in self.params.items()}
        averaged = self.averaged()
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(averaged[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, param in self.params.items():
                    param.copy_(saved[name])

    def state_dict(self) -> dict:
        """Decay, update count and the running sums (tensors, numbers: ``weights_only`` safe)."""
        return {"decay": self.decay, "count": self.count, "zero_weight": self.zero_weight,
                "sums": {name: s.clone() for name, s in self.sums.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue the average saved by :meth:`state_dict` (names and shapes must match)."""
        sums = state["sums"]
        if sums.keys() != self.sums.keys() or any(
                sums[k].shape != self.sums[k].shape for k in sums):
            raise NMTError("the checkpoint's weight average does not match the model: resume "
                           "with the config the run was started with")
        # a run resumed with another decay goes on with the new one; the bias correction
        # stays exact because it tracks the product of the decays actually used
        self.count, self.zero_weight = int(state["count"]), float(state["zero_weight"])
        for name, tensor in sums.items():
            self.sums[name].copy_(tensor)
