"""Leaky integrate-and-fire dynamics of DIET-SNN (SPEC sections 1-2), multi-step over time.

Per step t, for one layer with scalar leak `lam` and threshold `v`:

    u~ = lam * u + x[t]          integrate (input current x)
    o  = 1 if u~ > v else 0      fire (z = u~/v - 1 > 0)
    u  = u~ - v * o              soft reset, o detached

`lif` is the fused operation: one forward loop with no autograd graph and a hand-written backward
that keeps only the integrated membrane u~ (spikes are recomputed from it). `lif_reference` is the
plain loop through autograd, kept as the oracle for tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import surrogate as _surrogate


def lif_forward(
    x: Tensor, leak: Tensor, threshold: Tensor, u0: Tensor | None = None,
    keep_u_tilde: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Run the recurrence without autograd. Returns (spikes, u~ per step or None if not
    `keep_u_tilde`, final membrane). `x` may be a time-constant view (stride 0 over time)."""
    fn = _compiled("forward") if _BACKEND == "compile" else _forward_loop
    # elementwise in the neurons: one [T, N] layout in memory order serves every layer (one
    # compiled graph) and every memory format (channels-last included) without a copy
    flat, perm = _flat(x)
    if u0 is not None:
        u0 = u0.permute([d - 1 for d in perm[1:]]).reshape(-1)
    spikes, u_tilde, u = fn(flat, leak, threshold, u0, keep_u_tilde)
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


def _forward_loop(x: Tensor, leak: Tensor, v: Tensor, u0: Tensor | None, keep_u_tilde: bool):
    u = torch.zeros_like(x[0]) if u0 is None else u0
    spikes, u_tilde = [], []
    for t in range(x.shape[0]):
        ut = x[t] + leak * u
        o = (ut > v).to(x.dtype)
        u = ut - o * v
        spikes.append(o)
        if keep_u_tilde:
            u_tilde.append(ut)
    return torch.stack(spikes), torch.stack(u_tilde) if keep_u_tilde else None, u


def _backward_loop(u_tilde: Tensor, grad: Tensor, leak: Tensor, v: Tensor, gamma: float,
                   surrogate: str):
    """BPTT of `_forward_loop`: returns dL/dx, dL/dleak, dL/dv given dL/dspikes (SPEC 2)."""
    sg = _surrogate.get(surrogate)
    inv_v = 1.0 / v
    grad_x = []
    g_leak = torch.zeros((), dtype=u_tilde.dtype, device=u_tilde.device)
    g_v = torch.zeros((), dtype=u_tilde.dtype, device=u_tilde.device)
    d = torch.zeros_like(u_tilde[0])  # dL/du~ at step t+1
    T = u_tilde.shape[0]
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
    grad_x.reverse()
    return torch.stack(grad_x), g_leak, g_v


_BACKEND = "eager"
_COMPILED: dict[str, object] = {}


def set_backend(backend: str) -> None:
    """'eager' (default) or 'compile': the time loops fused by `torch.compile` (needs a C
    compiler on CPU; the first call of each shape compiles, later calls are much faster)."""
    global _BACKEND
    if backend not in ("eager", "compile"):
        raise ValueError(f"unknown backend {backend!r}; choose eager or compile")
    _BACKEND = backend


def get_backend() -> str:
    return _BACKEND


def _compiled(which: str):
    if which not in _COMPILED:
        fn = _forward_loop if which == "forward" else _backward_loop
        _COMPILED[which] = torch.compile(fn, dynamic=True)
    return _COMPILED[which]


class _LIF(torch.autograd.Function):
    """Saves u~ ([T, ...] floats) for backward; when the input current is constant over time
    (direct encoding's first layer, a stride-0 view) it saves that one step instead and
    recomputes u~ in backward: T times less memory for one cheap elementwise loop."""

    @staticmethod
    def forward(ctx, x, leak, threshold, gamma, surrogate_name):  # type: ignore[override]
        constant = x.shape[0] > 1 and x.stride(0) == 0
        spikes, u_tilde, _ = lif_forward(x, leak, threshold, keep_u_tilde=not constant)
        ctx.save_for_backward(x[0] if constant else u_tilde, leak, threshold)
        ctx.steps = x.shape[0] if constant else 0
        ctx.gamma = gamma
        ctx.surrogate = surrogate_name
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes):  # type: ignore[override]
        u_tilde, leak, v = ctx.saved_tensors
        if ctx.steps:  # saved the constant input: recompute u~
            x = u_tilde.unsqueeze(0).expand(ctx.steps, *u_tilde.shape)
            u_tilde = lif_forward(x, leak, v)[1]
        fn = _compiled("backward") if _BACKEND == "compile" else _backward_loop
        flat_u, perm = _flat(u_tilde)
        grad_x, g_leak, g_v = fn(flat_u, _flat(grad_spikes, u_tilde)[0], leak, v, ctx.gamma,
                                 ctx.surrogate)
        grad_x = _unflat(grad_x, u_tilde, perm)
        need_x, need_leak, need_v = ctx.needs_input_grad[:3]
        return (grad_x if need_x else None, g_leak if need_leak else None,
                g_v if need_v else None, None, None)


def lif(
    x: Tensor,
    leak: Tensor | float,
    threshold: Tensor | float,
    gamma: float = 0.3,
    surrogate: str = "linear",
) -> Tensor:
    """DIET-SNN LIF over time. `x`: input current `[T, ...]`; returns spikes `[T, ...]` (0/1, x's dtype).

    Differentiable in `x`, `leak` and `threshold` (0-dim tensors) with the surrogate `surrogate`
    scaled by `gamma` (SPEC section 2). Integrate-then-fire in the same step, soft reset.
    """
    leak = torch.as_tensor(leak, dtype=x.dtype, device=x.device)
    threshold = torch.as_tensor(threshold, dtype=x.dtype, device=x.device)
    if x.dim() < 1:
        raise ValueError("lif expects x with time first, shape [T, ...]")
    _surrogate.get(surrogate)
    if not (torch.is_grad_enabled() and (x.requires_grad or leak.requires_grad
                                         or threshold.requires_grad)):
        return lif_forward(x, leak, threshold, keep_u_tilde=False)[0]  # inference: keep nothing
    return _LIF.apply(x, leak, threshold, gamma, surrogate)


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
