"""The closed schema of a converted graph stored in a checkpoint (docs/RELIABILITY.md,
"Checkpoints"): the layer types with a rule for each constructor argument, the functions and
tensor methods with the arguments each may take, and the names a layer may have. Every rule
is a predicate on a value already read from JSON (ints, floats, bools, None, strings, tuples,
lists, slices, the ellipsis and references to earlier nodes)."""

from __future__ import annotations

import keyword
import math
import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..functional.surrogate import SURROGATES
from ..layers import LIF, AvgPool2d, Dropout, HardResetLIF
from .build import KEPT_METHODS
from .modules import Merge, SpikingMaxPool2d

# bounds of a stored graph (far beyond any real model; the tensors in the file bound the rest)
MAX_NODES, MAX_DEPTH, MAX_ITEMS, MAX_INT = 10_000, 4, 16, 1 << 31
MAX_SIZE, MAX_WINDOW, MAX_INPUTS, MAX_NAME = 1 << 24, 1 << 12, 1024, 512
SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}|[0-9]{1,9}", re.ASCII)
RESERVED = frozenset({*dir(fx.GraphModule), *vars(fx.GraphModule(nn.Module(), fx.Graph()))})
ATTRIBUTES = ("shape",)  # the only attribute a stored graph may read (getattr(x, "shape"))

Rule = Callable[[Any], bool]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(lo: int, hi: int, none: bool = False) -> Rule:
    return lambda v: (none and v is None) or (is_int(v) and lo <= v <= hi)


def _ints(lo: int, hi: int, none: bool = False) -> Rule:
    """An int in [lo, hi], or a tuple of 1 to 3 of them (`none`: or None in the tuple)."""
    one = _int(lo, hi, none)
    return lambda v: (is_int(v) and one(v)) or (
        isinstance(v, tuple) and 1 <= len(v) <= 3 and all(map(one, v)))


def _among(*choices: str) -> Rule:
    return lambda v: isinstance(v, str) and v in choices


def _either(*rules: Rule) -> Rule:
    return lambda v: any(r(v) for r in rules)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


_KERNEL, _PAD = _ints(1, MAX_WINDOW), _ints(0, MAX_WINDOW)
_CONV = {"in_channels": _int(1, MAX_SIZE), "out_channels": _int(1, MAX_SIZE),
         "kernel_size": _KERNEL, "stride": _KERNEL, "padding": _either(_PAD, _among("same",
                                                                                   "valid")),
         "dilation": _KERNEL, "groups": _int(1, MAX_SIZE),
         "padding_mode": _among("zeros", "reflect", "replicate", "circular")}
_POOL = {"kernel_size": _KERNEL, "stride": _either(_KERNEL, lambda v: v is None),
         "padding": _PAD, "ceil_mode": is_bool, "count_include_pad": is_bool}
_DIVISOR = {"divisor_override": _int(1, MAX_SIZE, none=True)}
_ADAPTIVE = {"output_size": _ints(1, MAX_WINDOW, none=True)}
_DIM = _int(-8, 8)
_NEURON = {"gamma": lambda v: is_real(v) and 0 < v <= 1e6,
           "surrogate": lambda v: isinstance(v, str) and v in SURROGATES}
# layer type -> (class, its constructor arguments (read from the layer's attributes) and rules)
LAYERS: dict[str, tuple[type, dict[str, Rule]]] = {
    "Conv1d": (nn.Conv1d, _CONV), "Conv2d": (nn.Conv2d, _CONV), "Conv3d": (nn.Conv3d, _CONV),
    "Linear": (nn.Linear, {"in_features": _int(1, MAX_SIZE), "out_features": _int(1, MAX_SIZE)}),
    "LIF": (LIF, _NEURON),
    "HardResetLIF": (HardResetLIF, _NEURON),
    "Dropout": (Dropout, {"p": lambda v: is_real(v) and 0 <= v < 1}),
    "AvgPool1d": (nn.AvgPool1d, _POOL), "AvgPool2d": (nn.AvgPool2d, {**_POOL, **_DIVISOR}),
    "AvgPool3d": (nn.AvgPool3d, {**_POOL, **_DIVISOR}),
    "DietAvgPool2d": (AvgPool2d, {**_POOL, **_DIVISOR}),
    "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, _ADAPTIVE),
    "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, _ADAPTIVE),
    "AdaptiveAvgPool3d": (nn.AdaptiveAvgPool3d, _ADAPTIVE),
    "Flatten": (nn.Flatten, {"start_dim": _DIM, "end_dim": _DIM}),
    "SpikingMaxPool2d": (SpikingMaxPool2d, {"kernel_size": _KERNEL, "stride": _KERNEL,
                                            "padding": _PAD, "dilation": _KERNEL,
                                            "ceil_mode": is_bool}),
    "Merge": (Merge, {"kind": _among("add", "cat"), "n": _int(1, MAX_INPUTS), "dim": _DIM}),
}
LAYER_NAMES = {cls: k for k, (cls, _) in LAYERS.items()}


def _seq(rule: Rule, most: int = 8) -> Rule:
    """`rule`, or a tuple/list of at most `most` values that each satisfy it."""
    return lambda v: rule(v) or (isinstance(v, (tuple, list)) and len(v) <= most and all(
        map(rule, v)))


def _node(v: Any) -> bool:
    return isinstance(v, fx.Node)


_SIZE = _either(_node, _int(-1, MAX_SIZE))  # a size in view/reshape, or a computed one
_PART = _either(_int(-MAX_SIZE, MAX_SIZE, none=True), _node, lambda v: v is Ellipsis or (
    isinstance(v, slice) and all(map(_either(_int(-MAX_SIZE, MAX_SIZE, none=True), _node),
                                     (v.start, v.stop, v.step)))))


class Signature(NamedTuple):
    """What a stored function or tensor method may take after the tensor: `params` (name,
    rule) in order, by position or (`keywords`) by name, at least `required` of them;
    `rest`: any number of values that each satisfy this rule (the sizes of view/reshape)."""

    params: tuple[tuple[str, Rule], ...] = ()
    keywords: bool = True
    required: int = 0
    rest: Rule | None = None


_POOL_SIG = tuple((k, r) for k, r in _POOL.items())
_DIV_SIG = (*_POOL_SIG, *_DIVISOR.items())
FUNCTIONS: dict[str, tuple[Callable, Signature]] = {
    "torch.flatten": (torch.flatten, Signature((("start_dim", _DIM), ("end_dim", _DIM)))),
    "operator.getitem": (operator.getitem, Signature((("index", _seq(_PART)),), False, 1)),
    "getattr": (getattr, Signature((("name", _among(*ATTRIBUTES)),), False, 1)),
    "F.avg_pool1d": (F.avg_pool1d, Signature(_POOL_SIG, required=1)),
    **{f"F.{f.__name__}": (f, Signature(_DIV_SIG, required=1))
       for f in (F.avg_pool2d, F.avg_pool3d)},
    **{f"F.{f.__name__}": (f, Signature(tuple(_ADAPTIVE.items()), required=1))
       for f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)}}
FUNCTION_NAMES = {id(f): k for k, (f, _) in FUNCTIONS.items()}
METHODS: dict[str, Signature] = {
    "view": Signature(keywords=False, rest=_seq(_SIZE)),
    "reshape": Signature(keywords=False, rest=_seq(_SIZE)),
    "flatten": Signature((("start_dim", _DIM), ("end_dim", _DIM))),
    "size": Signature((("dim", _DIM),)), "contiguous": Signature(), "dim": Signature(),
    "mean": Signature((("dim", _seq(_DIM)), ("keepdim", is_bool)), required=1)}
assert set(METHODS) == KEPT_METHODS  # every method a conversion keeps can be stored


def is_name(name: Any) -> bool:
    """Whether `name` may name a stored layer: dotted parts that match `SEGMENT`, none a
    keyword, a dunder or an attribute of `fx.GraphModule` (nor of the `nn.Module` in between)."""
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return False
    parts = name.split(".")
    return len(parts) <= 16 and all(
        SEGMENT.fullmatch(p) and not p.startswith("__") and not keyword.iskeyword(p)
        and p not in RESERVED for p in parts)


def fits(sig: Signature, args: tuple, kwargs: dict) -> bool:
    """Whether a tensor (`args[0]`) and the arguments after it fit `sig`."""
    if not args or not _node(args[0]):
        return False
    rest, names = args[1:], [k for k, _ in sig.params]
    if sig.rest is not None:
        return not kwargs and len(rest) <= 8 and all(map(sig.rest, rest))
    bound = dict(zip(names, rest))
    if len(rest) > len(names) or (kwargs and not sig.keywords) or set(kwargs) - set(
            names[len(rest):]) or set(names[:sig.required]) - {*bound, *kwargs}:
        return False
    rules = dict(sig.params)
    return all(rules[k](v) for k, v in {**bound, **kwargs}.items())


