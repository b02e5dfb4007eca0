"""Layers over the functional core: the LIF layer, a dropout with one mask over time, a lean
average pooling, and a `Sequential` that runs "LIF, dropout, pooling" as one native operation.

Time convention inside a network running as an SNN: tensors are time-major and folded into the
batch, `[T*B, ...]`. A tensor of batch `B` (not folded) is constant over time: that is how direct
encoding runs the first layer once per image. The network sets `timesteps` and `batch` on these
modules before each forward (`set_time`).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from . import compact
from .config import GAMMA, SURROGATE
from .functional import lif, ops
from .functional.dropout import draw_seed, keep_mask
from .functional.neuron import _LOW_PRECISION, spike

MIN_LEAK = 1e-3
MIN_THRESHOLD = 1e-4

_LIVE: weakref.WeakSet = weakref.WeakSet()  # every LIF layer (for `clamp_after_step`)


def clamp_after_step(optimizer: torch.optim.Optimizer, args=None, kwargs=None) -> None:
    """Clamp into range the leaks and thresholds of LIF layers that `optimizer` updates (the
    projection of `LIF.constrain_`); a `torch.optim` post-step hook (`dietsnn.use_engine`
    installs it while its block runs)."""
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for m in list(_LIVE):
        if id(m.leak) in params or id(m.threshold) in params:
            m.constrain_()


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
    section 1). Inside a converted network it runs in the network's time context (`[T*B, ...]`);
    on its own it takes time-major input `[T, B, ...]` and returns spikes `[T, B, ...]`."""

    def __init__(
        self,
        leak: float = 1.0,
        threshold: float = 1.0,
        gamma: float = GAMMA,
        surrogate: str = SURROGATE,
    ) -> None:
        super().__init__()
        self.leak = nn.Parameter(torch.tensor(float(leak)))
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))
        self.gamma = gamma
        self.surrogate = surrogate
        # where a `monitor.SpikeCounter` collects (fired at each step [T], neurons, images) per
        # forward, or None
        self.tally: list | None = None
        _LIVE.add(self)

    def __setstate__(self, state: dict) -> None:  # copy.deepcopy, pickle
        super().__setstate__(state)
        _LIVE.add(self)

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None:  # on its own: [T, B, ...] in, [T, B, ...] out
            if x.dim() < 2:
                raise ValueError(f"LIF expects time-major input [T, B, ...], got shape "
                                 f"{tuple(x.shape)}")
            return self.count(lif(x, self.leak, self.threshold, self.gamma, self.surrogate))
        if self.is_static(x):  # direct encoding's first layer: the input current enters once
            out = lif(x, self.leak, self.threshold, self.gamma, self.surrogate, self.timesteps)
        else:
            out = lif(self.unfold(x), self.leak, self.threshold, self.gamma, self.surrogate)
        return compact.mark(self.count(out).flatten(0, 1))

    def count(self, spikes: Tensor) -> Tensor:
        """Tally `spikes` `[T, B, ...]` if a `SpikeCounter` is active; returns them."""
        if self.tally is not None:
            self.tally.append((spikes.reshape(len(spikes), -1).sum(1, dtype=torch.float64),
                               spikes[0, 0].numel(), spikes.shape[1]))
        return spikes

    def fused_forward(self, x: Tensor, following: list[nn.Module]) -> tuple[Tensor, int] | None:
        """This LIF and the `Dropout` and/or `AvgPool2d` right after it as one native operation
        (no spike tensor is stored; see `Sequential`). Returns (output, how many of
        `following` it ran), or None where the layers must run one by one: an engine other than
        the native one, not a float32, bfloat16 or float16 NCHW current on the CPU, hooks on any
        of the layers, pooling other than k x k windows at stride k. The output, the random
        numbers drawn and the saved tensors' marks are those of the layers run one by one. The
        block runs the operator `dietsnn::lif_pool_forward` (functional/ops.py); a
        bfloat16/float16 current (under autocast) is integrated in float32, as `lif` does, and
        the block's output is cast back to the current's dtype."""
        drop = following[0] if following and isinstance(following[0], Dropout) else None
        rest = following[1:] if drop is not None else following
        pool = rest[0] if rest and isinstance(rest[0], nn.AvgPool2d) else None
        if self.timesteps is None or (drop is None and pool is None):
            return None
        low = x.dtype in _LOW_PRECISION  # autocast: the block runs in float32, as `lif` does
        kern = ops.kernels(x.new_empty(0, dtype=torch.float32) if low else x)
        if kern is None or not _no_hooks(self, drop, pool):
            return None
        if self.tally is not None and kern is not ops.native:  # counted in the C kernel only
            return None
        k = 1
        if pool is not None:
            k, stride, pad = (_square(v) for v in (pool.kernel_size, pool.stride, pool.padding))
            if not (k is not None and k == stride and pad == 0 and not pool.ceil_mode
                    and pool.divisor_override is None):
                return None
        if x.dim() == 2 and k == 1:
            x4 = x[:, :, None, None]
        elif x.dim() == 4 and x.is_contiguous() and x.shape[-1] >= k and x.shape[-2] >= k:
            x4 = x
        else:
            return None
        T, static = self.timesteps, self.is_static(x)
        B = x.shape[0] if static else self.batch
        x4 = x4.float() if low else x4
        keep, scale = None, 1.0
        active = drop is not None and drop.training and drop.p > 0.0
        if active and drop.timesteps is None:  # not in the network's time context: its own way
            return None
        if active:  # the mask Dropout draws: one [B, ...] per batch, like its input step
            keep_p = 1.0 - drop.p
            keep = keep_mask((B, *x.shape[1:]), drop.p, x.device)
            keep = keep.view(B, *x4.shape[1:])
            scale = 1.0 / keep_p
        grad = torch.is_grad_enabled() and (x.requires_grad or self.leak.requires_grad
                                            or self.threshold.requires_grad)
        out, _, fired = torch.ops.dietsnn.lif_pool_forward(
            x4, self.leak, self.threshold, keep, scale, k, T, static, grad and not static,
            self.gamma, self.surrogate, self.tally is not None)
        if self.tally is not None:
            self.tally.append((fired, x4[0].numel(), B))
        if x.dim() == 2:
            out = out.view(out.shape[0], -1)
        out = out.to(x.dtype)
        if k == 1:  # dropped-out spikes: saved as bool by the next layer, like the unfused ones
            out = compact.mark(out, torch.tensor(scale, dtype=x.dtype) if active else None)
        used = (drop is not None) + (pool is not None)
        return out, used

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


class HardResetLIF(LIF):
    """A LIF layer with NIR's reset: after a spike the membrane is set to zero, `u <- u~ (1 -
    o)`, instead of reduced by the threshold. Integrate-then-fire in the same step, spike when
    `u~ > threshold`, learned leak and threshold and the surrogate gradient as in `LIF`."""

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None:
            raise RuntimeError("LIF needs the network's time context; call it through the SNN")
        xs = self.unfold(x)
        u, out = torch.zeros_like(xs[0]), []
        for t in range(xs.shape[0]):
            u_tilde = self.leak * u + xs[t]
            o = spike(u_tilde / self.threshold - 1.0, self.gamma, self.surrogate)
            u = u_tilde * (1.0 - o.detach())
            out.append(o)
        return self.count(torch.stack(out)).flatten(0, 1)

    def fused_forward(self, x: Tensor, following: list[nn.Module]) -> None:
        return None  # no native kernel for this reset: the layers run one by one


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
        if self.timesteps is None:  # an ANN: a mask per element, made and applied in one pass
            return torch.ops.dietsnn.dropout(x, self.p, draw_seed())
        scale = torch.tensor(1.0 / (1.0 - self.p), dtype=x.dtype, device=x.device)
        # an SNN: one mask per sample, values exactly 0 or scale
        mask = keep_mask(x[: self.batch].shape, self.p, x.device).to(x.dtype) * scale
        mask = compact.mark(mask, scale)
        if x.shape[0] == self.batch:
            out = x * mask
        else:
            out = (self.unfold(x) * mask).flatten(0, 1)
        return compact.mark(out, scale) if compact.is_spikes(x) else out

    def relu_forward(self, x: Tensor, relu: nn.Module) -> Tensor | None:
        """`self(relu(x))` as one operation (`dietsnn::dropout` with relu: one pass, and the
        backward needs only the output) where that is the same as the two layers one by one:
        an ANN in training, no hooks on either; else None."""
        if (not self.training or self.p == 0.0 or self.timesteps is not None
                or type(relu) is not nn.ReLU or not _no_hooks(self, relu)):
            return None
        return torch.ops.dietsnn.dropout(x, self.p, draw_seed(), True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class AvgPool2d(nn.AvgPool2d):
    """Average pooling that keeps nothing for backward when windows do not overlap (the
    architectures' 2x2 pooling): the operator `dietsnn::avg_pool2d` (native kernels for
    float32 and bfloat16 on the CPU under the native engine). Traced (torch.compile,
    torch.export), it is `nn.AvgPool2d`."""

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.stride
        if (isinstance(k, int) and k == s and self.padding == 0 and not self.ceil_mode
                and x.dim() == 4 and not torch.compiler.is_compiling()):
            return torch.ops.dietsnn.avg_pool2d(x, k)
        return super().forward(x)


def _square(v) -> int | None:
    """`v` of a 2-d pooling argument as one int where both sides agree (None otherwise)."""
    if isinstance(v, (tuple, list)):
        return v[0] if len(v) == 2 and v[0] == v[1] and isinstance(v[0], int) else None
    return v if isinstance(v, int) else None


def _no_hooks(*mods: nn.Module | None) -> bool:
    """Whether no forward/backward hook (global or on `mods`) would observe the layers."""
    from torch.nn.modules import module as _m

    if (_m._global_forward_hooks or _m._global_forward_pre_hooks or _m._global_backward_hooks
            or _m._global_backward_pre_hooks):
        return False
    return not any(m is not None and (m._forward_hooks or m._forward_pre_hooks
                                      or m._backward_hooks or m._backward_pre_hooks)
                   for m in mods)


class Sequential(nn.Sequential):
    """`nn.Sequential` (same state_dict, same results) that, in an SNN on the CPU, runs each
    LIF layer together with the `Dropout` and `AvgPool2d` right after it as one native
    operation (`LIF.fused_forward`): the spikes and the dropped-out spikes of that block are
    never stored, which saves memory and two passes over it in forward and in backward. In an
    ANN in training, a ReLU and the `Dropout` after it are one operation likewise
    (`Dropout.relu_forward`). The layers run one by one wherever that is not possible, and
    whenever a hook is registered on any of them (so hooks see exactly what they would see
    without fusion)."""

    def forward(self, x: Tensor) -> Tensor:
        mods = list(self._modules.values())
        i = 0
        while i < len(mods):
            m, nxt = mods[i], mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(m, LIF):
                following = fusable(mods[i + 1:i + 3])
                x = lif_block(x, m, *following)
                i += 1 + len(following)
            elif isinstance(nxt, Dropout) and (y := nxt.relu_forward(x, m)) is not None:
                x = y
                i += 2
            else:
                x = m(x)
                i += 1
        return x


def fusable(mods: list[nn.Module]) -> list[nn.Module]:
    """The layers of `mods` (those right after a LIF) that `lif_block` may take: a `Dropout`
    and/or an average pooling, in that order."""
    out = []
    for m in mods:
        if isinstance(m, Dropout) and not out or isinstance(m, nn.AvgPool2d):
            out.append(m)
            if isinstance(m, nn.AvgPool2d):
                break
        else:
            break
    return out


def lif_block(x: Tensor, lif: LIF, *following: nn.Module) -> Tensor:
    """`lif` then `following` (a `Dropout` and/or an average pooling), as one native operation
    where `LIF.fused_forward` can run them so, else one by one (hooks then see every layer;
    so do layers swapped in since, e.g. a ReLU for the LIF)."""
    fused = lif.fused_forward(x, list(following)) if isinstance(lif, LIF) else None
    if fused is None:
        x, rest = lif(x), following
    else:
        x, used = fused
        rest = following[used:]
    for m in rest:
        x = m(x)
    return x


def set_time(model: nn.Module, timesteps: int | None, batch: int | None) -> None:
    for m in model.modules():
        if isinstance(m, Temporal):
            m.timesteps, m.batch = timesteps, batch


def lif_layers(model: nn.Module) -> list[tuple[str, LIF]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]


def constrain_(model: nn.Module) -> None:
    """Clamp every LIF layer's leak into [MIN_LEAK, 1] and threshold to >= MIN_THRESHOLD (call
    after each optimiser step of a training loop outside `dietsnn.use_engine`)."""
    for _, m in lif_layers(model):
        m.constrain_()
