"""Surrogate derivatives dO/dz of the spike O = H(z), z = u/v - 1 (distance to threshold).

The one definition of each surrogate: `SURROGATES` (name -> function) and `SHAPES` (name -> the
shape parameter the function defaults to). The native kernels receive their surrogate as
`kernel_args(name)`, an index into `SURROGATES` and the coefficient computed here, so the C code
holds the formulas' form only, never a constant of its own."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

SHAPES = {"linear": 0.0, "exponential": 5.0, "sigmoid": 4.0, "atan": 2.0}


def linear(z: Tensor, gamma: float = 0.3) -> Tensor:
    """Piecewise-linear surrogate (Bellec et al. 2018), the DIET-SNN default: gamma*max(0, 1-|z|)."""
    return (1.0 - z.abs()).clamp_(min=0.0).mul_(gamma)


def exponential(z: Tensor, gamma: float = 0.3, beta: float = SHAPES["exponential"]) -> Tensor:
    """Exponential of the normalised membrane distance z: gamma*exp(-beta*|z|), peak gamma at
    the threshold. This is not STDB (the authors' earlier spike-timing-dependent backprop), whose
    surrogate depends on the time since the neuron's last spike, not on z; see docs/METHOD.md
    section 10.2."""
    return torch.exp(-beta * z.abs()).mul_(gamma)


def sigmoid(z: Tensor, gamma: float = 0.3, alpha: float = SHAPES["sigmoid"]) -> Tensor:
    """Derivative of sigmoid(alpha*z), peak-normalised to gamma at z = 0."""
    s = torch.sigmoid(alpha * z)
    return (s * (1.0 - s)).mul_(4.0 * gamma)


def atan(z: Tensor, gamma: float = 0.3, alpha: float = SHAPES["atan"]) -> Tensor:
    """Derivative of atan(pi/2*alpha*z), peak-normalised to gamma at z = 0."""
    return gamma / (1.0 + (_atan_coefficient(alpha) * z) ** 2)


def _atan_coefficient(alpha: float) -> float:
    return math.pi / 2 * alpha


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


def kernel_args(name: str) -> tuple[int, float]:
    """(kind, coefficient) for the native kernels: the index of `name` in `SURROGATES` and the
    factor its formula multiplies z by (exponential: beta; sigmoid: alpha; atan: pi/2 * alpha)."""
    get(name)
    shape = SHAPES[name]
    return list(SURROGATES).index(name), _atan_coefficient(shape) if name == "atan" else shape
