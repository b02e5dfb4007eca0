"""The contenders of `benchmarks/bench_train.py`: each framework's network and its forward.

The registry (names, the `+bf16` / `+graph` modifiers), `Contender` (what the harness times),
`Skip` (a contender that cannot run here) and `build`, which dispatches to one module per
framework: `dietsnn` (the library and its engines, the Triton routing), `spikingjelly`,
`snntorch`, `norse`, `dense` (the ANN limits). A framework's module is imported only when one
of its contenders is built, so a missing peer costs nothing to the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dietsnn import build_ann  # the function, not the module: `.dietsnn` is a submodule here

C = 10
DIETSNN = ("dietsnn", "dietsnn-eager", "dietsnn-notune", "dietsnn-bf16", "dietsnn-compile",
           "dietsnn-triton")
SJ = ("spikingjelly", "spikingjelly-triton", "spikingjelly-cupy", "spikingjelly-cuda")
PEERS = (*SJ, "snntorch", "norse")
DENSE = ("ann-TxB", "ann-BxT")
KNOWN = (*DIETSNN, *PEERS, *DENSE)
MODIFIERS = ("bf16", "graph")  # NAME+bf16: forward under bf16 autocast; NAME+graph: CUDA graph


class Skip(Exception):
    """A contender that cannot run here (library missing, backend unavailable)."""


@dataclass
class Contender:
    """A network and how to run it: `forward` maps the prepared input to [B, C] logits."""

    net: nn.Module
    forward: Callable[[Tensor], Tensor]
    version: str
    prepare: Callable[[Tensor], Tensor] = lambda x: x  # outside the timing (ann-TxB: repeat)
    info: dict[str, Any] = field(default_factory=dict)


def split_name(name: str) -> tuple[str, bool, bool]:
    """`BASE[+bf16][+graph]` -> (BASE, bf16, graph); `dietsnn-bf16` is `dietsnn+bf16`.
    Raises ValueError for an unknown base or modifier."""
    base, *mods = name.split("+")
    if base == "dietsnn-bf16":
        base, mods = "dietsnn", [*mods, "bf16"]
    bad = [m for m in mods if m not in MODIFIERS]
    if base not in KNOWN or bad or len(set(mods)) != len(mods):
        raise ValueError(f"unknown contender {name!r}")
    return base, "bf16" in mods, "graph" in mods


def dist_version(dist: str) -> str:
    """The installed version of the distribution `dist`, "?" where it is not installed."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def build(name: str, arch: str, T: int, device: torch.device,
          stack: contextlib.ExitStack) -> Contender:
    """The contender `name` with the initial weights of `torch.manual_seed(0); build_ann(arch)`."""
    if name in DIETSNN:
        from .dietsnn import build_dietsnn
        return build_dietsnn(name, arch, T, device, stack)
    torch.manual_seed(0)
    ann = build_ann(arch)
    if name in SJ:
        from .spikingjelly import build_spikingjelly
        return build_spikingjelly(name, ann, T, device)
    if name == "snntorch":
        from .snntorch import build_snntorch
        return build_snntorch(ann, T, device)
    if name == "norse":
        from .norse import build_norse
        return build_norse(ann, T, device)
    if name in DENSE:
        from .dense import build_ann_form
        return build_ann_form(name, ann, T, device)
    raise Skip(f"unknown contender (known: {', '.join(KNOWN)})")
