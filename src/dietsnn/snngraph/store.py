"""A converted graph's architecture as JSON (checkpoint metadata; no pickle, no user code):
every node of the fx graph with its arguments, every module with its constructor arguments,
from closed lists of the functions, methods and layer types a conversion produces. Weights,
leaks, thresholds, bias scales and merge gains are the checkpoint's tensors."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import UserError
from ..layers import LIF, AvgPool2d, Dropout
from .build import KEPT_METHODS
from .modules import GraphSNN, Merge, SpikingMaxPool2d

FORMAT = 1
FUNCTIONS: dict[str, Any] = {
    "torch.flatten": torch.flatten, "operator.getitem": operator.getitem, "getattr": getattr,
    **{f"F.{f.__name__}": f for f in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                                      F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                                      F.adaptive_avg_pool3d)}}
_FUNCTION_NAMES = {id(f): k for k, f in FUNCTIONS.items()}
_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
         "padding_mode")
_POOL = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
# layer type -> (class, constructor arguments read from the layer's attributes)
LAYERS: dict[str, tuple[type, tuple[str, ...]]] = {
    "Conv1d": (nn.Conv1d, _CONV), "Conv2d": (nn.Conv2d, _CONV), "Conv3d": (nn.Conv3d, _CONV),
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "LIF": (LIF, ("gamma", "surrogate")), "Dropout": (Dropout, ("p",)),
    "AvgPool1d": (nn.AvgPool1d, _POOL), "AvgPool2d": (nn.AvgPool2d, (*_POOL, "divisor_override")),
    "AvgPool3d": (nn.AvgPool3d, (*_POOL, "divisor_override")),
    "DietAvgPool2d": (AvgPool2d, (*_POOL, "divisor_override")),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, ("output_size",)),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
    "AdaptiveAvgPool3d": (nn.AdaptiveAvgPool3d, ("output_size",)),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "SpikingMaxPool2d": (SpikingMaxPool2d, ("kernel_size", "stride", "padding", "dilation",
                                            "ceil_mode")),
    "Merge": (Merge, ("kind", "n", "dim")),
}
_LAYER_NAMES = {cls: k for k, (cls, _) in LAYERS.items()}


def _value(v: Any) -> Any:
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if isinstance(v, tuple):
        return {"tuple": [_value(a) for a in v]}
    if isinstance(v, list):
        return [_value(a) for a in v]
    if isinstance(v, slice):
        return {"slice": [_value(v.start), _value(v.stop), _value(v.step)]}
    if v is Ellipsis:
        return {"ellipsis": True}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise UserError(f"cannot save this converted model: argument {v!r} has no JSON form")


def _layer(name: str, m: nn.Module) -> dict:
    kind = _LAYER_NAMES.get(type(m))
    if kind is None:
        raise UserError(f"cannot save this converted model: layer '{name}' "
                        f"({type(m).__name__}) has no stored form")
    cls, fields = LAYERS[kind]
    spec = {"type": kind, "args": {f: _value(getattr(m, f)) for f in fields}}
    if hasattr(m, "bias") and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        spec["args"]["bias"] = m.bias is not None
        spec["input_scale"] = hasattr(m, "input_scale")
    return spec


def graph_json(snn: GraphSNN) -> dict:
    """The architecture of `snn` as a JSON-able dict."""
    gm = snn.net
    nodes, layers = [], {}
    for n in gm.graph.nodes:
        target = n.target
        if n.op == "call_function":
            target = _FUNCTION_NAMES.get(id(n.target))
            if target is None:
                raise UserError(f"cannot save this converted model: function {n.target} at "
                                f"node '{n.name}' has no stored form")
        elif n.op == "call_module":
            layers[n.target] = _layer(n.target, gm.get_submodule(n.target))
        nodes.append({"name": n.name, "op": n.op, "target": target,
                      "args": _value(tuple(n.args)), "kwargs": {k: _value(v) for k, v
                                                                in n.kwargs.items()}})
    return {"format": FORMAT, "input_dims": snn.input_dims, "nodes": nodes, "layers": layers,
            "name": type(gm).__name__}


def _bad(source: str, what: str) -> UserError:
    return UserError(f"{source}: invalid dietsnn graph metadata ({what}); the file is damaged "
                     "or was written by an incompatible tool")


def _load_value(v: Any, env: dict, source: str) -> Any:
    if isinstance(v, list):
        return [_load_value(a, env, source) for a in v]
    if isinstance(v, dict):
        if set(v) == {"node"} and v["node"] in env:
            return env[v["node"]]
        if set(v) == {"tuple"} and isinstance(v["tuple"], list):
            return tuple(_load_value(a, env, source) for a in v["tuple"])
        if set(v) == {"slice"} and isinstance(v["slice"], list) and len(v["slice"]) == 3:
            return slice(*(_load_value(a, env, source) for a in v["slice"]))
        if v == {"ellipsis": True}:
            return Ellipsis
        raise _bad(source, f"argument {v!r}")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise _bad(source, f"argument {v!r}")


def _build_layer(name: str, spec: Any, source: str) -> nn.Module:
    if not isinstance(spec, dict) or spec.get("type") not in LAYERS or not isinstance(
            spec.get("args"), dict):
        raise _bad(source, f"layer {name!r}")
    cls, fields = LAYERS[spec["type"]]
    args = {k: _load_value(v, {}, source) for k, v in spec["args"].items()}
    if set(args) - {*fields, "bias"}:
        raise _bad(source, f"layer {name!r} arguments {sorted(args)}")
    try:
        m = cls(**args)
    except (TypeError, ValueError) as e:
        raise _bad(source, f"layer {name!r}: {e}") from None
    if spec.get("input_scale"):
        m.register_buffer("input_scale", torch.ones(()))
    return m


def graph_from_meta(meta: dict[str, str], source: str) -> GraphSNN:
    """The `GraphSNN` a checkpoint's metadata describes (weights not loaded)."""
    import json

    from ..functional.encoding import ENCODINGS
    try:
        arch, cfg = json.loads(meta["graph"]), json.loads(meta.get("config", "{}"))
        spiking = json.loads(meta.get("spiking", "{}"))
    except ValueError as e:
        raise _bad(source, str(e)) from None
    T = spiking.get("timesteps") if isinstance(spiking, dict) else None
    if not (isinstance(T, int) and not isinstance(T, bool) and 1 <= T <= 100_000):
        raise _bad(source, f"timesteps {T!r}")
    if spiking.get("encoding", "direct") not in ENCODINGS:
        raise _bad(source, f"encoding {spiking.get('encoding')!r}")
    snn = graph_from_json(arch, T, spiking.get("encoding", "direct"), source)
    if not isinstance(cfg, dict):
        raise _bad(source, "config")
    shape = cfg.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and all(
            isinstance(v, int) and 0 < v <= 1 << 20 for v in shape)):
        raise _bad(source, f"input_shape {shape!r}")
    for k in ("in_channels", "image_size", "num_classes"):
        if k in cfg and not (isinstance(cfg[k], int) and 0 < cfg[k] <= 1 << 20):
            raise _bad(source, f"{k} {cfg[k]!r}")
    if not isinstance(cfg.get("source", ""), str):
        raise _bad(source, "source")
    snn.config.update({k: cfg[k] for k in ("source", "input_shape", "in_channels", "image_size",
                                           "num_classes") if k in cfg})
    return snn


def graph_from_json(arch: Any, timesteps: int, encoding: str, source: str) -> GraphSNN:
    """Rebuild the `GraphSNN` that `graph_json` described (weights not loaded)."""
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        raise _bad(source, "unknown graph format")
    root = nn.Module()
    for name, spec in (arch.get("layers") or {}).items():
        parent = root
        *path, leaf = str(name).split(".")
        for p in path:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(leaf, _build_layer(name, spec, source))
    graph, env = fx.Graph(), {}
    for d in arch.get("nodes") or []:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise _bad(source, "node")
        op, target = d.get("op"), d.get("target")
        args = _load_value(d.get("args", {"tuple": []}), env, source)
        kwargs = {k: _load_value(v, env, source) for k, v in (d.get("kwargs") or {}).items()}
        if op == "placeholder":
            node = graph.placeholder(d["name"])
        elif op == "output":
            node = graph.output(args[0])
        elif op == "call_module" and target in (arch.get("layers") or {}):
            node = graph.create_node(op, target, args, kwargs, name=d["name"])
        elif op == "call_function" and target in FUNCTIONS:
            node = graph.create_node(op, FUNCTIONS[target], args, kwargs, name=d["name"])
        elif op == "call_method" and target in KEPT_METHODS:
            node = graph.create_node(op, target, args, kwargs, name=d["name"])
        else:
            raise _bad(source, f"node {d['name']!r} ({op} {target})")
        env[d["name"]] = node
    try:
        graph.lint()
        gm = fx.GraphModule(root, graph, str(arch.get("name", "Converted")))
    except Exception as e:  # noqa: BLE001 - a malformed graph, whatever torch.fx says
        raise _bad(source, f"{type(e).__name__}: {e}") from None
    dims = arch.get("input_dims")
    if dims is not None and not (isinstance(dims, int) and 1 <= dims <= 8):
        raise _bad(source, f"input_dims {dims!r}")
    return GraphSNN(gm, timesteps, encoding, dims)
