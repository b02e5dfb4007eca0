"""ANN -> SNN conversion (docs/METHOD.md section 7): the same module tree with each ReLU
replaced by a LIF layer, then layer-by-layer percentile threshold calibration.

Each LIF layer, in order, sees the input current produced by the already calibrated layers
before it; its threshold is the maximum over time of the `percentile` of that current over the
batch. Each layer runs over the spike trains of the layer before it (kept as bits, or re-run
from a constant current: `calibration`), in time chunks that carry the membrane across chunk
borders, so memory stays bounded at large T. A residual block is calibrated the same way, its
two LIFs in order: the second one's current is conv2's plus the shortcut's, both recomputed per
time chunk from the spike trains.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from . import calibration as cal
from .config import GAMMA, MAX_TIMESTEPS, SURROGATE, ConversionConfig
from .errors import check_int, check_number
from .functional import encoding as _encoding
from .functional import surrogate as _surrogate
from .layers import LIF, set_time
from .memory import check_memory
from .models import Network
from .models.resnet import BasicBlock


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
    check_options(timesteps, encoding, leak, threshold, surrogate, gamma)
    snn = copy.deepcopy(ann)
    replace_modules(snn, nn.ReLU, lambda _: LIF(leak, threshold, gamma, surrogate))
    snn.timesteps = timesteps
    snn.encoding = encoding
    return snn


def check_options(timesteps: int, encoding: str, leak: float, threshold: float,
                  surrogate: str, gamma: float = GAMMA) -> None:
    """Refuse conversion options of the wrong type (TypeError) or out of range (ValueError),
    naming the option, as the command line does."""
    check_int("timesteps", timesteps, 1, MAX_TIMESTEPS)
    if encoding not in _encoding.ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {', '.join(_encoding.ENCODINGS)}")
    _surrogate.get(surrogate)
    check_number("leak", leak, 0.0, 1.0)
    check_number("threshold", threshold, 0.0)
    check_number("gamma", gamma, 0.0)


def check_calibration(percentile: float, scale: float, timesteps: int) -> None:
    """Refuse calibration options of the wrong type or out of range, as `check_options`."""
    check_number("percentile", percentile, 0.0, 100.0)
    if percentile <= 1.0:
        raise ValueError(f"percentile is in percent, in (0, 100] (99.7 is the default), and "
                         f"values <= 1 are refused as fractions: got {percentile}; for the "
                         f"{100 * percentile:g}th percentile pass {100 * percentile:g}")
    check_number("scale", scale, 0.0)
    check_int("calibration timesteps", timesteps, 1, MAX_TIMESTEPS)


def check_calibration_memory(config: dict | None, images: int, timesteps: int, encoding: str = "direct",
                             device: str | torch.device = "cpu") -> None:
    """Refuse (UserError with the estimate) a calibration of `images` images over `timesteps`
    steps that would not fit in the memory available (`memory.check_memory`)."""
    check_memory(config, images, timesteps, "calibrate", device, encoding,
                 hint="lower the calibration timesteps or the number of calibration images",
                 cache_bytes=cal.CACHE_BYTES, chunk_bytes=cal.CHUNK_ELEMENTS * 4)


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
    progress: bool = False,
) -> list[float]:
    """Set every LIF threshold of `snn` in place from `images` (`[N, C, H, W]`, normalised like
    training). Calibration runs with leak 1 semantics of the current layers for `timesteps`
    steps; thresholds are finally multiplied by `scale`. Returns the thresholds set. Each
    layer is logged when done (INFO), with a bar over its steps if `progress`."""
    check_calibration(percentile, scale, timesteps)
    check_calibration_memory(getattr(snn, "config", None), images.shape[0], timesteps,
                             snn.encoding, images.device)
    was_training = snn.training
    snn.eval()
    B, T = images.shape[0], timesteps
    set_time(snn, T, B)
    x = _encoding.ENCODINGS[snn.encoding](images, T)
    # h, the signal entering the next unit: static [B, ...] or a source of [T, B, ...] values
    # (the encoded input as int8, signed for rate-coded input; spike trains)
    static = x.shape[0] == B
    h: Tensor | cal.Source = x if static else cal.Kept(x.view(T, B, *x.shape[1:]).to(torch.int8))
    pending: list[nn.Module] = []
    lifs: list[LIF] = []
    names = {id(m): n for n, m in snn.named_modules()}
    prog = cal.Progress([names[id(m)] for m in snn.modules() if isinstance(m, LIF)], T, progress)
    for unit in snn.units():
        if isinstance(unit, LIF):
            h = _calibrate_lif(unit, pending, h, static, T, percentile, prog)
            lifs.append(unit)
        elif isinstance(unit, BasicBlock):
            h = _calibrate_block(unit, pending, h, static, T, percentile, prog)
            lifs += [unit.relu1, unit.relu2]
        elif any(isinstance(m, LIF) for m in unit.modules()):
            raise NotImplementedError(f"calibration of composite unit {type(unit).__name__}")
        else:
            pending.append(unit)
            continue
        static, pending = False, []
    set_time(snn, None, None)
    snn.train(was_training)
    return cal.finish(lifs, scale)


def _set_threshold(unit: LIF, static_current: Tensor | None, make_chunks, T: int, p: float,
                   prog: cal.Progress) -> cal.Source:
    """Calibrate `unit` from its input current, either one static `[B, ...]` tensor or
    `make_chunks()`, a fresh iterator of `[t, B, ...]` time chunks; return its spike trains."""
    if static_current is not None:  # one current for every step: its percentile is the max
        thr = cal.percentile_of(static_current, p)
    else:
        with prog.bar() as bar:
            thr, chunks = cal.max_percentile(make_chunks(), p, bar)
    cal.set_threshold(unit, thr)
    prog.done(unit.threshold.item())
    if static_current is not None:
        return cal.Refire(unit, static_current)
    return cal.fire(unit, chunks if chunks.cached else make_chunks(), T)


def _calibrate_lif(unit: LIF, pre: list[nn.Module], h, static: bool, T: int, p: float,
                   prog: cal.Progress) -> cal.Source:
    if static:
        return _set_threshold(unit, _apply(pre, h), None, T, p, prog)
    return _set_threshold(unit, None, lambda: _currents(pre, h, T), T, p, prog)


def _calibrate_block(block: BasicBlock, pre: list[nn.Module], h, static: bool, T: int,
                     p: float, prog: cal.Progress) -> cal.Source:
    """Residual block: relu1 from conv1's current, then relu2 from conv2's current plus the
    shortcut's, both driven by the block input `pre(h)`. Returns relu2's spike trains."""
    first = [*pre, block.conv1]
    s1 = _calibrate_lif(block.relu1, first, h, static, T, p, prog)
    skip = [*pre, block.shortcut]
    skip_static = _apply(skip, h) if static else None

    def currents():
        B = s1.step_shape[0]
        per_step = math.prod(s1.step_shape) + (0 if static else math.prod(h.step_shape))
        step = cal.chunk_steps(per_step * 4, T)
        for t0 in range(0, T, step):
            t = min(step, T - t0)
            c = _apply(block.main_path(), s1.read(t0, t).flatten(0, 1))
            c = c.view(t, B, *c.shape[1:])
            if skip_static is not None:
                yield c + skip_static
            else:
                sk = _apply(skip, h.read(t0, t).flatten(0, 1))
                yield c + sk.view(t, B, *sk.shape[1:])

    return _set_threshold(block.relu2, None, currents, T, p, prog)


def _currents(mods: list[nn.Module], src: cal.Source, T: int):
    """Input currents `[t, B, ...]` of the next LIF, chunk by chunk over time."""
    B = src.step_shape[0]
    step = cal.chunk_steps(math.prod(src.step_shape) * 4, T)  # currents may have more channels
    for t0 in range(0, T, step):
        t = min(step, T - t0)
        c = _apply(mods, src.read(t0, t).flatten(0, 1))
        yield c.view(t, B, *c.shape[1:])
