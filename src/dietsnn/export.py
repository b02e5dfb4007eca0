"""Export a DIET-SNN to NIR, the Neuromorphic Intermediate Representation (docs/NIR.md).

Mapping, with the graph's step `dt` (default `config.NIR_DT` = 1e-4 s; one NIR step per SNN
timestep):
  Conv2d -> nir.Conv2d (zero bias)    AvgPool2d -> nir.AvgPool2d    Flatten -> nir.Flatten
  Linear -> nir.Linear                Dropout -> skipped (identity at inference)
  AvgPool2d, pooling="conv" -> nir.Conv2d with weight 1/k^2 from each channel to itself
  LIF, leak lam < 1 -> nir.LIF with tau = dt / (1 - lam), r = 1, v_leak = 0,
                       v_threshold = (1 - lam) * v
  LIF, leak lam = 1 -> nir.IF with r = 1 / dt, v_threshold = v   (or, with nonleaky="lif",
                       nir.LIF with tau = dt / 2**-30: a decay that rounds to 1 in float32)
  output Linear -> nir.Linear, the graph's output: logits = sum over the T steps of its value
                   (with integrator=True followed by nir.I, r = 1 / dt, whose state is the sum).
NIR's LIF `tau dv/dt = (v_leak - v) + r I`, Euler-stepped with dt, gives
`v <- (1 - dt/tau) v + (dt/tau) r I`, i.e. `v' <- lam v' + (1 - lam) I` with the values above:
DIET-SNN's `u <- lam u + I` for the membrane scaled by `1 - lam`, hence the scaled threshold.
Per-layer scalar leak and threshold are broadcast to the layer's neuron shape. NIR has no
soft (subtractive) reset; `v_reset = 0` is written and the graph and node metadata say `reset:
subtract` (`zero` for a `HardResetLIF`), with dt, timesteps, encoding and the surrogate. The
defaults (`nonleaky="lif"`, `pooling="conv"`) are the form snnTorch, SpikingJelly, Norse and
`dietsnn.from_nir` all import; `nonleaky="if"`, `pooling="avg"` is the form closest to the model.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import GAMMA, NIR_DT, NIR_NONLEAKY, NIR_POOLING, SURROGATE
from .errors import UserError
from .files import TMP_TAG, file_mode
from .layers import LIF, Dropout, HardResetLIF
from .models import Network
from .nir_import import nir_module

NONLEAKY = ("if", "lif")
POOLING = ("avg", "conv")
LIF_EPS = 2.0**-30  # dt / tau of a leak-1 layer written as nir.LIF (nonleaky="lif")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _full(shape: tuple[int, ...], value: float) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


def _reset(m: LIF) -> str:
    return "zero" if isinstance(m, HardResetLIF) else "subtract"


def _neuron(nir, m: LIF, shape: tuple[int, ...], dt: float, nonleaky: str):
    lam, v = m.leak.detach().item(), m.threshold.detach().item()
    meta = {"leak": lam, "threshold": v, "reset": _reset(m)}
    zero = _full(shape, 0.0)
    if lam >= 1.0 and nonleaky == "if":  # dv/dt = r I: v <- v + dt r I = v + I
        return nir.IF(r=_full(shape, 1.0 / dt), v_threshold=_full(shape, v), v_reset=zero,
                      metadata=meta)
    decay = LIF_EPS if lam >= 1.0 else 1.0 - lam  # dt / tau
    return nir.LIF(tau=_full(shape, dt / decay), r=_full(shape, 1.0), v_leak=zero,
                   v_threshold=_full(shape, decay * v), v_reset=zero, metadata=meta)


def to_nir(model: Network, dt: float = NIR_DT, integrator: bool = False,
           nonleaky: str = NIR_NONLEAKY, pooling: str = NIR_POOLING) -> Any:
    """Return the `nir.NIRGraph` of the SNN `model` (a sequential graph, input to output).

    `dt`: the step in seconds written into the neurons' time constants. `integrator`: end with a
    `nir.I` node that sums the output layer over time (its state after T steps is the logits);
    without it the output is the last layer's current at each step, to be summed by the
    simulation. `nonleaky`: write layers with leak 1 as `nir.IF` ("if") or as `nir.LIF` with a
    decay that rounds to 1 ("lif"). `pooling`: average pooling as `nir.AvgPool2d` ("avg") or as a
    `nir.Conv2d` with fixed weights 1/k^2 from each channel to itself ("conv"). docs/NIR.md says
    which importer needs what."""
    nir = nir_module()
    if not model.is_spiking:
        raise UserError("NIR export needs an SNN checkpoint; this one is an ANN (convert it first)")
    if not 0 < dt < math.inf:
        raise UserError(f"the NIR step dt must be positive and finite, got {dt}")
    if nonleaky not in NONLEAKY:
        raise UserError(f"nonleaky must be one of {', '.join(NONLEAKY)}, got {nonleaky!r}")
    if pooling not in POOLING:
        raise UserError(f"pooling must be one of {', '.join(POOLING)}, got {pooling!r}")
    c = model.config
    shape: tuple[int, ...] = (tuple(c["input_shape"]) if "input_shape" in c else
                              (c["in_channels"], c["image_size"], c["image_size"]))
    nodes: dict[str, Any] = {"input": nir.Input(input_type=np.array(shape))}
    units = [u for u in model.units() if not isinstance(u, (Dropout, nn.Dropout, nn.Identity))]
    last_linear = max((i for i, u in enumerate(units) if isinstance(u, nn.Linear)), default=-1)
    for i, u in enumerate(units):
        name = f"{i:02d}_{type(u).__name__.lower()}"
        if isinstance(u, nn.Conv2d):
            if u.padding_mode != "zeros" or isinstance(u.padding, str):
                raise UserError(f"layer {i}: only zero, explicit conv padding is exported")
            node = nir.Conv2d(input_shape=shape[1:], weight=_np(u.weight), stride=_pair(u.stride),
                              padding=_pair(u.padding), dilation=_pair(u.dilation), groups=u.groups,
                              bias=_np(u.bias) if u.bias is not None else np.zeros(u.out_channels,
                                                                                    np.float32))
            shape = tuple(int(s) for s in node.output_type["output"])
        elif isinstance(u, nn.AvgPool2d):
            k, s, p = _pair(u.kernel_size), _pair(u.stride or u.kernel_size), _pair(u.padding)
            if u.ceil_mode or u.divisor_override or (p.any() and not u.count_include_pad):
                raise UserError(f"layer {i}: only AvgPool2d without ceil_mode, divisor_override "
                                "or excluded padding is exported")
            if pooling == "conv":  # the same average as a convolution with fixed weights
                weight = np.zeros((shape[0], shape[0], *k.tolist()), np.float32)
                weight[np.arange(shape[0]), np.arange(shape[0])] = 1.0 / float(np.prod(k))
                node = nir.Conv2d(input_shape=shape[1:], weight=weight, stride=s, padding=p,
                                  dilation=_pair(1), groups=1, bias=np.zeros(shape[0], np.float32),
                                  metadata={"role": "average pooling"})
            else:
                node = nir.AvgPool2d(kernel_size=k, stride=s, padding=p)
            shape = (shape[0], *((np.array(shape[1:]) + 2 * p - k) // s + 1).tolist())
        elif isinstance(u, nn.Flatten):
            # negative dims: the same in NIR (no batch dim) and in torch (batch first), as
            # importers differ in whether they shift non-negative ones by the batch dim
            rank = len(shape) + 1
            node = nir.Flatten(input_type={"input": np.array(shape)},
                               start_dim=u.start_dim - rank if u.start_dim >= 0 else u.start_dim,
                               end_dim=u.end_dim - rank if u.end_dim >= 0 else u.end_dim)
            shape = tuple(int(s) for s in node.output_type["output"])
        elif isinstance(u, nn.Linear):
            if u.bias is not None:
                node = nir.Affine(weight=_np(u.weight), bias=_np(u.bias))
            else:
                node = nir.Linear(weight=_np(u.weight))
            shape = (u.out_features,)
        elif isinstance(u, LIF):
            node = _neuron(nir, u, shape, dt, nonleaky)
        else:
            raise UserError(f"layer {i} ({type(u).__name__}) has no NIR mapping")
        nodes[name] = node
        if i == last_linear and integrator:  # the non-spiking output layer accumulates over time
            nodes[f"{i:02d}_integrator"] = nir.I(r=_full(shape, 1.0 / dt),
                                             metadata={"role": "output accumulator"})
    nodes["output"] = nir.Output(output_type=np.array(shape))
    names = list(nodes)
    edges = [(a, b) for a, b in zip(names[:-1], names[1:])]
    sc = model.spiking_config()
    resets = {_reset(u) for u in units if isinstance(u, LIF)} or {"subtract"}
    output = ("logits = state of the integrator node after timesteps steps" if integrator else
              "logits = sum over the timesteps steps of the output node's value")
    meta = {"producer": "dietsnn", "arch": c["arch"], "num_classes": c.get("num_classes", 0),
            "dt": float(dt), "timesteps": int(model.timesteps), "encoding": model.encoding,
            "reset": resets.pop() if len(resets) == 1 else "per node (node metadata)",
            "spike_condition": "v > v_threshold, integrate then fire",
            "output": output, "nonleaky": nonleaky, "pooling": pooling,
            "surrogate": sc.get("surrogate", SURROGATE),
            "gamma": float(sc.get("gamma", GAMMA))}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except (ValueError, AssertionError) as e:
        raise UserError(f"the network does not form a valid NIR graph: {e}") from None


def export_nir(model: Network, path: str | os.PathLike, dt: float = NIR_DT,
               integrator: bool = False, nonleaky: str = NIR_NONLEAKY,
               pooling: str = NIR_POOLING) -> Any:
    """Write `to_nir(model, dt, integrator, nonleaky, pooling)` to `path` (HDF5, via
    `nir.write`); returns the graph."""
    nir = nir_module()
    graph = to_nir(model, dt=dt, integrator=integrator, nonleaky=nonleaky, pooling=pooling)
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}{TMP_TAG}", dir=folder)
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return graph
