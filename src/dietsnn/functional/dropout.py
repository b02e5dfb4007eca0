"""Dropout masks from a counter-based generator: SplitMix64 of a seed and the index.

Each mask costs one 64-bit draw of torch's generator (the seed, so `torch.manual_seed` makes
masks reproducible); word w of the mask is SplitMix64's output for the seed and w, read as four
16-bit numbers, one per element. Element i is kept where its number is at least the drop
probability (rounded to a multiple of 2**-16) in 16-bit units. Every element depends only on
the seed and its index: the native kernel (`native_dropout.c`, float32 and bfloat16 on the
CPU) makes the mask and applies it in one pass over memory, in parallel, with the same bits as
the PyTorch definition below (`mix`), which serves every other device and engine. Backward
multiplies by the same mask, made again from the seed, so nothing is saved for it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import engine, native

LEVELS = 1 << 16  # a drop probability is a whole number of these
_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _shr(z: Tensor, k: int) -> Tensor:
    """Logical shift right of int64 (as uint64) by k."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix(seed: Tensor, words: int, device: torch.device | str | None = None) -> Tensor:
    """SplitMix64 of `seed` (0-dim int64) and word indices 0..words-1, as int64 `[words]`."""
    z = (torch.arange(1, words + 1, dtype=torch.int64, device=device) * _signed(_GOLDEN)
         + seed.to(device))
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


def draw_seed(generator: torch.Generator | None = None) -> Tensor:
    """One 64-bit draw of `generator` (torch's default CPU generator if None), 0-dim int64."""
    return torch.empty((), dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1,
                                                       generator=generator)


def threshold(p: float) -> int | None:
    """The signed 16-bit number an element's must reach to be kept; None: nothing is kept."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    k = round(p * LEVELS)
    return None if k >= LEVELS else k - LEVELS // 2


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float,
              device: torch.device | str | None = None,
              generator: torch.Generator | None = None, seed: Tensor | None = None) -> Tensor:
    """A bool tensor of `shape`: each element independently True (kept) with probability
    `1 - round(p * 2**16) / 2**16`, from `seed` (else one draw of `generator`)."""
    thr = threshold(p)
    seed = draw_seed(generator) if seed is None else seed
    if thr is None:  # nothing kept (the threshold would not fit in 16 bits)
        return torch.zeros(shape, dtype=torch.bool, device=device)
    n = math.prod(shape)
    if engine.native_cpu(device):
        return native.keep_mask(n, seed, thr).view(shape)
    u = mix(seed, (n + 3) // 4, device).view(torch.int16)[:n]  # uniform over [-2**15, 2**15)
    return (u >= thr).view(shape)
