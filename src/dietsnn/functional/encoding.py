"""Input encoders. Both return what the first layer sees at each of T steps."""

from __future__ import annotations

import torch
from torch import Tensor


def direct(x: Tensor, timesteps: int) -> Tensor:
    """Direct encoding: the analog image itself at every step. Returned once, `[B, ...]`: the
    network treats a tensor without the time fold as constant over time, so the first layer
    runs once per image."""
    return x


def poisson(x: Tensor, timesteps: int, generator: torch.Generator | None = None) -> Tensor:
    """Signed rate coding: at each step a pixel spikes sign(x) with probability |x| (clipped to 1).

    Returns `[T*B, ...]`, time folded into the batch (time-major)."""
    rate = x.abs().clamp(max=1.0)
    rand = torch.rand((timesteps, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return ((rand < rate) * torch.sign(x)).flatten(0, 1)


ENCODINGS = {"direct": direct, "rate": poisson}
