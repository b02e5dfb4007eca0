"""Leaky integrate-and-fire dynamics of DIET-SNN (docs/METHOD.md sections 1-2), multi-step over time.

Per step t, for one layer with scalar leak `lam` and threshold `v`:

    u~ = lam * u + x[t]          integrate (input current x)
    o  = 1 if u~ > v else 0      fire (z = u~/v - 1 > 0)
    u  = u~ - v * o              soft reset, o detached

`lif` is the fused operation: one forward loop with no autograd graph and a hand-written backward
that keeps only the integrated membrane u~ (spikes are recomputed from it). Three backends run it:

- "native": C kernels (`native.c`, built once per machine, loaded with ctypes) that run the whole
  recurrence over time, and the whole BPTT, in one pass over memory per layer; float32 on the
  CPU, the default there wherever a C compiler is found;
- "eager": PyTorch ops, `_step_eager`/`_backward_eager` in the form that is fastest op by op
  (any device and dtype; the default on GPUs and without a compiler, and the fallback for
  what the native kernels do not take, e.g. float64);
- "compile": `_step_traceable`/`_backward_loop` in the form torch.compile fuses into one kernel
  each.

Tests hold them equal. `lif_reference` is the plain loop through autograd, kept as the oracle
for tests.
"""

from __future__ import annotations

import functools
import math
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from ..errors import check_number
from . import native
from . import surrogate as _surrogate


def lif_forward(
    x: Tensor, leak: Tensor, threshold: Tensor, u0: Tensor | None = None,
    keep_u_tilde: bool = True, backend: str | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Run the recurrence without autograd. Returns (spikes, u~ per step or None if not
    `keep_u_tilde`, final membrane). `x` may be a time-constant view (stride 0 over time)."""
    backend = resolve_backend(backend, x.device.type)
    step = _compiled("step") if backend == "compile" else _step_eager
    # elementwise in the neurons: one [T, N] layout in memory order serves every layer (one
    # compiled graph) and every memory format (channels-last included) without a copy
    flat, perm = _flat(x)
    flat = flat.detach()  # not a view: views add guards (and recompiles) on their bases
    if u0 is not None:
        u0 = u0.permute([d - 1 for d in perm[1:]]).reshape(-1).detach()
    if backend == "native" and native.supports(flat):
        spikes, u_tilde, u = native.lif_forward(flat, leak.detach(), threshold.detach(), u0,
                                                keep_u_tilde)
    else:
        spikes, u_tilde, u = _forward_loop(flat, leak.detach(), threshold.detach(), u0,
                                           keep_u_tilde, step)
    return (_unflat(spikes, x, perm), None if u_tilde is None else _unflat(u_tilde, x, perm),
            _unflat(u.unsqueeze(0), x[:1], perm)[0])


def _flat(x: Tensor, like: Tensor | None = None) -> tuple[Tensor, list[int]]:
    """`[T, ...]` as `[T, N]`, the non-time dims taken in the memory order of `like` (default
    `x`): a view for contiguous and channels-last tensors. Returns the view and the dim order."""
    ref = x if like is None else like
    perm = [0, *sorted(range(1, ref.dim()), key=lambda d: -ref.stride(d))]
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


BACKENDS = ("native", "eager", "compile")
_LOW_PRECISION = (torch.bfloat16, torch.float16)
_SCOPED: ContextVar[str | None] = ContextVar("dietsnn_neuron_backend", default=None)
_COMPILED: dict[str, object] = {}
_COMPILE_FAILED: list[str] = []  # why compiling failed in this process, once it has


def has_compiler() -> bool:
    """Whether a C compiler is on the PATH (the native kernels and torch.compile's CPU backend
    need one)."""
    return any(shutil.which(c) for c in ("cc", "gcc", "clang", "g++"))


@functools.cache
def automatic_backend(device_type: str = "cpu") -> str:
    """The default, decided once per process and device type. On the CPU "native" (the C
    kernels, built on first use in about a second, then loaded from a cache) where they
    build, "eager" otherwise. On GPUs "eager": there the per-step kernels are small and
    launch-bound, and the compiled step measured slower (docs/BENCHMARKS.md)."""
    if device_type != "cpu":
        return "eager"
    return "native" if native.available() else "eager"


def get_backend(device_type: str = "cpu") -> str:
    """The backend in effect here: the innermost `use_backend` block's, else automatic."""
    return _SCOPED.get() or automatic_backend(device_type)


def resolve_backend(backend: str | None, device_type: str = "cpu") -> str:
    if backend is None:
        return get_backend(device_type)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


@contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Run the neuron loops inside the block with `backend` (one of `BACKENDS`); the
    previous choice is restored on exit. Per call, `lif(..., backend=...)` and a LIF layer's
    `backend` attribute take precedence."""
    token = _SCOPED.set(resolve_backend(backend))
    try:
        yield
    finally:
        _SCOPED.reset(token)


def _compiled(which: str):
    """The compiled step or backward. Should compiling fail (no working inductor or compiler),
    the same function runs uncompiled from then on in this process, with one warning."""
    if which not in _COMPILED:
        # the backward is compiled per T (and per input kind): room for a sweep of training
        # lengths in one process before torch falls back to eager
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 64)
        fn = _step_traceable if which == "step" else _backward_loop
        compiled = torch.compile(fn, dynamic=True)

        def call(*args, fn=fn, compiled=compiled):
            if _COMPILE_FAILED:
                return fn(*args)
            try:
                return compiled(*args)
            except Exception as e:  # noqa: BLE001 -- retried uncompiled below
                out = fn(*args)  # a real error in the arguments raises again here
                _COMPILE_FAILED.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                warnings.warn("dietsnn: torch.compile failed, the neurons run uncompiled from "
                              f"now on ({_COMPILE_FAILED[0]})", RuntimeWarning, stacklevel=2)
                return out
        _COMPILED[which] = call
    return _COMPILED[which]


class _LIF(torch.autograd.Function):
    """Saves u~ ([T, ...] floats) for backward. With `steps`, the input is one step's current,
    the same at every step (direct encoding's first layer): then it saves that instead, T times
    less, recomputes u~ in backward, and sums the input gradient over time in the same loop."""

    @staticmethod
    def forward(ctx, x, leak, threshold, gamma, surrogate_name, steps, backend):  # type: ignore[override]
        if steps:
            spikes = lif_forward(_repeat(x, steps), leak, threshold, keep_u_tilde=False,
                                 backend=backend)[0]
            ctx.save_for_backward(x, leak, threshold)
        else:
            spikes, u_tilde, _ = lif_forward(x, leak, threshold, backend=backend)
            ctx.save_for_backward(u_tilde, leak, threshold)
        ctx.steps, ctx.gamma, ctx.surrogate, ctx.backend = steps, gamma, surrogate_name, backend
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):  # type: ignore[override]
        saved, leak, v = ctx.saved_tensors
        leak, v, steps = leak.detach(), v.detach(), ctx.steps
        like = _repeat(saved, steps) if steps else saved  # [T, ...] in the saved memory order
        flat, perm = _flat(like)
        # detached: views of other tensors would add guards (and recompiles) on their bases
        flat, grad = flat.detach(), _flat(grad_spikes, like)[0].detach()
        if ctx.backend == "native" and native.supports(flat):  # u~ recomputed when steps
            grad_x, g_leak, g_v = native.lif_backward(flat[0] if steps else flat, grad, leak, v,
                                                      ctx.gamma, ctx.surrogate, steps)
        elif ctx.backend == "compile":  # u~ recomputed inside the fused kernel when steps
            grad_x, g_leak, g_v = _compiled("backward")(
                flat[0] if steps else flat, grad, leak, v, ctx.gamma, ctx.surrogate, steps)
        else:
            u_tilde = _forward_loop(flat, leak, v, None, True)[1] if steps else flat
            grad_x, g_leak, g_v = _backward_eager(u_tilde, grad, leak, v, ctx.gamma,
                                                  ctx.surrogate, bool(steps))
        if steps:
            grad_x = _unflat(grad_x.unsqueeze(0), like[:1], perm)[0]
        else:
            grad_x = _unflat(grad_x, like, perm)
        need_x, need_leak, need_v = ctx.needs_input_grad[:3]
        return (grad_x if need_x else None, g_leak if need_leak else None,
                g_v if need_v else None, None, None, None, None)


def _repeat(x: Tensor, steps: int) -> Tensor:
    return x.unsqueeze(0).expand(steps, *x.shape)  # a view: no copy


def _check_scalar(name: str, v: Tensor | float, hi: float) -> None:
    """A ValueError/TypeError for a leak or threshold out of range, checked where that costs no
    device sync: Python numbers and 0-dim CPU tensors."""
    if isinstance(v, Tensor):
        if v.dim() or v.device.type != "cpu":
            return
        v = float(v.detach())
    check_number(name, v, 0.0, hi)


def lif(
    x: Tensor,
    leak: Tensor | float,
    threshold: Tensor | float,
    gamma: float = 0.3,
    surrogate: str = "linear",
    steps: int | None = None,
    backend: str | None = None,
) -> Tensor:
    """DIET-SNN LIF over time. `x`: input current `[T, ...]`, or with `steps` one step's current
    `[...]` that is the same at each of `steps` steps (direct encoding: the first layer runs once).
    Returns spikes `[T, ...]` (0/1, x's dtype).

    Differentiable in `x`, `leak` and `threshold` (0-dim tensors) with the surrogate `surrogate`
    scaled by `gamma` (docs/METHOD.md section 2). Integrate-then-fire in the same step, soft reset.
    `backend`: "native", "eager" or "compile" (default: `get_backend()`). A bfloat16/float16 `x` (as
    under autocast) is integrated in float32, with float32 leak and threshold; the spikes come
    back in `x`'s dtype, exactly.
    """
    _check_scalar("leak", leak, 1.0)  # leak in (0, 1], threshold > 0, both finite
    _check_scalar("threshold", threshold, math.inf)
    backend = resolve_backend(backend, x.device.type)
    if x.dim() < 1:
        raise ValueError("lif expects x with time first, shape [T, ...]")
    out_dtype = x.dtype
    if x.dtype in _LOW_PRECISION:  # bf16/fp16 input (autocast): the membrane runs in float32
        x = x.float()
    leak = torch.as_tensor(leak, dtype=x.dtype, device=x.device)
    threshold = torch.as_tensor(threshold, dtype=x.dtype, device=x.device)
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _surrogate.get(surrogate)
    if not (torch.is_grad_enabled() and (x.requires_grad or leak.requires_grad
                                         or threshold.requires_grad)):
        xs = x if steps is None else _repeat(x, steps)
        # inference: keep nothing
        out = lif_forward(xs, leak, threshold, keep_u_tilde=False, backend=backend)[0]
    else:
        out = _LIF.apply(x, leak, threshold, gamma, surrogate, steps or 0, backend)
    return out.to(out_dtype)  # spikes are 0 or 1: exact in any dtype


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


def spike(z: Tensor, gamma: float = 0.3, surrogate: str = "linear") -> Tensor:
    """Heaviside step H(z) in forward, surrogate derivative in backward."""
    return _Spike.apply(z, gamma, surrogate)


def lif_reference(
    x: Tensor,
    leak: Tensor | float,
    threshold: Tensor | float,
    gamma: float = 0.3,
    surrogate: str = "linear",
) -> Tensor:
    """The same dynamics as `lif`, written as the plain per-step loop through autograd."""
    leak = torch.as_tensor(leak, dtype=x.dtype, device=x.device)
    threshold = torch.as_tensor(threshold, dtype=x.dtype, device=x.device)
    u = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        u_tilde = leak * u + x[t]
        o = spike(u_tilde / threshold - 1.0, gamma, surrogate)
        u = u_tilde - threshold * o.detach()
        out.append(o)
    return torch.stack(out)
