"""snnTorch: Leaky neurons, the usual per-step loop."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

import dietsnn

from . import Contender, Skip, dist_version


def build_snntorch(ann: nn.Module, T: int, device: torch.device) -> Contender:
    """snnTorch: Leaky with learn_beta and learn_threshold, subtract reset, per-step loop."""
    try:
        import snntorch as snn
        from snntorch import utils
    except ImportError as e:
        raise Skip(f"snntorch not importable: {e}") from e
    mods: list[nn.Module] = []
    for m in ann.units():
        if isinstance(m, nn.ReLU):
            mods.append(snn.Leaky(beta=0.9, learn_beta=True, learn_threshold=True,
                                  reset_mechanism="subtract", init_hidden=True))
        elif isinstance(m, dietsnn.Dropout):
            mods.append(nn.Dropout(m.p))
        else:
            mods.append(copy.deepcopy(m))
    net = nn.Sequential(*mods).to(device)

    def forward(x: Tensor) -> Tensor:
        utils.reset(net)
        return torch.stack([net(x) for _ in range(T)]).sum(0)
    return Contender(net, forward, dist_version("snntorch"))
