"""Dropout masks from 16-bit random numbers, four to each 64-bit draw of the generator.

Generating the random numbers is most of a dropout layer's cost on the CPU: `torch.rand` (or
`bernoulli_`) makes one float per element, serially, and in `vgg_small`'s ANN training step
that takes about as long as its convolutions (docs/BENCHMARKS.md). One 64-bit draw read as four
16-bit numbers makes a mask in about a quarter of that time, on any device, seeded by the same
generator (`torch.manual_seed`), with the drop probability rounded to a multiple of 2**-16.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LEVELS = 1 << 16  # a drop probability is a whole number of these


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float,
              device: torch.device | str | None = None,
              generator: torch.Generator | None = None) -> Tensor:
    """A bool tensor of `shape`: each element independently True (kept) with probability
    `1 - round(p * 2**16) / 2**16`. Draws `ceil(n / 4)` 64-bit integers from `generator`
    (the device's default one if None)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    n, k = math.prod(shape), round(p * LEVELS)
    if k >= LEVELS:  # nothing kept (the threshold would not fit in 16 bits)
        return torch.zeros(shape, dtype=torch.bool, device=device)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), (1 << 63) - 1, generator=generator)  # all 64 bits
    u = words.view(torch.int16)[:n]  # uniform over [-2**15, 2**15)
    return (u >= k - LEVELS // 2).view(shape)
