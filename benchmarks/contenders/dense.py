"""The dense limits: the same layers as an ANN (ReLU), on the T*B images (`ann-TxB`) or on the
B images T times (`ann-BxT`)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from . import C, Contender


def build_ann_form(name: str, ann: nn.Module, T: int, device: torch.device) -> Contender:
    net = copy.deepcopy(ann).to(device)
    if name == "ann-TxB":
        def forward(xt: Tensor) -> Tensor:
            return net(xt).view(T, -1, C).sum(0)
        return Contender(net, forward, torch.__version__,
                         prepare=lambda x: x.repeat(T, *([1] * (x.dim() - 1))))

    def forward_bt(x: Tensor) -> Tensor:
        out = net(x)
        for _ in range(T - 1):
            out = out + net(x)
        return out
    return Contender(net, forward_bt, torch.__version__)
