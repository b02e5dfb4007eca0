"""The Triton kernels behind `triton_lif` (which documents them and calls them): the LIF
forward and BPTT over all T steps per block of neurons, the fused LIF -> dropout -> k x k
pooling both ways, and the fixed-order sum of the leak and threshold gradients' partial sums.

They call only Triton's core builtins: triton.language's own jit functions (tl.sum, tl.zeros)
are defined when triton is imported, and the interpreter cannot run those if that import came
before TRITON_INTERPRET=1 was set.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sum(x, axis):
    """tl.sum from core builtins (the interpreter takes its fast path for this combine
    function)."""
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def _sg(z, gamma, param, KIND: tl.constexpr):
    """Surrogate dO/dz (surrogate.py), `param` its shape constant."""
    if KIND == 0:
        r = tl.maximum(1.0 - tl.abs(z), 0.0) * gamma
    elif KIND == 1:
        r = tl.exp(-param * tl.abs(z)) * gamma
    elif KIND == 2:
        s = 1.0 / (1.0 + tl.exp(-(param * z)))
        r = s * (1.0 - s) * (4.0 * gamma)
    else:
        p = param * z
        r = gamma / (1.0 + p * p)
    return r


@triton.jit
def _bptt_step(s, prev, g, d, gl, gv, leak, v, inv_v, gamma, param, has_prev, KIND: tl.constexpr):
    """One step of BPTT: u~ `s`, the previous step's u~ `prev`, dL/dspike `g`; `d` is dL/du~
    of the next step, returned for this one with the leak and threshold sums."""
    gs = g * _sg(s * inv_v - 1.0, gamma, param, KIND)
    carried = d * leak  # dL/du_t, the membrane after the reset, into step t+1
    d = tl.fma(d, leak, gs * inv_v)
    gv -= tl.where(s > v, carried, 0.0) + gs * s * inv_v * inv_v
    gl += tl.where(has_prev, d * (prev - tl.where(prev > v, v, 0.0)), 0.0)
    return d, gl, gv


@triton.jit
def _lif_fwd(x_ptr, sx, leak_ptr, v_ptr, u0_ptr, s_ptr, ut_ptr, u_ptr, T, N,
             HAS_U0: tl.constexpr, STORE_SPIKES: tl.constexpr, STORE_UT: tl.constexpr,
             BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    leak = tl.load(leak_ptr)
    v = tl.load(v_ptr)
    if HAS_U0:
        u = tl.load(u0_ptr + offs, mask=m, other=0.0).to(tl.float32)
    else:
        u = tl.full([BLOCK], 0.0, tl.float32)
    xp, sp, up = x_ptr + offs, s_ptr + offs, ut_ptr + offs
    for _ in range(T):
        s = tl.fma(u, leak, tl.load(xp, mask=m, other=0.0).to(tl.float32))
        fired = s > v
        if STORE_SPIKES:
            tl.store(sp, tl.where(fired, 1.0, 0.0).to(s_ptr.dtype.element_ty), mask=m)
        if STORE_UT:
            tl.store(up, s, mask=m)
        u = s - tl.where(fired, v, 0.0)
        xp += sx
        sp += N
        up += N
    tl.store(u_ptr + offs, u, mask=m)


@triton.jit
def _lif_bwd(ut_ptr, g_ptr, leak_ptr, v_ptr, gx_ptr, part_ptr, T, N, gamma, param,
             KIND: tl.constexpr, SUM_T: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < N
    leak = tl.load(leak_ptr)
    v = tl.load(v_ptr)
    inv_v = 1.0 / v
    d = tl.full([BLOCK], 0.0, tl.float32)
    gl = tl.full([BLOCK], 0.0, tl.float32)
    gv = tl.full([BLOCK], 0.0, tl.float32)
    acc = tl.full([BLOCK], 0.0, tl.float32)
    last = (T - 1).to(tl.int64) * N
    up, gp, xp = ut_ptr + last + offs, g_ptr + last + offs, gx_ptr + last + offs
    s = tl.load(up, mask=m, other=0.0)
    for i in range(T):
        has_prev = m & ((offs * 0 + i) < T - 1)  # a vector: the interpreter needs one
        prev = tl.load(up - N, mask=has_prev, other=0.0)
        g = tl.load(gp, mask=m, other=0.0).to(tl.float32)
        d, gl, gv = _bptt_step(s, prev, g, d, gl, gv, leak, v, inv_v, gamma, param, has_prev,
                               KIND)
        if SUM_T:
            acc += d
        else:
            tl.store(xp, d.to(gx_ptr.dtype.element_ty), mask=m)
        s = prev
        up -= N
        gp -= N
        xp -= N
    if SUM_T:
        tl.store(gx_ptr + offs, acc.to(gx_ptr.dtype.element_ty), mask=m)
    n = tl.num_programs(0)
    tl.store(part_ptr + pid, _sum(gl.to(tl.float64), axis=0))
    tl.store(part_ptr + n + pid, _sum(gv.to(tl.float64), axis=0))


@triton.jit
def _sum_parts(part_ptr, out_ptr, n, RBLOCK: tl.constexpr):
    """out[i] = sum of part[i * n : (i + 1) * n], i = program id, in a fixed order."""
    base = tl.program_id(0).to(tl.int64) * n
    acc = tl.full([RBLOCK], 0.0, tl.float64)
    for start in range(0, n, RBLOCK):
        idx = start + tl.arange(0, RBLOCK)
        acc += tl.load(part_ptr + base + idx, mask=idx < n, other=0.0)
    tl.store(out_ptr + tl.program_id(0), _sum(acc, axis=0).to(tl.float32))


@triton.jit
def _windows(K: tl.constexpr, KK: tl.constexpr, BLOCK: tl.constexpr, M, H, W, Ho, Wo):
    """Per program: output positions `o` [BLOCK] over [P, Ho, Wo], the neurons of their k x k
    windows `n` [BLOCK, KK] over [P, H, W] (padded to KK columns), and the masks."""
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    c = tl.arange(0, KK)
    p = o // (Ho * Wo)
    r = o % (Ho * Wo)
    h = (r // Wo * K)[:, None] + (c // K)[None, :]
    w = (r % Wo * K)[:, None] + (c % K)[None, :]
    mo = o < M
    return o, c, p[:, None] * (H * W) + h * W + w, mo, mo[:, None] & (c < K * K)[None, :]


@triton.jit
def _pool_fwd(x_ptr, sx, leak_ptr, v_ptr, keep_ptr, scale, out_ptr, ut_ptr, T, P, H, W, Ho, Wo,
              HAS_KEEP: tl.constexpr, STORE_OUT: tl.constexpr, STORE_UT: tl.constexpr,
              K: tl.constexpr, KK: tl.constexpr, BLOCK: tl.constexpr):
    M = P * Ho * Wo
    o, c, n, mo, m = _windows(K, KK, BLOCK, M, H, W, Ho, Wo)
    leak = tl.load(leak_ptr)
    v = tl.load(v_ptr)
    if HAS_KEEP:
        kv = tl.where(tl.load(keep_ptr + n, mask=m, other=0) != 0, scale, 0.0)
    u = tl.full([BLOCK, KK], 0.0, tl.float32)
    xp, up, op = x_ptr + n, ut_ptr + n, out_ptr + o
    for _ in range(T):
        s = tl.fma(u, leak, tl.load(xp, mask=m, other=0.0).to(tl.float32))
        fired = s > v
        if STORE_UT:
            tl.store(up, s, mask=m)
        u = s - tl.where(fired, v, 0.0)
        if STORE_OUT:
            val = tl.where(fired, 1.0, 0.0)
            if HAS_KEEP:
                val = val * kv
            acc = tl.full([BLOCK], 0.0, tl.float32)
            for j in tl.static_range(K * K):  # window row by row, as avg_pool2d sums
                acc += _sum(tl.where(c[None, :] == j, val, 0.0), axis=1)
            tl.store(op, (acc / (K * K)).to(out_ptr.dtype.element_ty), mask=mo)
        xp += sx
        up += P * H * W
        op += M


@triton.jit
def _pool_bwd(ut_ptr, g_ptr, leak_ptr, v_ptr, keep_ptr, scale, inv_kk, gx_ptr, part_ptr,
              T, P, H, W, Ho, Wo, gamma, param, HAS_KEEP: tl.constexpr, KIND: tl.constexpr,
              SUM_T: tl.constexpr, K: tl.constexpr, KK: tl.constexpr, BLOCK: tl.constexpr):
    M = P * Ho * Wo
    PHW = P * H * W
    o, c, n, mo, m = _windows(K, KK, BLOCK, M, H, W, Ho, Wo)
    leak = tl.load(leak_ptr)
    v = tl.load(v_ptr)
    inv_v = 1.0 / v
    if HAS_KEEP:
        kv = tl.where(tl.load(keep_ptr + n, mask=m, other=0) != 0, scale, 0.0)
    d = tl.full([BLOCK, KK], 0.0, tl.float32)
    gl = tl.full([BLOCK, KK], 0.0, tl.float32)
    gv = tl.full([BLOCK, KK], 0.0, tl.float32)
    acc = tl.full([BLOCK, KK], 0.0, tl.float32)
    last = (T - 1).to(tl.int64)
    up, gp, xp = ut_ptr + last * PHW + n, g_ptr + last * M + o, gx_ptr + last * PHW + n
    s = tl.load(up, mask=m, other=0.0)
    for i in range(T):
        has_prev = m & ((n * 0 + i) < T - 1)
        prev = tl.load(up - PHW, mask=has_prev, other=0.0)
        g = tl.load(gp, mask=mo, other=0.0).to(tl.float32) * inv_kk
        g = tl.where(m, g[:, None], 0.0)  # spread over the window
        if HAS_KEEP:
            g = g * kv
        d, gl, gv = _bptt_step(s, prev, g, d, gl, gv, leak, v, inv_v, gamma, param, has_prev,
                               KIND)
        if SUM_T:
            acc += d
        else:
            tl.store(xp, d.to(gx_ptr.dtype.element_ty), mask=m)
        s = prev
        up -= PHW
        gp -= M
        xp -= PHW
    if SUM_T:
        tl.store(gx_ptr + n, acc.to(gx_ptr.dtype.element_ty), mask=m)
    pid, np_ = tl.program_id(0), tl.num_programs(0)
    tl.store(part_ptr + pid, _sum(_sum(gl.to(tl.float64), axis=1), axis=0))
    tl.store(part_ptr + np_ + pid, _sum(_sum(gv.to(tl.float64), axis=1), axis=0))
