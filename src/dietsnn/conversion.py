"""ANN -> SNN conversion (docs/METHOD.md section 7): the same module tree with each ReLU
replaced by a LIF layer, then layer-by-layer percentile threshold calibration.

Each LIF layer, in order, sees the input current produced by the already calibrated layers
before it; its threshold is the maximum over time of the `percentile` of that current over the
batch. Each layer runs once over the kept spike trains (int8) of the layer before it, in time
chunks that carry the membrane across chunk borders, so memory stays bounded at large T.
A residual block is calibrated the same way, its two LIFs in order: the second one's current is
conv2's plus the shortcut's, both recomputed per time chunk from the kept spike trains.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import distributed
from .config import GAMMA, SURROGATE, ConversionConfig
from .functional import encoding as _encoding
from .functional import surrogate as _surrogate
from .functional.neuron import lif_forward
from .layers import LIF, set_time
from .memory import check_memory
from .models import Network
from .models.resnet import BasicBlock

CHUNK_ELEMENTS = 1 << 23  # floats per time chunk of currents (32 MiB)
CACHE_BYTES = 1 << 30  # keep a layer's currents between its two passes up to this size


def replace_modules(module: nn.Module, kind: type[nn.Module],
                    make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace, in place, every submodule of type `kind` by `make(old)`; returns `module`.
    Conversion uses it one way (ReLU -> LIF), operation counting the other (LIF -> ReLU)."""
    for name, child in module.named_children():
        if isinstance(child, kind):
            setattr(module, name, make(child))
        else:
            replace_modules(child, kind, make)
    return module


def ann_to_snn(
    ann: Network,
    timesteps: int,
    encoding: str = "direct",
    leak: float = 1.0,
    threshold: float = 1.0,
    gamma: float = GAMMA,
    surrogate: str = SURROGATE,
) -> Network:
    """Return a spiking copy of `ann` (the ANN is not modified): every ReLU becomes a LIF with
    `leak` (1 = IF) and `threshold` (set it with `calibrate_thresholds`), weights copied."""
    check_options(timesteps, encoding, leak, threshold, surrogate)
    snn = copy.deepcopy(ann)
    replace_modules(snn, nn.ReLU, lambda _: LIF(leak, threshold, gamma, surrogate))
    snn.timesteps = timesteps
    snn.encoding = encoding
    return snn


def check_options(timesteps: int, encoding: str, leak: float, threshold: float,
                  surrogate: str) -> None:
    """Refuse conversion options out of range (a ValueError naming the option)."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if encoding not in _encoding.ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(_encoding.ENCODINGS)}")
    _surrogate.get(surrogate)
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"leak must be in (0, 1], got {leak}")
    if threshold <= 0.0:
        raise ValueError(f"threshold must be > 0, got {threshold}")


def check_calibration(percentile: float, scale: float, timesteps: int) -> None:
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if scale <= 0.0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if timesteps < 1:
        raise ValueError(f"calibration timesteps must be >= 1, got {timesteps}")


def check_calibration_memory(config: dict | None, images: int, timesteps: int, encoding: str = "direct",
                             device: str | torch.device = "cpu") -> None:
    """Refuse (UserError with the estimate) a calibration of `images` images over `timesteps`
    steps that would not fit in the memory available (`memory.check_memory`)."""
    check_memory(config, images, timesteps, "calibrate", device, encoding,
                 hint="lower the calibration timesteps or the number of calibration images",
                 cache_bytes=CACHE_BYTES, chunk_bytes=CHUNK_ELEMENTS * 4)


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


def _apply(mods: list[nn.Module], x: Tensor) -> Tensor:
    for m in mods:
        x = m(x)
    return x


@torch.no_grad()
def calibrate_thresholds(
    snn: Network,
    images: Tensor,
    percentile: float = ConversionConfig.percentile,
    scale: float = ConversionConfig.scale,
    timesteps: int = ConversionConfig.calib_timesteps,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Set every LIF threshold of `snn` in place from `images` (`[N, C, H, W]`, normalised like
    training). Calibration runs with leak 1 semantics of the current layers for `timesteps`
    steps; thresholds are finally multiplied by `scale`. Returns the thresholds set."""
    check_calibration(percentile, scale, timesteps)
    check_calibration_memory(getattr(snn, "config", None), images.shape[0], timesteps,
                             snn.encoding, images.device)
    was_training = snn.training
    snn.eval()
    B, T = images.shape[0], timesteps
    set_time(snn, T, B)
    x = _encoding.ENCODINGS[snn.encoding](images, T)
    # h, the signal entering the next unit: static [B, ...] or spike trains [T, B, ...] as int8
    # (signed for rate-coded input)
    h: Tensor = x if x.shape[0] == B else x.view(T, B, *x.shape[1:]).to(torch.int8)
    static = x.shape[0] == B
    pending: list[nn.Module] = []
    lifs: list[LIF] = []
    for unit in snn.units():
        if isinstance(unit, LIF):
            h = _calibrate_lif(unit, pending, h, static, T, percentile)
            lifs.append(unit)
        elif isinstance(unit, BasicBlock):
            h = _calibrate_block(unit, pending, h, static, T, percentile)
            lifs += [unit.relu1, unit.relu2]
        elif any(isinstance(m, LIF) for m in unit.modules()):
            raise NotImplementedError(f"calibration of composite unit {type(unit).__name__}")
        else:
            pending.append(unit)
            continue
        static, pending = False, []
    for m in lifs:
        m.threshold.mul_(scale)
        distributed.broadcast_(m.threshold.data)  # every rank keeps rank 0's values
    set_time(snn, None, None)
    snn.train(was_training)
    return [m.threshold.item() for m in lifs]


def _set_threshold(unit: LIF, static_current: Tensor | None, make_chunks, T: int, p: float) -> Tensor:
    """Calibrate `unit` from its input current, either one static `[B, ...]` tensor or
    `make_chunks()`, a fresh iterator of `[t, B, ...]` time chunks; return its int8 spikes."""
    if static_current is not None:  # one current for every step: its percentile is the max
        thr = percentile_of(static_current, p)
        chunks = _static_chunks(static_current, T)
    else:
        thr, chunks = _percentile_pass(make_chunks(), p)
    # a layer whose current never gets above 0 cannot fire at any threshold: keep it usable
    unit.threshold.fill_(thr if thr > 0 else 1.0)
    return _fire(unit, chunks if chunks.cached else make_chunks())


def _calibrate_lif(unit: LIF, pre: list[nn.Module], h: Tensor, static: bool, T: int,
                   p: float) -> Tensor:
    if static:
        return _set_threshold(unit, _apply(pre, h), None, T, p)
    return _set_threshold(unit, None, lambda: _currents(pre, h), T, p)


def _calibrate_block(block: BasicBlock, pre: list[nn.Module], h: Tensor, static: bool, T: int,
                     p: float) -> Tensor:
    """Residual block: relu1 from conv1's current, then relu2 from conv2's current plus the
    shortcut's, both driven by the block input `pre(h)`. Returns relu2's int8 spikes."""
    first = [*pre, block.conv1]
    s1 = _calibrate_lif(block.relu1, first, h, static, T, p)
    skip = [*pre, block.shortcut]
    skip_static = _apply(skip, h) if static else None

    def currents():
        B = s1.shape[1]
        per_step = s1[0].numel() + (0 if static else h[0].numel())
        step = _chunk_steps(per_step * 4, T)
        for t0 in range(0, T, step):
            a = s1[t0 : t0 + step]
            c = _apply(block.main_path(), a.flatten(0, 1).float())
            c = c.view(a.shape[0], B, *c.shape[1:])
            if skip_static is not None:
                yield c + skip_static
            else:
                sk = _apply(skip, h[t0 : t0 + step].flatten(0, 1).float())
                yield c + sk.view(a.shape[0], B, *sk.shape[1:])

    return _set_threshold(block.relu2, None, currents, T, p)


def percentile_of(x: Tensor, p: float) -> float:
    return percentile(x, p).item()


class _Chunks(list):
    cached = True


def _percentile_pass(chunks, p: float) -> tuple[float, _Chunks]:
    """Max over steps of the per-step percentile. The chunks are kept for the firing pass while
    they fit in CACHE_BYTES; beyond it they are dropped (`cached = False`) and recomputed."""
    thr, kept, size = float("-inf"), _Chunks(), 0
    for c in chunks:
        thr = max(thr, *(percentile_of(c[t], p) for t in range(c.shape[0])))
        size += c.numel() * c.element_size()
        if kept.cached and size <= CACHE_BYTES:
            kept.append(c)
        else:
            kept.cached = False
            kept.clear()
    return thr, kept


def _static_chunks(current: Tensor, T: int) -> _Chunks:
    step = _chunk_steps(current[0].numel() if current.dim() else 1, T)
    return _Chunks(current.unsqueeze(0).expand(min(step, T - t0), *current.shape)
                   for t0 in range(0, T, step))


def _fire(unit: LIF, chunks) -> Tensor:
    """Run `unit` over its input current chunks, carrying the membrane; int8 spikes [T, B, ...]."""
    out, u = [], None
    for c in chunks:  # float spikes for at most CHUNK_ELEMENTS at a time, kept as int8
        step = _chunk_steps(c[0].numel(), c.shape[0])
        for t0 in range(0, c.shape[0], step):
            s, _, u = lif_forward(c[t0 : t0 + step], unit.leak, unit.threshold, u,
                                  keep_u_tilde=False)
            out.append(s.to(torch.int8))
    return torch.cat(out)


def _chunk_steps(per_step: int, T: int) -> int:
    return max(1, min(T, CHUNK_ELEMENTS // max(1, per_step)))


def _currents(mods: list[nn.Module], spikes: Tensor):
    """Input currents `[t, B, ...]` of the next LIF, chunk by chunk over time."""
    T, B = spikes.shape[:2]
    step = _chunk_steps(spikes[0].numel() * 4, T)  # currents may have more channels than spikes
    for t0 in range(0, T, step):
        chunk = spikes[t0 : t0 + step]
        c = _apply(mods, chunk.flatten(0, 1).float())
        yield c.view(chunk.shape[0], B, *c.shape[1:])
