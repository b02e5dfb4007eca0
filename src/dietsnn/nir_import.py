"""Import a NIR graph (docs/NIR.md, "Importing a NIR graph") as a dietsnn SNN: a `GraphSNN`
whose layers are built with their public constructors, so it runs, trains, calibrates and is
measured for energy like a converted model.

Mapping, with the step `dt` (the graph's `metadata["dt"]`, else `config.NIR_DT`) and NIR's
forward-Euler reading of the neuron equations:
  nir.LIF  tau dv/dt = (v_leak - v) + r I  ->  v <- (1 - dt/tau) v + (dt/tau) r I:
           LIF(leak = 1 - dt/tau, threshold = v_threshold / g) with the input gain g = r dt/tau
           (the membrane `u = v / g` is DIET-SNN's `u <- leak u + I`)
  nir.IF   dv/dt = r I  ->  v <- v + dt r I:  LIF(leak = 1, threshold = v_threshold / (r dt))
  nir.LIF with tau = r = inf (snnTorch's leak 1, r = tau / dt): LIF(leak = 1, threshold)
  nir.Conv2d -> nn.Conv2d      nir.Linear / Affine -> nn.Linear      nir.Flatten -> nn.Flatten
  nir.AvgPool2d -> nn.AvgPool2d      nir.SumPool2d -> nn.AvgPool2d(divisor_override=1)
  nir.Scale -> folded into the conv/linear before it
  nir.I as the last node -> the output gain r dt (the network already sums its output over time)
This inverts `dietsnn.export` exactly (the neuron metadata's leak and threshold are used where
they match the arrays). Per-neuron arrays must hold one value per layer, `v_leak` must be 0.
Reset: "subtract" (dietsnn's soft reset) or "zero" (NIR's reset to `v_reset` = 0, a
`HardResetLIF`); by default the one the graph's metadata names, else "zero", NIR's own.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from .config import GAMMA, NIR_DT, SURROGATE
from .conversion.modules import GraphSNN
from .errors import UserError
from .functional.encoding import ENCODINGS
from .layers import LIF, HardResetLIF

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
RESETS = ("subtract", "zero")
SAME = 1e-5  # relative spread tolerated in an array that must hold one value per layer


def nir_module():
    """The `nir` package, or a UserError saying how to install it."""
    try:
        import nir
    except ImportError:
        raise UserError("NIR import and export need the `nir` package: pip install nir") from None
    return nir


def is_nir_file(path: str | os.PathLike) -> bool:
    """Whether `path` is an HDF5 file, the container NIR graphs are written in."""
    try:  # never opens a FIFO or device (a read would block): those are no NIR file
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(8) == HDF5_SIGNATURE
    except OSError:
        return False


def read_nir(path: str | os.PathLike) -> Any:
    """The `nir.NIRGraph` in the NIR (HDF5) file `path`, read as data by `nir.read`."""
    nir = nir_module()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such NIR file")
    if not is_nir_file(p):
        raise UserError(f"{p}: not a NIR graph (NIR files are HDF5; this one has no HDF5 "
                        "signature)")
    try:
        graph = nir.read(p)
    except Exception as e:  # noqa: BLE001 - h5py and nir raise many kinds for a bad file
        raise UserError(f"{p}: an HDF5 file but not a readable NIR graph ({type(e).__name__}: "
                        f"{e})") from None
    if not isinstance(graph, nir.NIRGraph):
        raise UserError(f"{p}: holds a single NIR node, not a graph")
    return graph


def _chain(nir, graph) -> list[str]:
    """The node names from the input to the output; a UserError unless the graph is a chain."""
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    pred: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        if a not in succ or b not in pred:
            raise UserError(f"NIR edge ({a!r}, {b!r}) names a node the graph does not have")
        succ[a].append(b)
        pred[b].append(a)
    inputs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise UserError(f"a NIR graph with {len(inputs)} input nodes; dietsnn imports chains "
                        "input -> ... -> output")
    order = inputs
    while not isinstance(graph.nodes[order[-1]], nir.Output):
        name = order[-1]
        if len(succ[name]) != 1 or (len(order) > 1 and len(pred[name]) != 1):
            raise UserError(f"NIR node '{name}' has {len(pred[name])} inputs and "
                            f"{len(succ[name])} outputs; dietsnn imports chains input -> ... -> "
                            "output (no branches, merges or recurrence)")
        order.append(succ[name][0])
        if len(order) > len(graph.nodes):
            raise UserError("the NIR graph has a cycle; dietsnn imports feed-forward chains")
    return order


def _value(arr: Any, name: str, field: str) -> float:
    """The one value every neuron of node `name` has in `field`."""
    a = np.asarray(arr, dtype=np.float64).ravel()
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise UserError(f"NIR node '{name}': {field} is empty or not finite")
    if np.any(np.abs(a - a[0]) > SAME * max(abs(a[0]), 1e-30)):
        raise UserError(f"NIR node '{name}': {field} differs across neurons "
                        f"({a.min():g} .. {a.max():g}); dietsnn has one value per layer")
    return float(a[0])


def _tensor(a: Any) -> Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32).copy())


def _pair(v: Any) -> tuple[int, int]:
    a = np.asarray(v).ravel().tolist()
    return (int(a[0]), int(a[0])) if len(a) == 1 else (int(a[0]), int(a[1]))


def _neuron(nir, node, name: str, dt: float, reset: str, gamma: float, surrogate: str) -> LIF:
    if isinstance(node, nir.IF):
        lam, gain = 1.0, dt * _value(node.r, name, "r")
    elif np.all(np.isposinf(np.asarray(node.tau, np.float64))):  # snnTorch's leak 1:
        if not np.all(np.isposinf(np.asarray(node.r, np.float64))):  # r = tau / dt = inf
            raise UserError(f"NIR node '{name}': tau is infinite but r is not; no input enters")
        lam, gain = 1.0, 1.0
    else:
        decay = dt / _value(node.tau, name, "tau")
        if not 0.0 <= decay <= 1.0:
            raise UserError(f"NIR node '{name}': tau {dt / decay:g} is below the step dt "
                            f"{dt:g}: no leak in [0, 1] (pass the graph's dt to from_nir)")
        lam, gain = 1.0 - decay, decay * _value(node.r, name, "r")
    if isinstance(node, nir.LIF) and _value(node.v_leak, name, "v_leak") != 0.0:
        raise UserError(f"NIR node '{name}': v_leak != 0 (a constant drive) has no dietsnn "
                        "counterpart")
    if reset == "zero" and _value(node.v_reset, name, "v_reset") != 0.0:
        raise UserError(f"NIR node '{name}': v_reset != 0; dietsnn's reset is to zero or by "
                        "subtraction")
    if not gain > 0:
        raise UserError(f"NIR node '{name}': input gain r dt/tau = {gain:g}; it must be > 0")
    threshold = _value(node.v_threshold, name, "v_threshold") / gain
    if not threshold > 0:
        raise UserError(f"NIR node '{name}': threshold {threshold:g}; it must be > 0")
    meta = getattr(node, "metadata", None) or {}
    exact = [meta.get(k) for k in ("leak", "threshold")]  # written by dietsnn's export
    if all(isinstance(v, (int, float, np.floating)) for v in exact) and np.allclose(
            [lam, threshold], np.asarray(exact, np.float64), rtol=1e-4, atol=1e-6):
        lam, threshold = float(exact[0]), float(exact[1])
    cls = HardResetLIF if reset == "zero" else LIF
    return cls(lam, threshold, gamma, surrogate)


def _is_average(w: np.ndarray, bias: np.ndarray, groups: int, dilation: tuple) -> bool:
    """Whether a conv with weight `w` is average pooling: 1/k^2 from each channel to itself."""
    if groups != 1 or dilation != (1, 1) or w.shape[0] != w.shape[1] or np.any(bias):
        return False
    want = np.zeros_like(w)
    want[np.arange(w.shape[0]), np.arange(w.shape[0])] = np.float32(1.0 / (w.shape[2] * w.shape[3]))
    return bool(np.array_equal(w, want))


def _conv(node, name: str) -> nn.Module:
    """nn.Conv2d, or nn.AvgPool2d for a conv that averages (dietsnn's `pooling="conv"`)."""
    w = np.asarray(node.weight, np.float32)
    if w.ndim != 4:
        raise UserError(f"NIR node '{name}': Conv2d weight of shape {w.shape}, expected 4 dims")
    groups = int(node.groups)
    padding = node.padding if isinstance(node.padding, str) else _pair(node.padding)
    bias = np.asarray(node.bias) if node.bias is not None else np.zeros(w.shape[0])
    if (not isinstance(padding, str) and 2 * max(padding) <= min(w.shape[2:])
            and _is_average(w, bias, groups, _pair(node.dilation))):
        return nn.AvgPool2d(tuple(w.shape[2:]), _pair(node.stride), padding)
    m = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), _pair(node.stride),
                  padding, _pair(node.dilation), groups, bias=bool(np.any(bias)))
    with torch.no_grad():
        m.weight.copy_(_tensor(w))
        if m.bias is not None:
            m.bias.copy_(_tensor(bias).reshape(-1))
    return m


def _linear(node, name: str, affine: bool) -> nn.Linear:
    w = np.asarray(node.weight)
    if w.ndim != 2:
        raise UserError(f"NIR node '{name}': weight of shape {w.shape}, expected [out, in]")
    bias = np.asarray(node.bias) if affine else np.zeros(w.shape[0])
    m = nn.Linear(w.shape[1], w.shape[0], bias=bool(np.any(bias)))
    with torch.no_grad():
        m.weight.copy_(_tensor(w))
        if m.bias is not None:
            m.bias.copy_(_tensor(bias).reshape(-1))
    return m


def _fold_scale(prev: nn.Module | None, node, name: str) -> None:
    """Multiply the output of the conv/linear `prev` by nir.Scale `node` (per output)."""
    if not isinstance(prev, (nn.Conv2d, nn.Linear)):
        raise UserError(f"NIR node '{name}' (Scale) follows no Conv2d/Linear to fold into; "
                        "dietsnn has no scaling layer")
    out = prev.weight.shape[0]
    s = np.asarray(node.scale, np.float64)
    per = s.reshape(-1) if s.size in (1, out) else s.reshape(out, -1)
    if per.ndim == 2:
        if np.any(np.abs(per - per[:, :1]) > SAME * np.abs(per[:, :1]).clip(1e-30)):
            raise UserError(f"NIR node '{name}' (Scale) varies within a channel; only one "
                            "scale per output channel folds into the layer before it")
        per = per[:, 0]
    s = torch.as_tensor(np.broadcast_to(per, (out,)).copy(), dtype=prev.weight.dtype)
    with torch.no_grad():
        prev.weight.mul_(s.view(-1, *([1] * (prev.weight.dim() - 1))))
        if prev.bias is not None:
            prev.bias.mul_(s)


def _layers(nir, graph, order: list[str], dt: float, reset_of, gamma: float,
            surrogate: str) -> tuple[list[tuple[str, nn.Module]], float]:
    layers: list[tuple[str, nn.Module]] = []
    gain = 1.0
    for i, name in enumerate(order[1:-1], 1):
        node = graph.nodes[name]
        kind = type(node).__name__
        if isinstance(node, (nir.LIF, nir.IF)):
            m = _neuron(nir, node, name, dt, reset_of(node), gamma, surrogate)
        elif isinstance(node, nir.Conv2d):
            m = _conv(node, name)
        elif isinstance(node, (nir.Affine, nir.Linear)):
            m = _linear(node, name, isinstance(node, nir.Affine))
        elif isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            sumpool = isinstance(node, nir.SumPool2d)
            m = nn.AvgPool2d(_pair(node.kernel_size), _pair(node.stride), _pair(node.padding),
                             divisor_override=1 if sumpool else None)
        elif isinstance(node, nir.Flatten):
            s, e = int(node.start_dim), int(node.end_dim)  # NIR dims exclude the batch dim
            m = nn.Flatten(s + 1 if s >= 0 else s, e + 1 if e >= 0 else e)
        elif isinstance(node, nir.Scale):
            _fold_scale(layers[-1][1] if layers else None, node, name)
            continue
        elif isinstance(node, nir.I) and i == len(order) - 2:  # sums the output over time
            gain = dt * _value(node.r, name, "r")
            continue
        elif isinstance(node, nir.CubaLIF):
            raise UserError(f"NIR node '{name}' (CubaLIF): a synaptic current with its own "
                            "time constant has no dietsnn counterpart (dietsnn's LIF integrates "
                            "its input directly; LIF and IF nodes import)")
        else:
            raise UserError(f"NIR node '{name}' ({kind}) has no dietsnn layer; dietsnn imports "
                            "Conv2d, Linear, Affine, AvgPool2d, SumPool2d, Flatten, Scale, LIF, "
                            "IF and a final I")
        layers.append((name, m))
    return layers, gain


def _shape(types: Any) -> list[int] | None:
    if isinstance(types, dict):
        types = next(iter(types.values()), None)
    if types is None:
        return None
    a = np.asarray(types).ravel()
    return [int(v) for v in a] if a.size and np.all(a > 0) else None


def _sample_shape(shape: list[int] | None, first: nn.Module | None) -> list[int] | None:
    """One sample's shape from a graph's input type, which some exporters (Norse) write with a
    batch of one in front: [1, 784] before a Linear of 784 inputs is one sample of [784]."""
    if not shape:
        return shape
    if isinstance(first, nn.Linear) and shape[-1] == first.in_features and all(
            v == 1 for v in shape[:-1]):
        return [shape[-1]]
    if isinstance(first, nn.Conv2d) and len(shape) == 4 and shape[0] == 1:
        return shape[1:]
    return shape


def from_nir(graph_or_path: Any, timesteps: int | None = None, dt: float | None = None,
             reset: str | None = None, encoding: str | None = None) -> GraphSNN:
    """A dietsnn SNN from a NIR graph (a `nir.NIRGraph`, or the path of a `.nir` file).

    `timesteps`: steps per input (default: the graph's `metadata["timesteps"]`, which dietsnn
    writes). `dt`: the step the neurons' time constants are read with (default: the graph's
    `metadata["dt"]`, else `config.NIR_DT`; Norse writes with 1e-3). `reset`: "subtract" or
    "zero" (default: the graph's `metadata["reset"]` for every neuron, else NIR's reset to zero).
    `encoding`: "direct" or "rate" (default: the graph's, else "direct"). The network sums its
    output node's value over the steps, like the importers of snnTorch, SpikingJelly and Norse.
    A node without a dietsnn counterpart is a UserError that names it."""
    nir = nir_module()
    if isinstance(graph_or_path, (str, os.PathLike)):
        graph = read_nir(graph_or_path)
    elif isinstance(graph_or_path, nir.NIRGraph):
        graph = graph_or_path
    else:
        raise TypeError(f"from_nir takes a nir.NIRGraph or the path of a .nir file, got "
                        f"{type(graph_or_path).__name__}")
    md = dict(graph.metadata or {})
    T = timesteps if timesteps is not None else md.get("timesteps")
    if T is None:
        raise UserError("the NIR graph does not say how many timesteps it runs for (no "
                        "metadata['timesteps']): pass timesteps=T to dietsnn.from_nir")
    T = int(np.asarray(T).item())
    if not 1 <= T <= 100_000:
        raise UserError(f"timesteps must be in 1..100000, got {T}")
    dt = float(np.asarray(dt if dt is not None else md.get("dt", NIR_DT)).item())
    if not 0 < dt < np.inf:
        raise UserError(f"the NIR step dt must be positive and finite, got {dt}")
    enc = str(encoding or md.get("encoding", "direct"))
    if enc not in ENCODINGS:
        raise UserError(f"encoding must be one of {', '.join(ENCODINGS)}, got {enc!r}")
    if reset is not None and reset not in RESETS:
        raise UserError(f"reset must be one of {', '.join(RESETS)}, got {reset!r}")

    def reset_of(node) -> str:
        named = (getattr(node, "metadata", None) or {}).get("reset", md.get("reset"))
        return reset or (named if named in RESETS else "zero")

    surrogate = str(md.get("surrogate", SURROGATE))
    gamma = float(np.asarray(md.get("gamma", GAMMA)).item())
    order = _chain(nir, graph)
    layers, gain = _layers(nir, graph, order, dt, reset_of, gamma, surrogate)
    root, g = nn.Module(), fx.Graph()
    h = g.placeholder("x")
    for i, (name, m) in enumerate(layers):
        key = f"n{i:02d}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
        root.add_module(key, m)
        h = g.call_module(key, (h,))
    g.output(h)
    shape = _sample_shape(_shape(graph.nodes[order[0]].input_type), layers[0][1] if layers else None)
    snn = GraphSNN(fx.GraphModule(root, g, "NIRGraph"), T, enc,
                   len(shape) + 1 if shape else None, f"nir:{md.get('producer', 'unknown')}")
    with torch.no_grad():
        snn.output_gain.fill_(gain)
    if shape:
        snn.config["input_shape"] = shape
        if len(shape) == 3 and shape[1] == shape[2]:
            snn.config.update(in_channels=shape[0], image_size=shape[1])
    out = _shape(graph.nodes[order[-1]].output_type)
    if out and len(out) == 1:
        snn.config["num_classes"] = out[0]
    return snn.eval()
