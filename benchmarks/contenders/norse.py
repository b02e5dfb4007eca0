"""Norse: LIFBoxCell neurons, per-step loop."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

import dietsnn

from . import Contender, Skip, dist_version


def build_norse(ann: nn.Module, T: int, device: torch.device) -> Contender:
    """Norse: LIFBoxCell (no synaptic current) with learned tau_mem_inv (dt=1, 0.5 at first:
    SpikingJelly's tau=2) and threshold, subtract reset, SuperSpike surrogate, per-step loop."""
    try:
        from norse.torch import LIFBoxCell, LIFBoxParameters
        from norse.torch.functional.reset import reset_subtract
    except ImportError as e:
        raise Skip(f"norse not importable: {e} (setup_peers.sh installs it with nir, nirtorch)"
                   ) from e

    class NorseLIF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tau_mem_inv = nn.Parameter(torch.tensor(0.5))
            self.v_th = nn.Parameter(torch.tensor(1.0))
            p = LIFBoxParameters(tau_mem_inv=self.tau_mem_inv, v_th=self.v_th,
                                 reset_method=reset_subtract)
            self.cell = LIFBoxCell(p, dt=1.0)
            self.state: Any = None

        def forward(self, x: Tensor) -> Tensor:
            z, self.state = self.cell(x, self.state)
            return z

    mods: list[nn.Module] = []
    for m in ann.units():
        if isinstance(m, nn.ReLU):
            mods.append(NorseLIF())
        elif isinstance(m, dietsnn.Dropout):
            mods.append(nn.Dropout(m.p))
        else:
            mods.append(copy.deepcopy(m))
    net = nn.Sequential(*mods).to(device)
    lifs = [m for m in net if isinstance(m, NorseLIF)]

    def forward(x: Tensor) -> Tensor:
        for m in lifs:
            m.state = None
        out = net(x)
        for _ in range(T - 1):
            out = out + net(x)
        return out
    return Contender(net, forward, dist_version("norse"))
