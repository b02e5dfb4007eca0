"""Export a DIET-SNN to NIR, the Neuromorphic Intermediate Representation (docs/NIR.md).

Mapping (dt = 1, one NIR step per SNN timestep):
  Conv2d -> nir.Conv2d (zero bias)    AvgPool2d -> nir.AvgPool2d    Flatten -> nir.Flatten
  Linear -> nir.Linear                Dropout -> skipped (identity at inference)
  LIF, leak lam < 1 -> nir.LIF with tau = dt / (1 - lam), r = tau / dt, v_leak = 0
  LIF, leak lam = 1 -> nir.IF with r = 1
  output Linear -> nir.Linear then nir.I (integrator, r = 1): logits = sum over T of W * spikes.
NIR's LIF `tau dv/dt = (v_leak - v) + r I`, Euler-stepped with dt, gives
`v <- (1 - dt/tau) v + (dt/tau) r I`, i.e. exactly `v <- lam v + I` with the values above.
Per-layer scalar leak and threshold are broadcast to the layer's neuron shape. NIR has no
soft (subtractive) reset; `v_reset = 0` is written and the graph metadata says `reset:
subtract`, with dt, timesteps, encoding and the surrogate.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import TMP_TAG, file_mode
from .config import GAMMA, SURROGATE
from .errors import UserError
from .layers import LIF, Dropout
from .models import Network


def _nir():
    try:
        import nir
    except ImportError:
        raise UserError("NIR export needs the `nir` package: pip install nir") from None
    return nir


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _neuron(nir, m: LIF, shape: tuple[int, ...], dt: float):
    lam, v = m.leak.detach().item(), m.threshold.detach().item()
    thr = np.full(shape, v, dtype=np.float32)
    meta = {"leak": lam, "threshold": v, "reset": "subtract"}
    if lam >= 1.0:
        return nir.IF(r=np.ones(shape, np.float32), v_threshold=thr,
                      v_reset=np.zeros(shape, np.float32), metadata=meta)
    tau = dt / (1.0 - lam)
    return nir.LIF(tau=np.full(shape, tau, np.float32), r=np.full(shape, tau / dt, np.float32),
                   v_leak=np.zeros(shape, np.float32), v_threshold=thr,
                   v_reset=np.zeros(shape, np.float32), metadata=meta)


def to_nir(model: Network, dt: float = 1.0) -> Any:
    """Return the `nir.NIRGraph` of the SNN `model` (a sequential graph, input to output)."""
    nir = _nir()
    if not model.is_spiking:
        raise UserError("NIR export needs an SNN checkpoint; this one is an ANN (convert it first)")
    c = model.config
    shape: tuple[int, ...] = (c["in_channels"], c["image_size"], c["image_size"])
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
            node = nir.AvgPool2d(kernel_size=k, stride=s, padding=p)
            shape = (shape[0], *((np.array(shape[1:]) + 2 * p - k) // s + 1).tolist())
        elif isinstance(u, nn.Flatten):
            node = nir.Flatten(input_type={"input": np.array(shape)}, start_dim=u.start_dim - 1,
                               end_dim=u.end_dim if u.end_dim < 0 else u.end_dim - 1)
            shape = tuple(int(s) for s in node.output_type["output"])
        elif isinstance(u, nn.Linear):
            if u.bias is not None:
                node = nir.Affine(weight=_np(u.weight), bias=_np(u.bias))
            else:
                node = nir.Linear(weight=_np(u.weight))
            shape = (u.out_features,)
        elif isinstance(u, LIF):
            node = _neuron(nir, u, shape, dt)
        else:
            raise UserError(f"layer {i} ({type(u).__name__}) has no NIR mapping")
        nodes[name] = node
        if i == last_linear:  # the non-spiking output layer accumulates over time
            nodes[f"{i:02d}_integrator"] = nir.I(r=np.ones(shape, np.float32),
                                             metadata={"role": "output accumulator"})
    nodes["output"] = nir.Output(output_type=np.array(shape))
    names = list(nodes)
    edges = [(a, b) for a, b in zip(names[:-1], names[1:])]
    sc = model.spiking_config()
    meta = {"producer": "dietsnn", "arch": c["arch"], "num_classes": c["num_classes"],
            "dt": float(dt), "timesteps": int(model.timesteps), "encoding": model.encoding,
            "reset": "subtract", "spike_condition": "v > v_threshold, integrate then fire",
            "output": "logits = integrator state after timesteps steps",
            "surrogate": sc.get("surrogate", SURROGATE),
            "gamma": float(sc.get("gamma", GAMMA))}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except (ValueError, AssertionError) as e:
        raise UserError(f"the network does not form a valid NIR graph: {e}") from None


def export_nir(model: Network, path: str | os.PathLike) -> Any:
    """Write `to_nir(model)` to `path` (HDF5, via `nir.write`); returns the graph."""
    nir = _nir()
    graph = to_nir(model)
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
