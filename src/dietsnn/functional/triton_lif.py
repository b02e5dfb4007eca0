"""Triton kernels of the LIF neuron (docs/METHOD.md sections 1-2) for GPUs: the multi-step
forward, its BPTT, and the fused block "LIF -> dropout -> k x k average pooling (stride k)".

The functions `lif_forward`, `lif_backward`, `lif_pool_forward` and `lif_pool_backward` take
and return what `native.py`'s functions of the same names do, so that either serves as the
implementation of one neuron operator (`ops.kernels` routes CUDA tensors here). Each kernel
program holds a block of neurons in registers through all T steps, so a layer's currents,
spikes and u~ cross memory once per pass.

- Inputs float32, bfloat16 or float16; the membrane and u~ are float32; spikes (and the pooled
  output) come back in the input's dtype; dL/dx in the current's dtype.
- Arithmetic as in the eager loops of neuron.py: u~ = fma(u, leak, x) (PyTorch's addcmul),
  spike u~ > v, soft reset u~ - v; the pooled sums row by row, divided by k*k (avg_pool2d).
- dL/dleak and dL/dthreshold: a float64 partial sum per program, then one program sums those
  in a fixed order: no atomics, the same result at every run.
- leak and threshold are read on the device (no host synchronisation: CUDA graphs capture the
  calls).

The kernels themselves are in `triton_kernels.py`. Only imported where a CUDA tensor meets the
neuron, or under Triton's interpreter (`TRITON_INTERPRET=1`, set before this module is
imported), which runs the same kernels on CPU tensors; triton is the optional extra
`dietsnn[cuda]`.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("dietsnn's GPU kernels need triton: pip install 'dietsnn[cuda]'") from e

from . import surrogate as _surrogate
from .triton_kernels import _lif_bwd, _lif_fwd, _pool_bwd, _pool_fwd, _sum_parts

BLOCK = 1024  # neurons per program (LIF)
POOL_LANES = 1024  # neurons per program (pooling): 1024 // k^2 windows (padded to a power of 2)
RBLOCK = 1024  # partial sums per iteration of the final reduction
NUM_WARPS = 8  # 4 neurons per thread: no register spills on sm_90 (cuobjdump)


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (CPU tensors then)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---- wrappers: native.py's signatures ---------------------------------------------------------

def _scalar(t: Tensor | float, device: torch.device) -> Tensor:
    """A leak or threshold as a float32 [1] tensor on `device` (no copy when it is there)."""
    return torch.as_tensor(t).detach().to(device=device, dtype=torch.float32).reshape(1)


def _reduce(parts: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(dL/dleak, dL/dv) from the per-program partial sums `parts` [2, n]."""
    out = torch.empty(2, dtype=torch.float32, device=parts.device)
    _sum_parts[(2,)](parts, out, n, RBLOCK=RBLOCK)
    return out[0].clone(), out[1].clone()  # own storage: a view at offset 1 is misaligned


def lif_forward(x: Tensor, leak: Tensor, v: Tensor, u0: Tensor | None,
                keep_u_tilde: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """`neuron._forward_loop` on `[T, N]` (time stride N, or 0 for a current that is the same
    at every step): (spikes in x's dtype, float32 u~ or None, float32 final membrane)."""
    T, N = x.shape
    if x.stride(1) != 1 or x.stride(0) not in (0, N):
        x = x.contiguous()
    dev = x.device
    spikes = torch.empty((T, N), dtype=x.dtype, device=dev)
    u_tilde = torch.empty((T, N), dtype=torch.float32, device=dev) if keep_u_tilde else None
    u = torch.zeros(N, dtype=torch.float32, device=dev)
    u0f = None if u0 is None else u0.detach().to(device=dev, dtype=torch.float32).contiguous()
    if T and N:
        _lif_fwd[(triton.cdiv(N, BLOCK),)](
            x, x.stride(0), _scalar(leak, dev), _scalar(v, dev), u if u0f is None else u0f,
            spikes, spikes if u_tilde is None else u_tilde, u, T, N, HAS_U0=u0f is not None,
            STORE_SPIKES=True, STORE_UT=keep_u_tilde, BLOCK=BLOCK, num_warps=NUM_WARPS)
    elif u0f is not None:
        u.copy_(u0f)
    return spikes, u_tilde, u


def lif_backward(saved: Tensor, grad: Tensor, leak: Tensor, v: Tensor, gamma: float,
                 surrogate: str, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """`neuron._backward_loop`: `saved` is u~ `[T, N]`, or with `steps` the constant current
    `[N]` (u~ is then recomputed, and dL/dx summed over time); `grad` is dL/dspikes `[T, N]`.
    Returns (dL/dx in the saved tensor's dtype (float32 for u~), dL/dleak, dL/dv)."""
    kind, coef = _surrogate.kernel_args(surrogate)
    grad = grad.contiguous()
    T, N = grad.shape
    dev = grad.device
    lk, th = _scalar(leak, dev), _scalar(v, dev)
    if steps:  # the forward again, keeping u~ only
        x = saved.contiguous()
        u_tilde = torch.empty((T, N), dtype=torch.float32, device=dev)
        if T and N:
            u = torch.empty(N, dtype=torch.float32, device=dev)  # the final membrane: unused
            _lif_fwd[(triton.cdiv(N, BLOCK),)](x, 0, lk, th, x, x, u_tilde, u, T, N,
                                               HAS_U0=False, STORE_SPIKES=False,
                                               STORE_UT=True, BLOCK=BLOCK, num_warps=NUM_WARPS)
        gx = torch.empty(N, dtype=saved.dtype, device=dev)
    else:
        u_tilde = saved.to(torch.float32).contiguous()
        gx = torch.empty((T, N), dtype=saved.dtype, device=dev)
    n = triton.cdiv(N, BLOCK)
    parts = torch.zeros((2, max(n, 1)), dtype=torch.float64, device=dev)
    if T and N:
        _lif_bwd[(n,)](u_tilde, grad, lk, th, gx, parts, T, N, float(gamma), coef,
                       KIND=kind, SUM_T=bool(steps), BLOCK=BLOCK, num_warps=NUM_WARPS)
    elif steps:
        gx.zero_()
    g_leak, g_v = _reduce(parts, parts.shape[1])
    return gx, g_leak, g_v


def _pool_shapes(x: Tensor, T: int, static: bool, k: int) -> tuple[int, ...]:
    """(B, planes, H, W, window lanes k^2 padded to a power of 2, windows per program)"""
    n, c, h, w = x.shape
    if k < 1 or h < k or w < k:
        raise ValueError(f"pooling window {k} does not fit the plane {h}x{w}")
    B = n if static else n // T
    kk = triton.next_power_of_2(k * k)
    return B, B * c, h, w, kk, max(1, POOL_LANES // kk)


def lif_pool_forward(x: Tensor, T: int, static: bool, leak: Tensor, v: Tensor,
                     keep: Tensor | None, scale: float, k: int,
                     keep_u_tilde: bool) -> tuple[Tensor, Tensor | None]:
    """LIF -> dropout -> k x k average pooling (stride k, floor), NCHW, over `T` steps, as
    `native.lif_pool_forward`: `x` the currents `[T*B, C, H, W]` or if `static` one step's
    `[B, C, H, W]`; `keep` bool `[B, C, H, W]` (worth `scale` where kept) or None. Returns the
    pooled output `[T*B, C, H//k, W//k]` in x's dtype and, if `keep_u_tilde`, float32 u~
    `[T*B, C, H, W]` (zero at neurons outside every window, which the floor drops)."""
    x = x.contiguous()
    B, P, h, w, kk, blk = _pool_shapes(x, T, static, k)
    c, dev = x.shape[1], x.device
    ho, wo = h // k, w // k
    out = torch.empty((T * B, c, ho, wo), dtype=x.dtype, device=dev)
    alloc = torch.zeros if (h % k or w % k) else torch.empty
    u_tilde = alloc((T * B, c, h, w), dtype=torch.float32, device=dev) if keep_u_tilde else None
    keep8 = None if keep is None else keep.contiguous().view(torch.uint8)
    scale = float(torch.tensor(scale, dtype=x.dtype))  # as the unfused dropout's mask holds it
    M = P * ho * wo
    if T and M:
        _pool_fwd[(triton.cdiv(M, blk),)](
            x, 0 if static else P * h * w, _scalar(leak, dev), _scalar(v, dev),
            x if keep8 is None else keep8, scale, out, out if u_tilde is None else u_tilde,
            T, P, h, w, ho, wo, HAS_KEEP=keep8 is not None, STORE_OUT=True,
            STORE_UT=keep_u_tilde, K=k, KK=kk, BLOCK=blk, num_warps=NUM_WARPS)
    return out, u_tilde


def lif_pool_backward(saved: Tensor, grad: Tensor, T: int, static: bool, leak: Tensor,
                      v: Tensor, gamma: float, surrogate: str, keep: Tensor | None,
                      scale: float, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """BPTT of `lif_pool_forward`: `saved` is u~ `[T*B, C, H, W]`, or if `static` the current
    `[B, C, H, W]`; `grad` the pooled output's gradient. Returns (dL/dx (float32 for u~, the
    current's dtype if `static`), dL/dleak, dL/dv)."""
    kind, coef = _surrogate.kernel_args(surrogate)
    saved, grad = saved.contiguous(), grad.contiguous()
    B, P, h, w, kk, blk = _pool_shapes(saved, T, static, k)
    dev = saved.device
    ho, wo = h // k, w // k
    lk, th = _scalar(leak, dev), _scalar(v, dev)
    keep8 = None if keep is None else keep.contiguous().view(torch.uint8)
    scale = float(torch.tensor(scale, dtype=grad.dtype))
    M = P * ho * wo
    n = triton.cdiv(M, blk)
    if static:  # the forward again, keeping u~ only
        alloc = torch.zeros if (h % k or w % k) else torch.empty
        u_tilde = alloc((T * B, *saved.shape[1:]), dtype=torch.float32, device=dev)
        if T and M:
            _pool_fwd[(n,)](saved, 0, lk, th, saved, 1.0, saved, u_tilde, T, P, h, w, ho, wo,
                            HAS_KEEP=False, STORE_OUT=False, STORE_UT=True, K=k, KK=kk,
                            BLOCK=blk, num_warps=NUM_WARPS)
        gx = torch.zeros_like(saved)
    else:
        u_tilde = saved.to(torch.float32)
        gx = (torch.zeros_like if (h % k or w % k) else torch.empty_like)(saved)
    parts = torch.zeros((2, max(n, 1)), dtype=torch.float64, device=dev)
    if T and M:
        _pool_bwd[(n,)](u_tilde, grad, lk, th, saved if keep8 is None else keep8, scale,
                        float(1.0 / (k * k)), gx, parts, T, P, h, w, ho, wo, float(gamma),
                        coef, HAS_KEEP=keep8 is not None, KIND=kind,
                        SUM_T=static, K=k, KK=kk, BLOCK=blk, num_warps=NUM_WARPS)
    g_leak, g_v = _reduce(parts, parts.shape[1])
    return gx, g_leak, g_v

