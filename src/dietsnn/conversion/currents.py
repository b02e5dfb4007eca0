"""What threshold calibration (docs/METHOD.md section 7.2, `calibrate.calibrate_graph`) does for
every layer.

A LIF layer's threshold is the maximum over the steps of the `percentile` of its input current
over all images at that step. The images are taken a sub-batch at a time (`sub_batch`: one step
of the widest value of the network within `BATCH_ELEMENTS` floats) and the steps a time chunk at
a time (`CHUNK_ELEMENTS`), so no current is ever held for all images or all steps: each step
keeps only the largest values the percentile needs (`TopK`), merged across sub-batches, which
gives the percentile over all images exactly. The layer then runs once more over its currents
(recomputed, or kept while they fit in `CACHE_BYTES`), carrying the membrane over the steps of
each sub-batch, and its spike trains are kept as bits, one per neuron, image and step (`Bits`);
a layer driven by a current that is the same at every step is instead re-run from that current,
sub-batch by sub-batch, whenever its spikes are read (`Refire`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import distributed, logs
from ..functional.neuron import lif_forward
from ..layers import LIF

BATCH_ELEMENTS = 1 << 19  # floats of one step of the widest value for a sub-batch (2 MiB)
CHUNK_ELEMENTS = 1 << 21  # floats of the widest value per time chunk of a sub-batch (8 MiB)
CACHE_BYTES = 1 << 22  # keep a layer's currents between its two passes up to this size (4 MiB)
_SHIFTS = torch.arange(8, dtype=torch.uint8)


def _rank(n: int, p: float) -> tuple[int, float]:
    """How many of n values are at or above sorted position lo of the `p`-th percentile (k),
    and the interpolation fraction between positions lo and lo + 1."""
    rank = p / 100.0 * (n - 1)
    lo = math.floor(rank)
    return n - lo, rank - lo


def _lerp(v_lo: Tensor, v_hi: Tensor, frac: float) -> Tensor:
    """The percentile between the order statistics at positions lo and lo + 1 (float32)."""
    return v_lo + frac * (v_hi - v_lo)


def _between(top: Tensor, k: int, frac: float) -> Tensor:
    """The percentile from the k largest values sorted in descending order."""
    return _lerp(top[k - 1], top[max(k - 2, 0)], frac)


def percentile(x: Tensor, p: float) -> Tensor:
    """`p`-th percentile of all elements of `x`, linear interpolation (as numpy's default)."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    k_top, frac = _rank(n, p)  # k_top: elements at or above sorted position lo
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
        return _between(pool.topk(k_top, sorted=True).values, k_top, frac)
    lo = n - k_top
    return _lerp(flat.kthvalue(lo + 1).values, flat.kthvalue(min(lo + 2, n)).values, frac)


def percentile_of(x: Tensor, p: float) -> float:
    return percentile(x, p).item()


class TopK:
    """The `p`-th percentile of n values that arrive in parts (`add`), exactly `percentile` of
    them all: only the k largest values so far are kept, sorted (k about n * (1 - p / 100)),
    and the values that reach the k-th largest of them wait in a list until they are as many
    as k, when one `topk` merges them in (fewer and larger merges than one per part)."""

    def __init__(self, n: int, p: float) -> None:
        self.k, self.frac = _rank(n, p)
        self.top = torch.empty(0)
        self.waiting: list[Tensor] = []
        self.count = 0

    def add(self, x: Tensor) -> None:
        x = x.reshape(-1).float()
        if self.top.numel() >= self.k:  # only values that reach the k-th largest can stay
            x = x[x >= self.top[self.k - 1]]
        self.waiting.append(x)
        self.count += x.numel()
        if self.count >= self.k:
            self._merge()

    def _merge(self) -> None:
        if self.waiting:
            pool = torch.cat([self.top.to(self.waiting[0].device), *self.waiting])
            self.top = pool.topk(min(self.k, pool.numel()), sorted=True).values
            self.waiting, self.count = [], 0

    def value(self) -> float:
        self._merge()
        return _between(self.top, self.k, self.frac).item()


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


Chunk = tuple[slice, int, Tensor]  # images b0:b1, first step t0, values [t, b1 - b0, ...]


class Currents(list):
    """A layer's current chunks kept for its firing pass (`cached` False: recompute them)."""

    cached = True


def max_percentile(chunks: Iterable[Chunk], p: float, n: int, steps: int,
                   bar: tqdm | None = None) -> tuple[float, Currents]:
    """The maximum over `steps` steps of the `percentile` of each step's `n` values (over all
    images), from chunks that cover every image and step once. The chunks are kept for the
    firing pass while they fit in CACHE_BYTES; beyond it they are dropped (`cached = False`) and
    recomputed."""
    tops = [TopK(n, p) for _ in range(steps)]
    kept, size = Currents(), 0
    for sl, t0, c in chunks:
        for t in range(c.shape[0]):
            tops[t0 + t].add(c[t])
        size += c.numel() * c.element_size()
        if kept.cached and size <= CACHE_BYTES:
            kept.append((sl, t0, c))
        else:
            kept.cached = False
            kept.clear()
        if bar is not None:
            bar.update(c.shape[0])
    return max(top.value() for top in tops), kept


def sub_batch(B: int, widest: int) -> int:
    """Images per sub-batch: one step of a value of `widest` floats per image within
    BATCH_ELEMENTS (at least one image), the `B` images split evenly (no sub-batch of one
    image unless all are: oneDNN convolves a batch of one apart, which can round differently)."""
    parts = math.ceil(B / max(1, min(B, BATCH_ELEMENTS // max(1, widest))))
    return math.ceil(B / parts)


def chunk_steps(per_step: int, T: int) -> int:
    return max(1, min(T, CHUNK_ELEMENTS // max(1, per_step)))


class Kept:
    """Values `[T, B, ...]` of the input, kept whole (encoded images, a time series)."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def read(self, t0: int, t: int, sl: slice) -> Tensor:
        return self.x[t0 : t0 + t, sl].float()


class Bits:
    """0/1 spike trains `[T, B, *shape]` kept as bits: `[T, B, ceil(N / 8)]` bytes, N the
    neurons of one image (`pack`)."""

    def __init__(self, T: int, B: int, shape: tuple[int, ...], device: torch.device) -> None:
        self.shape, self.n = shape, math.prod(shape)
        self.bits = torch.empty((T, B, (self.n + 7) // 8), dtype=torch.uint8, device=device)

    def write(self, t0: int, sl: slice, s: Tensor) -> None:
        t, b = s.shape[:2]
        self.bits[t0 : t0 + t, sl] = pack(s.reshape(t, b, self.n) != 0)

    def read(self, t0: int, t: int, sl: slice) -> Tensor:
        b = self.bits[t0 : t0 + t, sl]
        return unpack(b, self.n).float().view(t, b.shape[1], *self.shape)


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
    """The spike trains of LIF `unit` driven at every step by the current `current(sl)`
    `[b, ...]` of images `sl`, re-run from it when read (the reads of a sub-batch go in order
    from step 0; a read of step 0 starts it over)."""

    def __init__(self, unit: LIF, current: Callable[[slice], Tensor]) -> None:
        self.unit, self.current = unit, current
        self.leak, self.v = unit.leak.detach().clone(), unit.threshold.detach().clone()
        self.x: Tensor | None = None
        self.u: Tensor | None = None
        self.next = 0

    def read(self, t0: int, t: int, sl: slice) -> Tensor:
        if t0 == 0:
            self.x, self.u = self.current(sl), None
        elif t0 != self.next:
            raise RuntimeError(f"spike trains read at step {t0}, expected {self.next}")
        x = self.x.unsqueeze(0).expand(t, *self.x.shape)
        s, _, self.u = lif_forward(x, self.leak, self.v, self.u, keep_u_tilde=False)
        self.next = t0 + t
        return s


Source = Kept | Bits | Refire


def fire(unit: LIF, chunks: Iterable[Chunk], T: int, B: int) -> Bits:
    """Run `unit` over its input current chunks, carrying the membrane over the steps of each
    sub-batch; its spike trains as `Bits`."""
    out, u = None, None
    for sl, t0, c in chunks:
        s, _, u = lif_forward(c, unit.leak, unit.threshold, None if t0 == 0 else u,
                              keep_u_tilde=False)
        if out is None:
            out = Bits(T, B, tuple(s.shape[2:]), s.device)
        out.write(t0, sl, s)
    assert out is not None
    return out


class Progress:
    """Layer i of n: a bar over the steps of each pass (with `bar`) and one INFO line per
    layer on the "dietsnn" logger."""

    def __init__(self, names: list[str], bar: bool) -> None:
        self.names, self.show, self.k = names, bar, 0
        self.t0 = time.perf_counter()

    def bar(self, total: int) -> tqdm:
        desc = f"calibrate {self.k + 1}/{len(self.names)}"
        return tqdm(total=total, desc=desc, leave=False, disable=not self.show,
                    dynamic_ncols=True)

    def done(self, thr: float) -> None:
        now = time.perf_counter()
        logs.info(f"calibrated layer {self.k + 1}/{len(self.names)} ({self.names[self.k]}): "
                  f"threshold {thr:.4g} before the scale ({now - self.t0:.1f}s)")
        self.k, self.t0 = self.k + 1, now
