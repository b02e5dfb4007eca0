"""Leaky integrate-and-fire dynamics of DIET-SNN (docs/METHOD.md sections 1-2), multi-step over time.

Per step t, for one layer with scalar leak `lam` and threshold `v`:

    u~ = lam * u + x[t]          integrate (input current x)
    o  = 1 if u~ > v else 0      fire (z = u~/v - 1 > 0)
    u  = u~ - v * o              soft reset, o detached

`lif` runs the neuron operator `dietsnn::lif_forward` (`ops.py`): one forward loop with no
autograd graph and a hand-written backward (`dietsnn::lif_backward`) that keeps only the
integrated membrane u~. This module holds the plain PyTorch loops that implement the operator on
every device and dtype the native C kernels (`native_lif.c`) do not take, or under the "eager"
and "compile" engines (`engine.py`):

- `_forward_loop` with `_step_eager` / `_backward_eager`: the form that is fastest op by op;
- `_forward_loop` with `_step_traceable` / `_backward_loop`: the form torch.compile fuses into one
  kernel each.

Tests hold them equal to the C kernels and to `lif_reference`, the plain loop through autograd,
kept as the oracle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..config import GAMMA, SURROGATE
from ..errors import check_number
from . import surrogate as _surrogate


def lif_forward(
    x: Tensor, leak: Tensor | float, threshold: Tensor | float, u0: Tensor | None = None,
    keep_u_tilde: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Run the recurrence without autograd. Returns (spikes, u~ per step or None if not
    `keep_u_tilde`, final membrane), all in `x`'s layout; `u0` is the membrane at the start
    (default 0). `x` may be a time-constant view (stride 0 over time)."""
    x = x.detach()
    leak, threshold = _scalar(leak, x).detach(), _scalar(threshold, x).detach()
    flat, perm = _flat(x)
    if u0 is not None:
        u0 = u0.detach().permute([d - 1 for d in perm[1:]]).reshape(-1)
    spikes, u_tilde, u = torch.ops.dietsnn.lif_forward(flat, leak, threshold, u0, 0, keep_u_tilde,
                                                       GAMMA, SURROGATE)
    return (_unflat(spikes, x, perm), _unflat(u_tilde, x, perm) if keep_u_tilde else None,
            _unflat(u.unsqueeze(0), x[:1], perm)[0])


def _flat(x: Tensor) -> tuple[Tensor, list[int]]:
    """`[T, ...]` as `[T, N]`, the non-time dims taken in memory order: a view for contiguous and
    channels-last tensors. Returns the view and the dim order."""
    perm = [0, *sorted(range(1, x.dim()), key=lambda d: -x.stride(d))]
    return x.permute(perm).reshape(x.shape[0], -1), perm


def _unflat(flat: Tensor, like: Tensor, perm: list[int]) -> Tensor:
    """Inverse of `_flat`: `[T, N]` back to `like`'s shape (and memory order)."""
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    return flat.view([flat.shape[0], *(like.shape[d] for d in perm[1:])]).permute(inverse)


def _forward_loop(x: Tensor, leak: Tensor, v: Tensor, u0: Tensor | None, keep_u_tilde: bool,
                  step=None):
    """The recurrence over `[T, N]`, one `step` per time step into preallocated outputs."""
    step = step or _step_eager
    spikes = x.new_empty(x.shape)
    u_tilde = x.new_empty(x.shape) if keep_u_tilde else None
    scratch = None if keep_u_tilde else x.new_empty(x.shape[1:])
    u = torch.zeros_like(x[0]) if u0 is None else u0.clone()
    for t in range(x.shape[0]):
        step(x[t], u, leak, v, u_tilde[t] if keep_u_tilde else scratch, spikes[t])
    return spikes, u_tilde, u


def _step_eager(x: Tensor, u: Tensor, leak: Tensor, v: Tensor, ut: Tensor, o: Tensor) -> None:
    """One step in place, three passes over memory: u~ -> `ut`, spikes -> `o`, `u` updated."""
    torch.addcmul(x, u, leak, out=ut)  # u~ = x + leak * u
    torch.gt(ut, v, out=o)
    torch.addcmul(ut, o, v, value=-1, out=u)  # u = u~ - v * o


def _step_traceable(x: Tensor, u: Tensor, leak: Tensor, v: Tensor, ut: Tensor, o: Tensor) -> None:
    """`_step_eager` in the form torch.compile turns into one kernel (it does not take `out=`).
    Compiled per step, not per sequence, so that no length of time triggers a recompile."""
    u_tilde = x + leak * u
    fired = (u_tilde > v).to(x.dtype)
    ut.copy_(u_tilde)
    o.copy_(fired)
    u.copy_(u_tilde - fired * v)


def _backward_eager(u_tilde: Tensor, grad: Tensor, leak: Tensor, v: Tensor, gamma: float,
                    surrogate: str, reduce_time: bool = False):
    """`_backward_loop` for eager mode: everything but the recurrence of dL/du~ vectorised
    over all steps at once, sums as dot products (fastest op by op)."""
    inv_v = 1.0 / v
    gs = _surrogate.get(surrogate)(u_tilde * inv_v - 1.0, gamma).mul_(grad)  # dL/dz, [T, N]
    d = gs * inv_v  # dL/du~ once the later steps are added
    T = d.shape[0]
    for t in range(T - 2, -1, -1):
        d[t].addcmul_(d[t + 1], leak)
    g_v = -torch.dot(gs.reshape(-1), u_tilde.reshape(-1)) * inv_v * inv_v
    g_leak = torch.zeros((), dtype=d.dtype, device=d.device)
    if T > 1:  # through the membrane carried to the next step, u = u~ - v * H(u~ - v)
        later, earlier = d[1:].reshape(-1), u_tilde[:-1].reshape(-1)
        fired = torch.dot(later, (earlier > v).to(d.dtype))
        g_v = g_v - leak * fired
        g_leak = torch.dot(later, earlier) - v * fired
    return d.sum(0) if reduce_time else d, g_leak, g_v


def _backward_loop(u_tilde: Tensor, grad: Tensor, leak: Tensor, v: Tensor, gamma: float,
                   surrogate: str, steps: int = 0):
    """BPTT of `_forward_loop`: returns dL/dx, dL/dleak, dL/dv given dL/dspikes (METHOD 2).
    With `steps`, `u_tilde` is instead the input current `[N]` that was the same at each of
    `steps` steps: u~ is recomputed here and dL/dx summed over the steps. Written for
    torch.compile, which fuses all steps, recomputation included, into one kernel (compiled per
    T: only training runs it, at one T)."""
    sg = _surrogate.get(surrogate)
    inv_v = 1.0 / v
    if steps:
        x, u, u_tilde = u_tilde, torch.zeros_like(u_tilde), []
        for _ in range(steps):
            u_tilde.append(x + leak * u)
            u = u_tilde[-1] - (u_tilde[-1] > v).to(x.dtype) * v
    grad_x = []
    g_leak = torch.zeros((), dtype=u_tilde[0].dtype, device=u_tilde[0].device)
    g_v = torch.zeros((), dtype=u_tilde[0].dtype, device=u_tilde[0].device)
    d = torch.zeros_like(u_tilde[0])  # dL/du~ at step t+1
    T = len(u_tilde)
    for t in range(T - 1, -1, -1):
        ut = u_tilde[t]
        gs = grad[t] * sg(ut * inv_v - 1.0, gamma)  # dL/dz through the spike
        a = d * leak  # dL/du_t: membrane after the reset, into step t+1
        d = a + gs * inv_v
        g_v = g_v - (a * (ut > v)).sum() - (gs * ut).sum() * inv_v * inv_v
        if t > 0:
            prev = u_tilde[t - 1]
            g_leak = g_leak + (d * (prev - v * (prev > v))).sum()
        grad_x.append(d)
    if steps:
        return sum(grad_x), g_leak, g_v
    grad_x.reverse()
    return torch.stack(grad_x), g_leak, g_v


_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _repeat(x: Tensor, steps: int) -> Tensor:
    return x.unsqueeze(0).expand(steps, *x.shape)  # a view: no copy


def _scalar(value: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _check_scalar(name: str, v: Tensor | float, hi: float) -> None:
    """A ValueError/TypeError for a leak or threshold out of range, checked where that costs no
    device sync: Python numbers and 0-dim CPU tensors (not while traced: compile, export)."""
    if isinstance(v, Tensor):
        if v.dim() or v.device.type != "cpu" or torch.compiler.is_compiling():
            return
        v = float(v.detach())
    check_number(name, v, 0.0, hi)


def lif(
    x: Tensor,
    leak: Tensor | float,
    threshold: Tensor | float,
    gamma: float = GAMMA,
    surrogate: str = SURROGATE,
    steps: int | None = None,
) -> Tensor:
    """DIET-SNN LIF over time. `x`: input current `[T, ...]`, or with `steps` one step's current
    `[...]` that is the same at each of `steps` steps (direct encoding: the first layer runs once).
    Returns spikes `[T, ...]` (0/1, x's dtype).

    Differentiable in `x`, `leak` and `threshold` (0-dim tensors) with the surrogate `surrogate`
    scaled by `gamma` (docs/METHOD.md section 2). Integrate-then-fire in the same step, soft reset.
    Runs the operator `dietsnn::lif_forward` (`ops.py`) on the engine in effect. A bfloat16/float16
    `x` (as under autocast) is integrated in float32, with float32 leak and threshold; the spikes
    come back in `x`'s dtype, exactly. With autograd on, u~ (or with `steps` the one current) is
    kept for backward; without, nothing.
    """
    _check_scalar("leak", leak, 1.0)  # leak in (0, 1], threshold > 0, both finite
    _check_scalar("threshold", threshold, math.inf)
    if x.dim() < 1:
        raise ValueError("lif expects x with time first, shape [T, ...]")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _surrogate.get(surrogate)
    out_dtype = x.dtype
    if x.dtype in _LOW_PRECISION:  # bf16/fp16 input (autocast): the membrane runs in float32
        x = x.float()
    leak, threshold = _scalar(leak, x), _scalar(threshold, x)
    grad = torch.is_grad_enabled() and (x.requires_grad or leak.requires_grad
                                        or threshold.requires_grad)
    like = x if steps is None else _repeat(x, steps)
    # elementwise in the neurons: one [T, N] layout in memory order serves every layer and every
    # memory format (channels-last included) without a copy
    flat, perm = _flat(like)
    spikes = torch.ops.dietsnn.lif_forward(flat if steps is None else flat[0], leak, threshold,
                                           None, steps or 0, grad and steps is None, gamma,
                                           surrogate)[0]
    return _unflat(spikes, like, perm).to(out_dtype)  # spikes are 0 or 1: exact in any dtype


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, gamma, surrogate_name):  # type: ignore[override]
        ctx.save_for_backward(z)
        ctx.gamma, ctx.surrogate = gamma, surrogate_name
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return grad * _surrogate.get(ctx.surrogate)(z, ctx.gamma), None, None


def spike(z: Tensor, gamma: float = GAMMA, surrogate: str = SURROGATE) -> Tensor:
    """Heaviside step H(z) in forward, surrogate derivative in backward."""
    return _Spike.apply(z, gamma, surrogate)


def lif_reference(
    x: Tensor,
    leak: Tensor | float,
    threshold: Tensor | float,
    gamma: float = GAMMA,
    surrogate: str = SURROGATE,
) -> Tensor:
    """The same dynamics as `lif`, written as the plain per-step loop through autograd."""
    leak, threshold = _scalar(leak, x), _scalar(threshold, x)
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        u_tilde = leak * u + x[t]
        o = spike(u_tilde / threshold - 1.0, gamma, surrogate)
        u = u_tilde - threshold * o.detach()
        out.append(o)
    return torch.stack(out)
