"""ANN -> SNN conversion (docs/METHOD.md section 7, docs/CONVERSION.md): `convert` and
`calibrate_thresholds`, the public entry points (`dietsnn.convert`,
`dietsnn.calibrate_thresholds`).

`convert` makes the spiking copy of every model, dietsnn's own architectures included, by
tracing and rewriting its graph (`build.graph_to_snn`, a `GraphSNN`); only a model that torch.fx
cannot trace is converted by module replacement (`build.swap_modules`: each ReLU module a LIF,
a `ModuleSNN`). `calibrate_thresholds` sets the thresholds layer by layer over the SNN's graph
(`calibrate.calibrate_graph`); only a spiking network without a graph (a `ModuleSNN`, or one
built from LIF layers by hand) is calibrated by re-running it (`calibrate.calibrate_modules`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .. import logs
from ..config import (
    GAMMA,
    MAX_SAMPLES,
    MAX_TIMESTEPS,
    MAXPOOL,
    SCALES,
    SURROGATE,
    UNITS,
    ConversionConfig,
)
from ..errors import check_int, check_number
from ..evaluation import evaluate
from ..functional import encoding as _encoding
from ..functional import surrogate as _surrogate
from ..layers import lif_layers
from ..memory import check_memory
from ..models import ARCHS, Network, ResNet
from ..models.vgg import VGG
from . import currents as _currents
from .build import (
    ConversionError,
    ModuleSNN,
    fold_batchnorm,
    graph_to_snn,
    replace_modules,
    trace,
)
from .calibrate import apply_scales, calibrate_graph, calibrate_modules
from .modules import GraphSNN, Merge, SpikingMaxPool2d


def paper_units(model: nn.Module) -> bool:
    """Whether `model` is one of dietsnn's architectures (a `VGG` or `ResNet`) without batch
    norm or biases: its SNN keeps every value in the units of the spikes that drive it, as in
    the paper (no output or residual gains: `GraphSNN(rescale=False)`); the defaults are tuned
    so."""
    return (isinstance(model, (VGG, ResNet))
            and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
            and not any(getattr(m, "bias", None) is not None for m in model.modules()))


def convert(
    model: nn.Module,
    timesteps: int,
    encoding: str = ConversionConfig.encoding,
    leak: float = ConversionConfig.leak,
    threshold: float = 1.0,
    gamma: float = GAMMA,
    surrogate: str = SURROGATE,
    maxpool: str = MAXPOOL,
    input_dims: int | None = None,
) -> Network:
    """A spiking copy of the trained ANN `model` (which is not modified), run for `timesteps`
    steps: every ReLU becomes a LIF layer with `leak` (1 = IF) and `threshold` (set it with
    `calibrate_thresholds`). Any `nn.Module` is traced with torch.fx (docs/CONVERSION.md lists
    what each layer becomes); `maxpool`: "spiking" (a max of spike trains) or "avg" (average
    pooling instead). `input_dims`: dims of one input batch (4 for images), needed only for
    time-varying input `[T, B, ...]` when the first layer does not tell. The result is a
    `Network`: `snn(x)` runs all steps and returns the output accumulated over time."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert takes a trained ANN (an nn.Module), got {type(model).__name__}")
    if isinstance(model, Network) and model.is_spiking:
        raise ValueError("the model is already spiking; convert takes the trained ANN")
    check_options(timesteps, encoding, leak, threshold, surrogate, gamma)
    if input_dims is not None:
        check_int("input_dims", input_dims, 1, 16)
    snn = graph_to_snn(model, timesteps, encoding, leak, threshold, gamma, surrogate, maxpool,
                       rescale=not paper_units(model))
    if isinstance(model, Network) and model.config.get("arch") in ARCHS:
        snn.config = dict(model.config)  # rebuilt from its name (checkpoint.load_model)
    if input_dims is not None:
        snn.input_dims = input_dims
    return snn.train(model.training)


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
                 cache_bytes=_currents.CACHE_BYTES, chunk_bytes=_currents.CHUNK_ELEMENTS * 4)


def as_inputs(data: Tensor | Iterable, limit: int | None = ConversionConfig.calib_size) -> Tensor:
    """Calibration inputs from a tensor (used whole), one labelled batch `(x, y)` (x used
    whole) or an iterable of batches (a DataLoader, a list of `(x, y)` pairs or of `x`): the
    first `limit` samples (all if None)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, Tensor) for t in data) and data[1].dim() < data[0].dim() and len(
            data[0]) == len(data[1]):  # a labelled batch: labels have fewer dims than images
        data = data[0]
    if isinstance(data, Tensor):
        return data
    xs, n = [], 0
    for batch in data:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor):
            raise TypeError(f"calibration batches must be tensors or (x, y) pairs, got "
                            f"{type(x).__name__}")
        xs.append(x)
        n += len(x)
        if limit is not None and n >= limit:
            break
    if not xs:
        raise ValueError("no calibration data: the iterable yielded no batch")
    return torch.cat(xs)[:limit]


def calibrate_thresholds(
    snn: Network,
    data: Tensor | Iterable,
    percentile: float = ConversionConfig.percentile,
    scale: float | str = ConversionConfig.scale,
    timesteps: int = ConversionConfig.calib_timesteps,
    limit: int | None = ConversionConfig.calib_size,
    validation: tuple[Tensor, Tensor] | Iterable | None = None,
    progress: bool = False,
    units: str = ConversionConfig.units,
) -> list[float]:
    """Set every LIF threshold of `snn` (from `convert`) in place, layer by layer, from
    calibration inputs `data` normalised like training (a tensor, used whole, or an iterable of
    batches, of which the first `limit` samples are used): each threshold is the maximum over
    `timesteps` steps of the `percentile` of its input current, all finally times `scale`
    (docs/METHOD.md section 7.2). `scale="auto"`: the scale of `config.SCALES` with the best
    accuracy of the SNN, run at its own timesteps, on `validation` (an `(x, y)` pair of tensors
    or an iterable of `(x, y)` batches; `choose_scale`). `units`: those of the biases, residual
    gains and output gain of a model with biases or residual adds, "scaled" (from the thresholds
    after the scale) or "calibrated" (before it); "auto" chooses them with `scale="auto"`
    (`choose_units`), else takes "scaled". Each layer is logged when calibrated (INFO on the
    "dietsnn" logger), with a bar over its steps if `progress`. Returns the thresholds set."""
    if not isinstance(snn, Network) or not snn.is_spiking:
        raise TypeError(f"calibrate_thresholds takes the SNN returned by dietsnn.convert, got "
                        f"{type(snn).__name__}")
    auto = isinstance(scale, str)
    if auto and scale != "auto":
        raise ValueError(f"scale must be a number > 0 or 'auto', got {scale!r}")
    if auto and validation is None:
        raise ValueError('scale="auto" chooses the scale on validation data: pass '
                         "validation=(x, y)")
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    check_calibration(percentile, 1.0 if auto else scale, timesteps)
    if limit is not None:
        check_int("limit", limit, 1, MAX_SAMPLES)
    x = as_inputs(data, limit)
    if not x.is_floating_point():
        raise TypeError(f"calibration data must be floating-point inputs normalised like "
                        f"training, got {x.dtype}")
    bad = int((~x.isfinite()).sum())
    if bad:
        raise ValueError(f"calibration data holds {bad} NaN or infinite values of {x.numel()}; "
                         "give finite inputs normalised like training")
    x = x.to(next(snn.parameters()).device)
    check_calibration_memory(snn.config, x.shape[0], timesteps, snn.encoding, x.device)
    s = 1.0 if auto else scale
    if isinstance(snn, GraphSNN):
        thresholds = calibrate_graph(snn, x, percentile, s, timesteps, progress,
                                     "scaled" if units == "auto" else units)
    else:  # no graph (a ModuleSNN, or a network built from LIF layers by hand): re-run it
        thresholds = calibrate_modules(snn, x, percentile, s, timesteps)
    if not auto:
        return thresholds
    units, best, scans = choose_units(snn, *labelled(validation), units=units)
    logs.info(f"scale {best}, {units} units: validation accuracy "
              f"{scans[units][best]:.4f} (" + "; ".join(
                  f"{u}: " + ", ".join(f"{s} {a:.4f}" for s, a in accs.items())
                  for u, accs in scans.items()) + ")")
    return [torch.tensor(best * r, dtype=torch.float32).item() for r in thresholds]


def labelled(data: tuple[Tensor, Tensor] | Iterable) -> tuple[Tensor, Tensor]:
    """Inputs and labels from an `(x, y)` pair of tensors or an iterable of `(x, y)` batches."""
    if (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, Tensor) for t in data)):
        return data[0], data[1]
    xs, ys = [], []
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise TypeError("validation data must be an (x, y) pair of tensors or an iterable "
                            f"of (x, y) batches, got a batch of type {type(batch).__name__}")
        xs.append(batch[0])
        ys.append(batch[1])
    if not xs:
        raise ValueError("no validation data: the iterable yielded no batch")
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def choose_scale(snn: Network, x: Tensor, y: Tensor, scales: Iterable[float] = SCALES,
                 device: str | torch.device | None = None,
                 climb: bool = True, units: str = "scaled") -> tuple[float, dict[float, float]]:
    """Scale the SNN's present thresholds (calibrated with scale 1) by scales of `scales`,
    measure the accuracy on `(x, y)` at the SNN's own timesteps and keep the best scale (a tie
    goes to the one closest to `ConversionConfig.scale`). With `climb`, the accuracy is taken
    to rise and then fall over the sorted scales: the search measures the scale closest to the
    default and its two neighbours, then extends towards the best one while it lies at the edge
    of what was measured (3-4 of the 7 default scales); otherwise every scale is measured.
    Biases and gains follow each scale in `units` ("scaled" or "calibrated", `apply_scales`).
    Returns the chosen scale and the accuracy of each scale measured, in ascending order."""
    if units not in ("scaled", "calibrated"):
        raise ValueError(f"units must be one of scaled, calibrated, got {units!r}")
    device = device if device is not None else next(snn.parameters()).device
    raw = [m.threshold.item() for _, m in lif_layers(snn)]
    order = sorted(set(scales))
    accs: dict[float, float] = {}

    def best() -> float:
        return max(accs, key=lambda k: (accs[k], -abs(k - ConversionConfig.scale)))

    def measure(i: int) -> None:
        if 0 <= i < len(order) and order[i] not in accs:
            _set_scale(snn, raw, order[i], units)
            accs[order[i]] = evaluate(snn, x, y, device=device)["accuracy"]

    if climb:
        i = min(range(len(order)), key=lambda k: abs(order[k] - ConversionConfig.scale))
        for k in (i - 1, i, i + 1):
            measure(k)
        while True:
            b = order.index(best())
            lo, hi = order.index(min(accs)), order.index(max(accs))
            edge = b - 1 if b == lo else b + 1 if b == hi else -1
            if not 0 <= edge < len(order):
                break
            measure(edge)
    else:
        for k in range(len(order)):
            measure(k)
    s = best()
    _set_scale(snn, raw, s, units)
    return s, dict(sorted(accs.items()))


def has_units(snn: Network) -> bool:
    """Whether the units of `snn`'s biases and residual gains can change what it computes: a
    `GraphSNN` with rescaling and a bias or a merge (the output gain alone scales the logits,
    which leaves every prediction as it is)."""
    return isinstance(snn, GraphSNN) and snn.rescale and any(
        isinstance(m, Merge) or (getattr(m, "bias", None) is not None
                                 and hasattr(m, "input_scale")) for m in snn.modules())


def _set_scale(snn: Network, raw: list[float], scale: float, units: str = "scaled") -> None:
    """Every LIF threshold of `snn` to `scale` times its entry of `raw` (thresholds calibrated
    with scale 1, in `lif_layers` order), biases and gains in `units` (`apply_scales`)."""
    for (_, m), r in zip(lif_layers(snn), raw):
        m.threshold.fill_(scale * r)
    if isinstance(snn, GraphSNN):
        apply_scales(snn, scale, units)


@torch.no_grad()
def choose_units(snn: Network, x: Tensor, y: Tensor,
                 device: str | torch.device | None = None, units: str = "auto"
                 ) -> tuple[str, float, dict[str, dict[float, float]]]:
    """`choose_scale` in `units`, or with "auto" in each of "scaled" and "calibrated" (only
    "scaled" where the units cannot matter, `has_units`), from the present thresholds,
    calibrated with scale 1; keeps the units and scale of the best validation accuracy (a tie
    goes to "scaled") and returns them with the accuracies measured in each units."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
    if units != "auto":
        s, accs = choose_scale(snn, x, y, device=device, units=units)
        return units, s, {units: accs}
    raw = [m.threshold.item() for _, m in lif_layers(snn)]
    found: dict[str, tuple[float, dict[float, float]]] = {}
    for u in ("scaled", "calibrated") if has_units(snn) else ("scaled",):
        for (_, m), r in zip(lif_layers(snn), raw):  # choose_scale reads these, sets the rest
            m.threshold.fill_(r)
        found[u] = choose_scale(snn, x, y, device=device, units=u)
    units = max(found, key=lambda u: max(found[u][1].values()))  # first of equals: "scaled"
    s, _ = found[units]
    _set_scale(snn, raw, s, units)
    return units, s, {u: accs for u, (_, accs) in found.items()}


__all__ = ["ConversionError", "GraphSNN", "Merge", "ModuleSNN", "SpikingMaxPool2d",
           "apply_scales", "as_inputs", "calibrate_thresholds", "check_calibration",
           "check_calibration_memory", "check_options", "choose_scale", "choose_units", "convert",
           "fold_batchnorm", "has_units", "labelled", "paper_units", "replace_modules", "trace"]
