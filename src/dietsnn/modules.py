"""Thin modules over the functional core: the LIF layer and a dropout with one mask over time.

Time convention inside a network running as an SNN: tensors are time-major and folded into the
batch, `[T*B, ...]`. A tensor of batch `B` (not folded) is constant over time: that is how direct
encoding runs the first layer once per image. The network sets `timesteps` and `batch` on these
modules before each forward (`set_time`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import lif, neuron

MIN_LEAK = 1e-3
MIN_THRESHOLD = 1e-4


class Temporal(nn.Module):
    """Mixin state: how many steps and which batch size the current forward runs with."""

    timesteps: int | None = None
    batch: int | None = None

    def unfold(self, x: Tensor) -> Tensor:
        """View `x` as `[T, B, ...]`; a static `[B, ...]` input is broadcast over time."""
        T, B = self.timesteps, self.batch
        if x.shape[0] == T * B:
            return x.view(T, B, *x.shape[1:])
        if x.shape[0] == B:
            return x.unsqueeze(0).expand(T, *x.shape)
        raise RuntimeError(f"batch {x.shape[0]} is neither B={B} nor T*B={T * B}")


class LIF(Temporal):
    """Leaky integrate-and-fire layer with one learned leak and one learned threshold (SPEC 1)."""

    def __init__(
        self,
        leak: float = 1.0,
        threshold: float = 1.0,
        gamma: float = 0.3,
        surrogate: str = "linear",
    ) -> None:
        super().__init__()
        self.leak = nn.Parameter(torch.tensor(float(leak)))
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.gamma = gamma
        self.surrogate = surrogate

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None:
            raise RuntimeError("LIF needs the network's time context; call it through the SNN")
        return lif(self.unfold(x), self.leak, self.threshold, self.gamma, self.surrogate).flatten(0, 1)

    @torch.no_grad()
    def constrain_(self) -> None:
        """Project back into 0 < leak <= 1, threshold > 0 (call after each optimiser step)."""
        self.leak.clamp_(MIN_LEAK, 1.0)
        self.threshold.clamp_(min=MIN_THRESHOLD)

    def extra_repr(self) -> str:
        return (
            f"leak={self.leak.item():.4f}, threshold={self.threshold.item():.4f}, "
            f"gamma={self.gamma}, surrogate={self.surrogate}"
        )


class Dropout(Temporal):
    """Dropout; in an SNN one mask per sample, drawn once per batch and reused at every step."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.timesteps is None:
            return F.dropout(x, self.p, True)
        keep = 1.0 - self.p
        shape = (self.batch, *x.shape[1:])
        # rand < keep is about twice as fast as bernoulli_ on CPU
        mask = (torch.rand(shape, device=x.device) < keep).to(x.dtype).div_(keep)
        if x.shape[0] == self.batch:
            return x * mask
        return (self.unfold(x) * mask).flatten(0, 1)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AvgPool2d(nn.AvgPool2d):
    """Average pooling; under the neuron core's compile backend it runs through torch.compile
    (forward plus backward about twice as fast as the eager kernel on CPU)."""

    def forward(self, x: Tensor) -> Tensor:
        if neuron.get_backend() == "compile":
            return _compiled_pool()(x, self.kernel_size, self.stride)
        return super().forward(x)


_POOL: list = []


def _compiled_pool():
    if not _POOL:
        _POOL.append(torch.compile(F.avg_pool2d, dynamic=True))
    return _POOL[0]


def set_time(model: nn.Module, timesteps: int | None, batch: int | None) -> None:
    for m in model.modules():
        if isinstance(m, Temporal):
            m.timesteps, m.batch = timesteps, batch


def lif_layers(model: nn.Module) -> list[tuple[str, LIF]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]


def constrain_(model: nn.Module) -> None:
    for _, m in lif_layers(model):
        m.constrain_()
