"""A converted graph's architecture as JSON in the checkpoint's metadata (no pickle, no user
code): every node of the fx graph with its arguments, every layer with its constructor
arguments. Weights, leaks, thresholds, bias scales and merge gains are the checkpoint's tensors.

Reading it back is a closed schema (docs/RELIABILITY.md, "Checkpoints"). The rebuilt
`torch.fx.GraphModule` runs Python source that torch.fx generates from the graph, so nothing
stored reaches that source as written: node names are generated (`x`, `n1`, `n2`, ...,
`output`); a layer name is a dotted path whose parts match `SEGMENT` and are neither keywords,
dunders nor attributes of `fx.GraphModule`; layer types, functions, tensor methods and their
arguments come from the fixed tables of `schema`, each argument checked by type and range; any
other argument is an int, a finite float, a bool, None, a slice, an ellipsis or a short tuple/list of
these (printed by torch.fx with `repr`), nested at most `MAX_DEPTH` deep."""

from __future__ import annotations

import keyword
import math
import operator
import reprlib
from typing import Any

import torch
from torch import fx, nn

from ..errors import CheckpointError, UserError
from .modules import WEIGHTED, GraphSNN, Merge
from .schema import (
    ATTRIBUTES,
    FUNCTION_NAMES,
    FUNCTIONS,
    LAYER_NAMES,
    LAYERS,
    MAX_DEPTH,
    MAX_INT,
    MAX_ITEMS,
    MAX_NAME,
    MAX_NODES,
    METHODS,
    SEGMENT,
    fits,
    is_bool,
    is_int,
    is_name,
)

FORMAT = 1


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
    kind = LAYER_NAMES.get(type(m))
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
            target = FUNCTION_NAMES.get(id(n.target))
            if target is None:
                raise UserError(f"cannot save this converted model: function {n.target} at "
                                f"node '{n.name}' has no stored form")
        elif n.op == "call_module":
            layers[n.target] = _layer(n.target, gm.get_submodule(n.target))
        nodes.append({"name": n.name, "op": n.op, "target": target,
                      "args": _value(tuple(n.args)), "kwargs": {k: _value(v) for k, v
                                                                in n.kwargs.items()}})
    return {"format": FORMAT, "input_dims": snn.input_dims, "nodes": nodes, "layers": layers,
            "name": type(gm).__name__, "rescale": snn.rescale}


# -- reading


def _bad(source: str, what: str) -> CheckpointError:
    return CheckpointError(f"{source}: invalid dietsnn graph metadata ({what}); the file is "
                           "damaged or was written by an incompatible tool")


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 3, 3, 3
_SHORT.maxstring, _SHORT.maxother = 40, 40


_show = _SHORT.repr  # a short one-line form of a stored value, for messages


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
        if v is None or isinstance(v, bool) or (is_int(v) and abs(v) <= MAX_INT) or (
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
    rules = {**rules, "bias": is_bool} if weighted else rules
    args = {}
    for k, v in spec["args"].items():
        v = _layer_arg(v, source)
        if k not in rules or not rules[k](v):
            raise _bad(source, f"layer {name}: {spec['type']} argument {_show(k)} = {_show(v)}")
        args[k] = v
    if not is_bool(spec.get("input_scale", False)) or (spec.get("input_scale") and not weighted):
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


def _kind(op: str, target: Any, args: tuple, kwargs: dict,
          kinds: dict[fx.Node, str]) -> str | None:
    """What a call node yields ("tensor", "size" or "int") from what its input nodes yield,
    or None where one of them is of the wrong kind (a size where a tensor is needed...)."""
    first = kinds[args[0]]
    others: list[str] = []
    fx.node.map_arg((args[1:], kwargs), lambda n: others.append(kinds[n]))
    if op == "call_module":  # a layer: tensors in, a tensor out
        return "tensor" if first == "tensor" and set(others) <= {"tensor"} else None
    if target is operator.getitem and first == "size":
        return "int" if is_int(args[1]) else None
    if first != "tensor":
        return None
    if target in ("view", "reshape") and len(args) == 2 and others == ["size"]:
        return "tensor"
    if set(others) - {"int"}:
        return None
    if target is getattr:
        return "size"
    if target == "size":
        return "int" if len(args) + len(kwargs) > 1 else "size"
    return "int" if target == "dim" else "tensor"


def _call(d: dict, env: dict[str, fx.Node], kinds: dict[fx.Node, str], layers: dict,
          root: nn.Module, source: str) -> tuple[Any, tuple, dict, str]:
    """(target, args, kwargs, what it yields) of a call node, each checked against the
    tables of `schema` and the kinds of its input nodes."""
    op, target = d["op"], d.get("target")
    args = _arg(d.get("args", {"tuple": []}), env, source)
    kw = d.get("kwargs", {})
    if not isinstance(args, tuple) or not isinstance(kw, dict):
        raise _bad(source, f"node {_show(d['name'])}: arguments")
    kwargs = {k: _arg(v, env, source) for k, v in kw.items()}
    fn = None
    if op == "call_module" and isinstance(target, str) and target in layers:
        m = root.get_submodule(target)
        if len(args) == (m.n if isinstance(m, Merge) else 1) and not kwargs and all(
                isinstance(a, fx.Node) for a in args):
            fn = target
    elif op == "call_function" and isinstance(target, str) and target in FUNCTIONS:
        fn = FUNCTIONS[target][0] if fits(FUNCTIONS[target][1], args, kwargs) else None
    elif op == "call_method" and isinstance(target, str) and target in METHODS:
        fn = target if fits(METHODS[target], args, kwargs) else None
    kind = _kind(op, fn, args, kwargs, kinds) if fn is not None else None
    if kind is None:
        raise _bad(source, f"node {_show(d['name'])}: {_show(op)} {_show(target)} with "
                   f"{len(args)} arguments and keywords {_show(sorted(map(str, kwargs)))}")
    return fn, args, kwargs, kind


def graph_from_json(arch: Any, timesteps: int, encoding: str, source: str) -> GraphSNN:
    """Rebuild the `GraphSNN` that `graph_json` described (weights not loaded), or a
    CheckpointError that names the first thing outside the schema."""
    arch = _dict(arch, {"format", "input_dims", "nodes", "layers", "name", "rescale"},
                 {"format", "nodes", "layers"}, "graph", source)
    if arch["format"] != FORMAT:
        raise _bad(source, f"unknown graph format {_show(arch['format'])}")
    name, dims = arch.get("name", "Converted"), arch.get("input_dims")
    if not (isinstance(name, str) and SEGMENT.fullmatch(name) and not name[0].isdigit()
            and not name.startswith("__") and not keyword.iskeyword(name)):
        raise _bad(source, f"name {_show(name)}")
    if dims is not None and not (is_int(dims) and 1 <= dims <= 8):
        raise _bad(source, f"input_dims {_show(dims)}")
    rescale = arch.get("rescale", True)  # absent in files written before the flag was stored
    if not is_bool(rescale):
        raise _bad(source, f"rescale {_show(rescale)}")
    nodes = arch["nodes"]
    if not isinstance(nodes, list) or not 2 <= len(nodes) <= MAX_NODES:
        raise _bad(source, f"nodes: expected a list of 2 to {MAX_NODES} nodes")
    root = _layers(arch["layers"], source)
    graph, env, used, kinds = fx.Graph(), {}, set(), {}
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
            kinds[env[key]] = "tensor"
        elif op == "output":
            out = _arg(d.get("args"), env, source)
            if not (isinstance(out, tuple) and len(out) == 1 and isinstance(out[0], fx.Node)
                    and kinds[out[0]] == "tensor" and not d.get("kwargs")):
                raise _bad(source, "the output node must return one earlier node")
            env[key] = graph.output(out[0])
        else:
            target, args, kwargs, kind = _call(d, env, kinds, arch["layers"], root, source)
            used.add(target if op == "call_module" else None)
            env[key] = graph.create_node(op, target, args, kwargs, name=f"n{i}")
            kinds[env[key]] = kind
    unused = set(arch["layers"]) - used
    if unused:
        raise _bad(source, f"layer {_show(sorted(unused)[0])} is used by no node")
    try:
        graph.lint()
        gm = fx.GraphModule(root, graph, name)
    except Exception as e:  # noqa: BLE001 - a malformed graph, whatever torch.fx says
        raise _bad(source, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return GraphSNN(gm, timesteps, encoding, dims, rescale=rescale)
