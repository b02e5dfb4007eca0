"""Surrogate derivatives dO/dz of the spike O = H(z), z = u/v - 1 (distance to threshold)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor


def linear(z: Tensor, gamma: float = 0.3) -> Tensor:
    """Piecewise-linear surrogate (Bellec et al. 2018), the DIET-SNN default: gamma*max(0, 1-|z|)."""
    return (1.0 - z.abs()).clamp_(min=0.0).mul_(gamma)


def exponential(z: Tensor, gamma: float = 0.3, beta: float = 5.0) -> Tensor:
    """Exponential of the normalised membrane distance z: gamma*exp(-beta*|z|), peak gamma at
    the threshold. This is not STDB (the authors' earlier spike-timing-dependent backprop), whose
    surrogate depends on the time since the neuron's last spike, not on z; see docs/METHOD.md
    section 10.2."""
    return torch.exp(-beta * z.abs()).mul_(gamma)


def sigmoid(z: Tensor, gamma: float = 0.3, alpha: float = 4.0) -> Tensor:
    """Derivative of sigmoid(alpha*z), peak-normalised to gamma at z = 0."""
    s = torch.sigmoid(alpha * z)
    return (s * (1.0 - s)).mul_(4.0 * gamma)


def atan(z: Tensor, gamma: float = 0.3, alpha: float = 2.0) -> Tensor:
    """Derivative of atan(pi/2*alpha*z), peak-normalised to gamma at z = 0."""
    return gamma / (1.0 + (math.pi / 2 * alpha * z) ** 2)


SURROGATES: dict[str, Callable[..., Tensor]] = {
    "linear": linear,
    "exponential": exponential,
    "sigmoid": sigmoid,
    "atan": atan,
}


def get(name: str) -> Callable[..., Tensor]:
    try:
        return SURROGATES[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}") from None
