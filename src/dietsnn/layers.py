"""Layers over the functional core: the LIF layer, a dropout with one mask over time and a
lean average pooling.

Time convention inside a network running as an SNN: tensors are time-major and folded into the
batch, `[T*B, ...]`. A tensor of batch `B` (not folded) is constant over time: that is how direct
encoding runs the first layer once per image. The network sets `timesteps` and `batch` on these
modules before each forward (`set_time`).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from . import compact
from .config import GAMMA, SURROGATE
from .functional import lif, native, neuron
from .functional.pool import avg_pool

MIN_LEAK = 1e-3
MIN_THRESHOLD = 1e-4

# id of the leak and threshold parameter of every LIF -> (weak reference, (low, high) bounds)
_BOUNDED: dict[int, tuple[weakref.ref, tuple[float, float | None]]] = {}
_HOOK: list = []


def _bounds(p: Tensor) -> tuple[float, float | None] | None:
    entry = _BOUNDED.get(id(p))
    return entry[1] if entry is not None and entry[0]() is p else None


def _bound(p: Tensor, low: float, high: float | None) -> None:
    key = id(p)
    _BOUNDED[key] = (weakref.ref(p, lambda _: _BOUNDED.pop(key, None)), (low, high))


def _project_after_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After any optimiser's step: clamp the leaks and thresholds it updated into range."""
    with torch.no_grad():
        for group in optimizer.param_groups:
            for p in group["params"]:
                bounds = _bounds(p)
                if bounds is not None:
                    p.clamp_(*bounds)


def _watch(lif: LIF) -> None:
    """Keep `lif`'s leak in [MIN_LEAK, 1] and threshold >= MIN_THRESHOLD under any optimiser:
    one global post-step hook projects them back after each `optimizer.step()` (the same
    projection as `constrain_`, so dietsnn's own training is unchanged)."""
    if not _HOOK:
        _HOOK.append(register_optimizer_step_post_hook(_project_after_step))
    _bound(lif.leak, MIN_LEAK, 1.0)
    _bound(lif.threshold, MIN_THRESHOLD, None)


class Temporal(nn.Module):
    """Mixin state: how many steps and which batch size the current forward runs with."""

    timesteps: int | None = None
    batch: int | None = None

    def is_static(self, x: Tensor) -> bool:
        """Whether `x` is `[B, ...]`, the same at every step (not folded `[T*B, ...]`)."""
        return x.shape[0] == self.batch and x.shape[0] != self.timesteps * self.batch

    def unfold(self, x: Tensor) -> Tensor:
        """View `x` as `[T, B, ...]`; a static `[B, ...]` input is broadcast over time."""
        T, B = self.timesteps, self.batch
        if self.is_static(x):
            return x.unsqueeze(0).expand(T, *x.shape)
        if x.shape[0] == T * B:
            return x.view(T, B, *x.shape[1:])
        raise RuntimeError(f"batch {x.shape[0]} is neither B={B} nor T*B={T * B}")


class LIF(Temporal):
    """Leaky integrate-and-fire layer with one learned leak and one learned threshold (docs/METHOD.md
    section 1)."""

    def __init__(
        self,
        leak: float = 1.0,
        threshold: float = 1.0,
        gamma: float = GAMMA,
        surrogate: str = SURROGATE,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        self.leak = nn.Parameter(torch.tensor(float(leak)))
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.gamma = gamma
        self.surrogate = surrogate
        self.backend = backend  # one of neuron.BACKENDS, or None: neuron.get_backend() at each call
        _watch(self)

    def __setstate__(self, state: dict) -> None:  # copy.deepcopy, pickle
        super().__setstate__(state)
        _watch(self)

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None:
            raise RuntimeError("LIF needs the network's time context; call it through the SNN")
        if _bounds(self.leak) is None or _bounds(self.threshold) is None:  # copied or replaced
            _watch(self)
        if self.is_static(x):  # direct encoding's first layer: the input current enters once
            out = lif(x, self.leak, self.threshold, self.gamma, self.surrogate, self.timesteps,
                      self.backend)
        else:
            out = lif(self.unfold(x), self.leak, self.threshold, self.gamma, self.surrogate,
                      backend=self.backend)
        return compact.mark(out.flatten(0, 1))

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
        scale = torch.tensor(1.0 / keep, dtype=x.dtype, device=x.device)
        # rand < keep is about twice as fast as bernoulli_ on CPU; values exactly 0 or scale;
        # x's memory format (channels-last or not)
        mask = compact.mark((torch.rand_like(x[: self.batch]) < keep).to(x.dtype) * scale, scale)
        if x.shape[0] == self.batch:
            out = x * mask
        else:
            out = (self.unfold(x) * mask).flatten(0, 1)
        return compact.mark(out, scale) if compact.is_spikes(x) else out

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AvgPool2d(nn.AvgPool2d):
    """Average pooling that keeps nothing for backward when windows do not overlap (the
    architectures' 2x2 pooling); its forward runs in the neuron backend in effect
    (`neuron.get_backend()`): the native kernel or torch.compile, both faster than PyTorch's
    own CPU kernel."""

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.stride
        if (isinstance(k, int) and k == s and self.padding == 0 and not self.ceil_mode
                and x.dim() == 4):
            backend = neuron.get_backend(x.device.type)
            if backend == "native" and native.supports(x):
                pool = _native_pool
            else:
                pool = _compiled_pool() if backend == "compile" else F.avg_pool2d
            return avg_pool(x, k, pool)
        return super().forward(x)


_POOL: list = []


def _native_pool(x: Tensor, k: int, stride: int) -> Tensor:
    return native.avg_pool2d(x, k)


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
