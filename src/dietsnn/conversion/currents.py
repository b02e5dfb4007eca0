"""What threshold calibration (docs/METHOD.md section 7.2, `calibrate.calibrate_graph`) does for
every layer.

A LIF layer's threshold is the maximum over the steps of the `percentile` of its input current
over the batch at that step. The currents are made time chunk by time chunk from the spike
trains of the layers before and are never held for all steps: a step with too few currents above
the largest percentile found so far cannot raise it and is only counted; the others get their
exact percentile. The layer then runs once more over its currents (recomputed, or kept while
they fit in `CACHE_BYTES`), carrying the membrane, and its spike trains are kept as bits, one
per neuron and step (`Bits`); a layer driven by a current that is the same at every step is
instead re-run from that current whenever its spikes are read (`Refire`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import distributed, logs
from ..functional.neuron import lif_forward
from ..layers import LIF

CHUNK_ELEMENTS = 1 << 23  # floats per time chunk of currents (32 MiB)
CACHE_BYTES = 1 << 24  # keep a layer's currents between its two passes up to this size (16 MiB)
_SHIFTS = torch.arange(8, dtype=torch.uint8)


def percentile(x: Tensor, p: float) -> Tensor:
    """`p`-th percentile of all elements of `x`, linear interpolation (as numpy's default)."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    rank = p / 100.0 * (n - 1)
    lo = math.floor(rank)
    frac = rank - lo
    k_top = n - lo  # elements at or above sorted position lo
    pool = flat
    if n > 1 << 17 and k_top * 8 <= n:  # keep only a superset of the top k_top, found by sampling
        g = torch.Generator(device="cpu").manual_seed(0)
        idx = torch.randint(0, n, (1 << 16,), generator=g).to(flat.device)
        sample = flat[idx].sort().values
        pos = max(0, int((1 << 16) * (1.0 - 2.0 * k_top / n)) - 64)
        cand = flat[flat >= sample[pos]]
        if cand.numel() >= k_top:
            pool = cand
    if k_top * 8 <= pool.numel() or k_top <= 4096 or pool is not flat:
        top = pool.topk(k_top, sorted=True).values
        v_lo, v_hi = top[k_top - 1], top[max(k_top - 2, 0)]
    else:
        v_lo = flat.kthvalue(lo + 1).values
        v_hi = flat.kthvalue(min(lo + 2, n)).values
    return v_lo + frac * (v_hi - v_lo)


def percentile_of(x: Tensor, p: float) -> float:
    return percentile(x, p).item()


def cannot_exceed(x: Tensor, p: float, m: float) -> bool:
    """Whether `percentile(x, p)` is sure to be <= `m`, from a count alone: the percentile lies
    between the order statistics at positions lo and lo + 1 (0-based) and, computed in float32
    as `v_lo + frac * (v_hi - v_lo)` with frac < 1 - 2**-20, never rounds above `v_hi`; so at
    most n - lo - 2 values above `m` (n - lo - 1 where frac is 0) settle it."""
    n = x.numel()
    rank = p / 100.0 * (n - 1)
    lo = math.floor(rank)
    frac = rank - lo
    if frac > 1.0 - 2.0**-20:
        return False
    allowed = n - lo - (1 if frac == 0.0 else 2)
    return allowed >= 0 and int(torch.count_nonzero(x > m)) <= allowed


def set_threshold(unit: LIF, thr: float) -> None:
    """The percentile found as `unit`'s threshold; a layer whose current never gets above 0
    cannot fire at any threshold and gets 1 (usable after training)."""
    unit.threshold.fill_(thr if thr > 0 else 1.0)


def finish(units: list[LIF], scale: float) -> list[float]:
    """Every threshold times `scale`, rank 0's values on every rank; the thresholds set."""
    for m in units:
        m.threshold.mul_(scale)
        distributed.broadcast_(m.threshold.data)
    return [m.threshold.item() for m in units]


class Currents(list):
    """A layer's current chunks kept for its firing pass (`cached` False: recompute them)."""

    cached = True


def max_percentile(chunks: Iterable[Tensor], p: float, bar: tqdm | None = None
                   ) -> tuple[float, Currents]:
    """The maximum over steps of the per-step `percentile` of chunks `[t, B, ...]`, exactly as
    if each step's were computed. The chunks are kept for the firing pass while they fit in
    CACHE_BYTES; beyond it they are dropped (`cached = False`) and recomputed."""
    thr, kept, size = float("-inf"), Currents(), 0
    for c in chunks:
        for t in range(c.shape[0]):
            if thr == float("-inf") or not cannot_exceed(c[t], p, thr):
                thr = max(thr, percentile_of(c[t], p))
        size += c.numel() * c.element_size()
        if kept.cached and size <= CACHE_BYTES:
            kept.append(c)
        else:
            kept.cached = False
            kept.clear()
        if bar is not None:
            bar.update(c.shape[0])
    return thr, kept


def chunk_steps(per_step: int, T: int) -> int:
    return max(1, min(T, CHUNK_ELEMENTS // max(1, per_step)))


class Kept:
    """Values `[T, B, ...]` of the input, kept whole (encoded images, a time series)."""

    def __init__(self, x: Tensor) -> None:
        self.x, self.step_shape = x, tuple(x.shape[1:])

    def read(self, t0: int, t: int) -> Tensor:
        return self.x[t0 : t0 + t].float()


class Bits:
    """0/1 spike trains `[T, B, ...]` kept as bits: `[T, B, ceil(N / 8)]` bytes, N the neurons
    of one image (`pack`)."""

    def __init__(self, T: int, step_shape: tuple[int, ...], device: torch.device) -> None:
        self.step_shape, self.n = step_shape, math.prod(step_shape[1:])
        self.bits = torch.empty((T, step_shape[0], (self.n + 7) // 8), dtype=torch.uint8,
                                device=device)

    def write(self, t0: int, s: Tensor) -> None:
        t, B = s.shape[:2]
        self.bits[t0 : t0 + t] = pack(s.reshape(t, B, self.n) != 0)

    def read(self, t0: int, t: int) -> Tensor:
        return unpack(self.bits[t0 : t0 + t], self.n).float().view(t, *self.step_shape)


def pack(s: Tensor, native: bool = True) -> Tensor:
    """Booleans `[..., n]` as bytes `[..., ceil(n / 8)]`, little-endian bit order (numpy's
    `packbits(bitorder="little")`, which does it on the CPU unless `native` is False)."""
    if native and s.device.type == "cpu":
        return torch.from_numpy(np.packbits(s.numpy(), axis=-1, bitorder="little"))
    s = torch.nn.functional.pad(s.to(torch.uint8), (0, (-s.shape[-1]) % 8))
    s = s.view(*s.shape[:-1], -1, 8) << _SHIFTS.to(s.device)
    return s.sum(-1, dtype=torch.uint8)


def unpack(b: Tensor, n: int, native: bool = True) -> Tensor:
    """The first `n` bits of each row of `b` (from `pack`) as uint8 0/1 `[..., n]`."""
    if native and b.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(b.numpy(), axis=-1, count=n, bitorder="little"))
    return ((b.unsqueeze(-1) >> _SHIFTS.to(b.device)) & 1).flatten(-2)[..., :n]


class Refire:
    """The spike trains of LIF `unit` driven by `current` `[B, ...]` at every step, re-run from
    it when read (reads go in order from step 0; a read of step 0 starts over)."""

    def __init__(self, unit: LIF, current: Tensor) -> None:
        self.unit, self.current, self.step_shape = unit, current, tuple(current.shape)
        self.leak, self.v = unit.leak.detach().clone(), unit.threshold.detach().clone()
        self.u: Tensor | None = None
        self.next = 0

    def read(self, t0: int, t: int) -> Tensor:
        if t0 == 0:
            self.u = None
        elif t0 != self.next:
            raise RuntimeError(f"spike trains read at step {t0}, expected {self.next}")
        x = self.current.unsqueeze(0).expand(t, *self.current.shape)
        s, _, self.u = lif_forward(x, self.leak, self.v, self.u, keep_u_tilde=False)
        self.next = t0 + t
        return s


Source = Kept | Bits | Refire


def fire(unit: LIF, chunks: Iterable[Tensor], T: int) -> Bits:
    """Run `unit` over its input current chunks `[t, B, ...]`, carrying the membrane; its
    spike trains as `Bits`."""
    out, u, t0 = None, None, 0
    for c in chunks:  # float spikes for at most CHUNK_ELEMENTS at a time, kept as bits
        step = chunk_steps(c[0].numel(), c.shape[0])
        for a in range(0, c.shape[0], step):
            s, _, u = lif_forward(c[a : a + step], unit.leak, unit.threshold, u,
                                  keep_u_tilde=False)
            if out is None:
                out = Bits(T, tuple(s.shape[1:]), s.device)
            out.write(t0, s)
            t0 += s.shape[0]
    assert out is not None
    return out


class Progress:
    """Layer i of n: a bar over the steps of each pass (with `bar`) and one INFO line per
    layer on the "dietsnn" logger."""

    def __init__(self, names: list[str], T: int, bar: bool) -> None:
        self.names, self.T, self.show, self.k = names, T, bar, 0
        self.t0 = time.perf_counter()

    def bar(self) -> tqdm:
        desc = f"calibrate {self.k + 1}/{len(self.names)}"
        return tqdm(total=self.T, desc=desc, leave=False, disable=not self.show,
                    dynamic_ncols=True)

    def done(self, thr: float) -> None:
        now = time.perf_counter()
        logs.info(f"calibrated layer {self.k + 1}/{len(self.names)} ({self.names[self.k]}): "
                  f"threshold {thr:.4g} before the scale ({now - self.t0:.1f}s)")
        self.k, self.t0 = self.k + 1, now
