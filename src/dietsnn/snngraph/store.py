"""A converted graph's architecture as JSON in the checkpoint's metadata (no pickle, no user
code): every node of the fx graph with its arguments, every layer with its constructor
arguments. Weights, leaks, thresholds, bias scales and merge gains are the checkpoint's tensors.

Reading it back is a closed schema (docs/RELIABILITY.md, "Checkpoints"). The rebuilt
`torch.fx.GraphModule` runs Python source that torch.fx generates from the graph, so nothing
stored reaches that source as written: node names are generated (`x`, `n1`, `n2`, ...,
`output`); a layer name is a dotted path whose parts match `_SEGMENT` and are neither keywords,
dunders nor attributes of `fx.GraphModule`; layer types, functions, tensor methods and their
keywords come from the fixed tables below, each argument checked by type and range; any other
argument is an int, a finite float, a bool, None, a slice, an ellipsis or a short tuple/list of
these (printed by torch.fx with `repr`), nested at most `MAX_DEPTH` deep."""

from __future__ import annotations

import keyword
import math
import operator
import re
import reprlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import CheckpointError, UserError
from ..functional.surrogate import SURROGATES
from ..layers import LIF, AvgPool2d, Dropout
from .build import KEPT_METHODS
from .modules import WEIGHTED, GraphSNN, Merge, SpikingMaxPool2d

FORMAT = 1
# bounds of a stored graph (far beyond any real model; the tensors in the file bound the rest)
MAX_NODES, MAX_DEPTH, MAX_ITEMS, MAX_INT = 10_000, 4, 16, 1 << 31
MAX_SIZE, MAX_WINDOW, MAX_INPUTS, MAX_NAME = 1 << 24, 1 << 12, 1024, 512
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}|[0-9]{1,9}", re.ASCII)
RESERVED = frozenset({*dir(fx.GraphModule), *vars(fx.GraphModule(nn.Module(), fx.Graph()))})
ATTRIBUTES = ("shape",)  # the only attribute a stored graph may read (getattr(x, "shape"))

Rule = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(lo: int, hi: int, none: bool = False) -> Rule:
    return lambda v: (none and v is None) or (_is_int(v) and lo <= v <= hi)


def _ints(lo: int, hi: int, none: bool = False) -> Rule:
    """An int in [lo, hi], or a tuple of 1 to 3 of them (`none`: or None in the tuple)."""
    one = _int(lo, hi, none)
    return lambda v: (_is_int(v) and one(v)) or (
        isinstance(v, tuple) and 1 <= len(v) <= 3 and all(map(one, v)))


def _among(*choices: str) -> Rule:
    return lambda v: isinstance(v, str) and v in choices


def _either(*rules: Rule) -> Rule:
    return lambda v: any(r(v) for r in rules)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


_KERNEL, _PAD = _ints(1, MAX_WINDOW), _ints(0, MAX_WINDOW)
_CONV = {"in_channels": _int(1, MAX_SIZE), "out_channels": _int(1, MAX_SIZE),
         "kernel_size": _KERNEL, "stride": _KERNEL, "padding": _either(_PAD, _among("same",
                                                                                   "valid")),
         "dilation": _KERNEL, "groups": _int(1, MAX_SIZE),
         "padding_mode": _among("zeros", "reflect", "replicate", "circular")}
_POOL = {"kernel_size": _KERNEL, "stride": _either(_KERNEL, lambda v: v is None),
         "padding": _PAD, "ceil_mode": _bool, "count_include_pad": _bool}
_DIVISOR = {"divisor_override": _int(1, MAX_SIZE, none=True)}
_ADAPTIVE = {"output_size": _ints(1, MAX_WINDOW, none=True)}
_DIM = _int(-8, 8)
# layer type -> (class, its constructor arguments (read from the layer's attributes) and rules)
LAYERS: dict[str, tuple[type, dict[str, Rule]]] = {
    "Conv1d": (nn.Conv1d, _CONV), "Conv2d": (nn.Conv2d, _CONV), "Conv3d": (nn.Conv3d, _CONV),
    "Linear": (nn.Linear, {"in_features": _int(1, MAX_SIZE), "out_features": _int(1, MAX_SIZE)}),
    "LIF": (LIF, {"gamma": lambda v: _real(v) and 0 < v <= 1e6,
                  "surrogate": lambda v: isinstance(v, str) and v in SURROGATES}),
    "Dropout": (Dropout, {"p": lambda v: _real(v) and 0 <= v < 1}),
    "AvgPool1d": (nn.AvgPool1d, _POOL), "AvgPool2d": (nn.AvgPool2d, {**_POOL, **_DIVISOR}),
    "AvgPool3d": (nn.AvgPool3d, {**_POOL, **_DIVISOR}),
    "DietAvgPool2d": (AvgPool2d, {**_POOL, **_DIVISOR}),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, _ADAPTIVE),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, _ADAPTIVE),
    "AdaptiveAvgPool3d": (nn.AdaptiveAvgPool3d, _ADAPTIVE),
    "Flatten": (nn.Flatten, {"start_dim": _DIM, "end_dim": _DIM}),
    "SpikingMaxPool2d": (SpikingMaxPool2d, {"kernel_size": _KERNEL, "stride": _KERNEL,
                                            "padding": _PAD, "dilation": _KERNEL,
                                            "ceil_mode": _bool}),
    "Merge": (Merge, {"kind": _among("add", "cat"), "n": _int(1, MAX_INPUTS), "dim": _DIM}),
}
_LAYER_NAMES = {cls: k for k, (cls, _) in LAYERS.items()}
_POOL_KW = tuple(_POOL)
# function -> (the function, most positional arguments, keywords); the first is the tensor
FUNCTIONS: dict[str, tuple[Callable, int, tuple[str, ...]]] = {
    "torch.flatten": (torch.flatten, 3, ("start_dim", "end_dim")),
    "operator.getitem": (operator.getitem, 2, ()), "getattr": (getattr, 2, ()),
    "F.avg_pool1d": (F.avg_pool1d, 6, _POOL_KW),
    **{f"F.{f.__name__}": (f, 7, (*_POOL_KW, "divisor_override"))
       for f in (F.avg_pool2d, F.avg_pool3d)},
    **{f"F.{f.__name__}": (f, 2, ("output_size",))
       for f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)}}
_FUNCTION_NAMES = {id(f): k for k, (f, _, _) in FUNCTIONS.items()}
# tensor method -> (most positional arguments, the tensor included; keywords)
METHODS: dict[str, tuple[int, tuple[str, ...]]] = {
    "view": (9, ()), "reshape": (9, ()), "flatten": (3, ("start_dim", "end_dim")),
    "size": (2, ("dim",)), "contiguous": (1, ()), "mean": (3, ("dim", "keepdim")), "dim": (1, ())}
assert set(METHODS) == KEPT_METHODS  # every method a conversion keeps can be stored


def is_name(name: Any) -> bool:
    """Whether `name` may name a stored layer: dotted parts that match `_SEGMENT`, none a
    keyword, a dunder or an attribute of `fx.GraphModule` (nor of the `nn.Module` in between)."""
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return False
    parts = name.split(".")
    return len(parts) <= 16 and all(
        _SEGMENT.fullmatch(p) and not p.startswith("__") and not keyword.iskeyword(p)
        and p not in RESERVED for p in parts)


# -- writing


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
    if kind is None or not is_name(name):
        raise UserError(f"cannot save this converted model: layer {name!r} "
                        f"({type(m).__name__}) has no stored form")
    spec = {"type": kind, "args": {f: _value(getattr(m, f)) for f in LAYERS[kind][1]}}
    if isinstance(m, WEIGHTED):
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


# -- reading


def _bad(source: str, what: str) -> CheckpointError:
    return CheckpointError(f"{source}: invalid dietsnn graph metadata ({what}); the file is "
                           "damaged or was written by an incompatible tool")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 3, 3, 3
_SHORT.maxstring, _SHORT.maxother = 40, 40


def _show(v: Any) -> str:
    """A short one-line form of a stored value, for messages."""
    return _SHORT.repr(v)


def _dict(v: Any, keys: set[str], required: set[str], what: str, source: str) -> dict:
    if not isinstance(v, dict) or not required <= set(v) or not set(v) <= keys:
        got = (f"the fields {_show(sorted(map(str, v)))}" if isinstance(v, dict)
               else _show(v))
        raise _bad(source, f"{what}: expected an object with the fields "
                   f"{', '.join(sorted(keys))} ({', '.join(sorted(required))} required), "
                   f"got {got}")
    return v


def _arg(v: Any, env: dict[str, fx.Node], source: str, depth: int = 0) -> Any:
    """A node argument: a reference to an earlier node or a plain bounded value."""
    if depth <= MAX_DEPTH:
        if v is None or isinstance(v, bool) or (_is_int(v) and abs(v) <= MAX_INT) or (
                isinstance(v, float) and math.isfinite(v)) or v in ATTRIBUTES:
            return v
        if isinstance(v, list) and len(v) <= MAX_ITEMS:
            return [_arg(a, env, source, depth + 1) for a in v]
        if isinstance(v, dict) and len(v) == 1:
            (kind, x), = v.items()
            if kind == "node" and isinstance(x, str) and x in env:
                return env[x]
            if kind == "tuple" and isinstance(x, list) and len(x) <= MAX_ITEMS:
                return tuple(_arg(a, env, source, depth + 1) for a in x)
            if kind == "slice" and isinstance(x, list) and len(x) == 3:
                return slice(*(_arg(a, env, source, depth + 1) for a in x))
            if kind == "ellipsis" and x is True:
                return Ellipsis
    raise _bad(source, f"argument {_show(v)}")


def _layer_arg(v: Any, source: str) -> Any:
    """A layer's constructor argument: a plain value or a short tuple of them."""
    if isinstance(v, dict) and set(v) == {"tuple"} and isinstance(v["tuple"], list) and len(
            v["tuple"]) <= 3 and all(not isinstance(a, (dict, list)) for a in v["tuple"]):
        return tuple(v["tuple"])
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise _bad(source, f"layer argument {_show(v)}")


def _build_layer(name: str, spec: Any, source: str) -> nn.Module:
    spec = _dict(spec, {"type", "args", "input_scale"}, {"type", "args"}, f"layer {name}",
                 source)
    if not (isinstance(spec["type"], str) and spec["type"] in LAYERS and isinstance(
            spec["args"], dict)):
        raise _bad(source, f"layer {name}: type {_show(spec['type'])}")
    cls, rules = LAYERS[spec["type"]]
    weighted = cls in WEIGHTED
    rules = {**rules, "bias": _bool} if weighted else rules
    args = {}
    for k, v in spec["args"].items():
        v = _layer_arg(v, source)
        if k not in rules or not rules[k](v):
            raise _bad(source, f"layer {name}: {spec['type']} argument {_show(k)} = {_show(v)}")
        args[k] = v
    if not _bool(spec.get("input_scale", False)) or (spec.get("input_scale") and not weighted):
        raise _bad(source, f"layer {name}: input_scale {_show(spec.get('input_scale'))}")
    try:
        m = cls(**args)
    except (TypeError, ValueError, RuntimeError) as e:
        raise _bad(source, f"layer {name}: {str(e).splitlines()[0][:200]}") from None
    if spec.get("input_scale"):
        m.register_buffer("input_scale", torch.ones(()))
    return m


def _layers(specs: Any, source: str) -> nn.Module:
    if not isinstance(specs, dict) or len(specs) > MAX_NODES:
        raise _bad(source, f"layers: expected an object of at most {MAX_NODES} layers")
    root = nn.Module()
    for name, spec in specs.items():
        if not is_name(name):
            raise _bad(source, f"layer name {_show(name)}: expected dotted identifiers, none a "
                       "keyword, a dunder or an nn.Module attribute")
        *path, leaf = name.split(".")
        if any(".".join(path[:i]) in specs for i in range(1, len(path) + 1)):
            raise _bad(source, f"layer {name} inside another layer")
        parent = root
        for p in path:
            if p not in parent._modules:
                parent.add_module(p, nn.Module())
            parent = parent._modules[p]
        parent.add_module(leaf, _build_layer(name, spec, source))
    return root


def _call(d: dict, env: dict[str, fx.Node], layers: dict, root: nn.Module,
          source: str) -> tuple[Any, tuple, dict]:
    """(target, args, kwargs) of a call node, each checked against the tables above."""
    op, target = d["op"], d.get("target")
    args = _arg(d.get("args", {"tuple": []}), env, source)
    kw = d.get("kwargs", {})
    if not isinstance(args, tuple) or not isinstance(kw, dict):
        raise _bad(source, f"node {_show(d['name'])}: arguments")
    kwargs = {k: _arg(v, env, source) for k, v in kw.items()}
    if op == "call_module" and isinstance(target, str) and target in layers:
        m = root.get_submodule(target)
        n = m.n if isinstance(m, Merge) else 1
        if len(args) == n and not kwargs and all(isinstance(a, fx.Node) for a in args):
            return target, args, kwargs
    elif op in ("call_function", "call_method") and isinstance(target, str):
        table = FUNCTIONS if op == "call_function" else METHODS
        if target in table:
            most, keys = table[target][-2:]
            fn = FUNCTIONS[target][0] if op == "call_function" else target
            if (1 <= len(args) <= most and isinstance(args[0], fx.Node) and set(kwargs) <= set(
                    keys) and len(args) + len(kwargs) <= most and (
                    fn is not getattr or (len(args) == 2 and args[1] in ATTRIBUTES))):
                return fn, args, kwargs
    raise _bad(source, f"node {_show(d['name'])}: {_show(op)} {_show(target)} with "
               f"{len(args)} arguments and keywords {_show(sorted(map(str, kwargs)))}")


def graph_from_json(arch: Any, timesteps: int, encoding: str, source: str) -> GraphSNN:
    """Rebuild the `GraphSNN` that `graph_json` described (weights not loaded), or a
    CheckpointError that names the first thing outside the schema."""
    arch = _dict(arch, {"format", "input_dims", "nodes", "layers", "name"},
                 {"format", "nodes", "layers"}, "graph", source)
    if arch["format"] != FORMAT:
        raise _bad(source, f"unknown graph format {_show(arch['format'])}")
    name, dims = arch.get("name", "Converted"), arch.get("input_dims")
    if not (isinstance(name, str) and _SEGMENT.fullmatch(name) and not name[0].isdigit()
            and not name.startswith("__") and not keyword.iskeyword(name)):
        raise _bad(source, f"name {_show(name)}")
    if dims is not None and not (_is_int(dims) and 1 <= dims <= 8):
        raise _bad(source, f"input_dims {_show(dims)}")
    nodes = arch["nodes"]
    if not isinstance(nodes, list) or not 2 <= len(nodes) <= MAX_NODES:
        raise _bad(source, f"nodes: expected a list of 2 to {MAX_NODES} nodes")
    root = _layers(arch["layers"], source)
    graph, env, used = fx.Graph(), {}, set()
    for i, d in enumerate(nodes):
        d = _dict(d, {"name", "op", "target", "args", "kwargs"}, {"name", "op"}, f"node {i}",
                  source)
        key, op = d["name"], d["op"]
        if not isinstance(key, str) or len(key) > MAX_NAME or key in env:
            raise _bad(source, f"node {i}: name {_show(key)} (a string, each once)")
        if (op == "placeholder") != (i == 0) or (op == "output") != (i == len(nodes) - 1):
            raise _bad(source, f"node {i}: {_show(op)} (the first node is the one input, the "
                       "last the one output)")
        if op == "placeholder":
            if d.get("args", {"tuple": []}) != {"tuple": []} or d.get("kwargs", {}):
                raise _bad(source, "the input node takes no arguments")
            env[key] = graph.placeholder("x")
        elif op == "output":
            out = _arg(d.get("args"), env, source)
            if not (isinstance(out, tuple) and len(out) == 1 and isinstance(out[0], fx.Node)
                    and not d.get("kwargs")):
                raise _bad(source, "the output node must return one earlier node")
            env[key] = graph.output(out[0])
        else:
            target, args, kwargs = _call(d, env, arch["layers"], root, source)
            used.add(target if op == "call_module" else None)
            env[key] = graph.create_node(op, target, args, kwargs, name=f"n{i}")
    unused = set(arch["layers"]) - used
    if unused:
        raise _bad(source, f"layer {_show(sorted(unused)[0])} is used by no node")
    try:
        graph.lint()
        gm = fx.GraphModule(root, graph, name)
    except Exception as e:  # noqa: BLE001 - a malformed graph, whatever torch.fx says
        raise _bad(source, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return GraphSNN(gm, timesteps, encoding, dims)
