"""Spike tensors saved for backward as bool: exact, and a quarter of float32's memory.

Inside `saving_spikes()` (an SNN's forward with autograd on) the LIF layers mark their output
spikes and the dropout layers their masks and masked spikes as two-valued, {0, scale}. When
autograd saves a marked tensor for backward (the input of the next conv or linear layer, a
dropout mask) it keeps `tensor != 0` as bool and restores the same float tensor when backward
needs it. Tensors that were not marked are saved as usual.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

_ACTIVE: list[dict[int, tuple[weakref.ref, Tensor | None]]] = []
_UNMARKED = object()


def mark(t: Tensor, scale: Tensor | None = None) -> Tensor:
    """Declare every element of `t` to be 0 or `scale` (1 if None); a no-op outside
    `saving_spikes`. Returns `t`."""
    if _ACTIVE:
        _ACTIVE[-1][id(t)] = (weakref.ref(t), scale)
    return t


def _scale(t: Tensor):
    if not _ACTIVE:
        return _UNMARKED
    entry = _ACTIVE[-1].get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else _UNMARKED


def is_spikes(t: Tensor) -> bool:
    """Whether `t` was marked as binary spikes (0 or 1)."""
    return _scale(t) is None


def _pack(t: Tensor):
    scale = _scale(t)
    if scale is _UNMARKED:
        return t
    return t != 0, scale, t.dtype


def _unpack(saved) -> Tensor:
    if isinstance(saved, Tensor):
        return saved
    nonzero, scale, dtype = saved
    return nonzero.to(dtype) if scale is None else nonzero.to(dtype).mul_(scale)  # one tensor


@contextmanager
def saving_spikes() -> Iterator[None]:
    """Within this block, marked tensors are saved for backward as bool (not while torch.compile
    traces: the compiled graph decides what it saves)."""
    if torch.compiler.is_compiling():
        yield
        return
    _ACTIVE.append({})
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _ACTIVE.pop()
