"""ANN -> SNN: the same module tree with each ReLU replaced by a LIF layer (SPEC 7.2)."""

from __future__ import annotations

import copy

from torch import nn

from .functional import encoding as _encoding
from .functional import surrogate as _surrogate
from .models import Network
from .modules import LIF


def ann_to_snn(
    ann: Network,
    timesteps: int,
    encoding: str = "direct",
    leak: float = 1.0,
    threshold: float = 1.0,
    gamma: float = 0.3,
    surrogate: str = "linear",
) -> Network:
    """Return a spiking copy of `ann` (the ANN is not modified): every ReLU becomes a LIF with
    `leak` (1 = IF) and `threshold` (set it with `calibrate_thresholds`), weights copied."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if encoding not in _encoding.ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(_encoding.ENCODINGS)}")
    _surrogate.get(surrogate)
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"leak must be in (0, 1], got {leak}")
    if threshold <= 0.0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    snn = copy.deepcopy(ann)
    _swap_relu(snn, lambda: LIF(leak, threshold, gamma, surrogate))
    snn.timesteps = timesteps
    snn.encoding = encoding
    return snn


def _swap_relu(module: nn.Module, make) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, make())
        else:
            _swap_relu(child, make)
