"""Average pooling over non-overlapping windows (kernel = stride, no padding) whose backward
keeps nothing but the input's shape: each input pixel gets 1/k^2 of its window's gradient.
(PyTorch's own average pooling saves its whole input for backward.)"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


class _AvgPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k, pool):  # type: ignore[override]
        ctx.shape, ctx.k = x.shape, k
        return pool(x, k, k)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        k, (n, c, h, w) = ctx.k, ctx.shape
        ho, wo = grad.shape[-2:]
        g = grad * (1.0 / (k * k))
        if not g.is_contiguous() and g.is_contiguous(memory_format=torch.channels_last):
            g = g.permute(0, 2, 3, 1)[:, :, None, :, None, :]  # work in NHWC, the memory order
            g = g.expand(n, ho, k, wo, k, c).reshape(n, ho * k, wo * k, c).permute(0, 3, 1, 2)
        else:
            g = g[:, :, :, None, :, None].expand(n, c, ho, k, wo, k).reshape(n, c, ho * k, wo * k)
        if (ho * k, wo * k) != (h, w):  # rows/columns the floor mode dropped get no gradient
            g = F.pad(g, (0, w - wo * k, 0, h - ho * k))
        return g, None, None


def avg_pool(x: Tensor, k: int, pool: Callable = F.avg_pool2d) -> Tensor:
    """`F.avg_pool2d(x, k, k)` for `x` of shape [N, C, H, W]; `pool` computes the forward
    (e.g. a compiled avg_pool2d)."""
    if x.dim() != 4:
        raise ValueError(f"avg_pool expects [N, C, H, W], got shape {tuple(x.shape)}")
    return _AvgPool.apply(x, k, pool)
