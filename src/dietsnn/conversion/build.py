"""Any PyTorch ANN -> a spiking `GraphSNN` (docs/CONVERSION.md): the model is traced with
`torch.fx`, then every node is mapped: each ReLU call site (module, `F.relu`, `torch.relu`,
`.relu()`) becomes its own LIF, BatchNorm is folded into the conv/linear before it, max pooling
becomes `SpikingMaxPool2d` (or average pooling), dropout the fixed-over-time `Dropout`, residual
adds and concatenations `Merge`; layers that act per step (conv, linear, average pooling,
flatten, view, reshape) are kept. Anything else is an error that names the node."""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..config import GAMMA, MAXPOOL, MAXPOOL_MODES, SURROGATE
from ..errors import UserError
from ..layers import LIF, AvgPool2d, Dropout
from ..models.base import Network
from .modules import WEIGHTED, GraphSNN, Merge, SpikingMaxPool2d

RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
CAT_FUNCTIONS = {torch.cat, torch.concat}
# functions and tensor methods that act on each sample (and so on each step) alone
KEPT_FUNCTIONS = {operator.getitem, getattr}
AS_MODULES = {F.avg_pool1d: nn.AvgPool1d, F.avg_pool2d: nn.AvgPool2d, F.avg_pool3d: nn.AvgPool3d,
              F.adaptive_avg_pool1d: nn.AdaptiveAvgPool1d,
              F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d,
              F.adaptive_avg_pool3d: nn.AdaptiveAvgPool3d}
KEPT_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "mean", "dim"}
KEPT_MODULES = (*WEIGHTED, nn.Flatten, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
SUPPORTED = ("ReLU (module, F.relu, torch.relu, .relu()), Conv1d/2d/3d, Linear, BatchNorm after "
             "a conv/linear, MaxPool2d, AvgPool, AdaptiveAvgPool, Dropout, Identity, Flatten, "
             "view/reshape/flatten, residual add, torch.cat")


class ConversionError(UserError):
    """The model holds a layer or operation that has no spiking counterpart."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (Dropout, AvgPool2d, LIF)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """`model` as a `torch.fx.GraphModule` (a dietsnn `Network` traced as its ANN body)."""
    root = copy.deepcopy(model).eval()
    tracer = _Tracer()
    if isinstance(root, Network):
        tracer.traced_func_name = "body"
    return fx.GraphModule(root, tracer.trace(root), type(model).__name__)


def graph_to_snn(model: nn.Module, timesteps: int, encoding: str = "direct", leak: float = 1.0,
                 threshold: float = 1.0, gamma: float = GAMMA, surrogate: str = SURROGATE,
                 maxpool: str = MAXPOOL, rescale: bool = True) -> Network:
    """Trace `model` and build its spiking copy, a `GraphSNN` (the model itself is not
    modified). Where tracing fails, warn and convert by module replacement
    (`replacement_snn`)."""
    if maxpool not in MAXPOOL_MODES:
        raise ValueError(f"maxpool must be one of {', '.join(MAXPOOL_MODES)}, got {maxpool!r}")
    source = f"{type(model).__module__}:{type(model).__qualname__}"
    try:
        gm = trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure has the same remedy
        why = " ".join(str(e).split())[:300]
        warnings.warn(f"dietsnn.convert: torch.fx cannot trace {type(model).__name__} "
                      f"({type(e).__name__}: {why}); converting by module replacement instead: "
                      "each nn.ReLU module becomes a LIF, but F.relu calls are not seen, a ReLU "
                      "module used twice shares one threshold, biases are not rescaled and "
                      "BatchNorm is refused. Make forward traceable (no data-dependent Python "
                      "control flow) for a full conversion", stacklevel=3)
        return replacement_snn(model, timesteps, encoding, leak, threshold, gamma, surrogate,
                               maxpool, source)
    _Rewriter(gm, lambda: LIF(leak, threshold, gamma, surrogate), maxpool).run()
    gm = fx.GraphModule(gm, gm.graph, gm.__class__.__name__)  # modules in execution order
    return GraphSNN(gm, timesteps, encoding, _input_dims(gm), source, rescale)


def _input_dims(gm: fx.GraphModule) -> int | None:
    """Dims of one input batch, from the first layer that reads the input, if it tells."""
    dims = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            for user in n.users:
                if user.op == "call_module":
                    d = dims.get(type(gm.get_submodule(user.target)))
                    if d:
                        return d
    return None


def fold_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of conv/linear `layer` with eval-mode `bn` folded in: `bn(layer(x))` exactly."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConversionError(f"BatchNorm {bn} keeps no running statistics "
                              "(track_running_stats=False): nothing to fold")
    out = copy.deepcopy(layer)
    with torch.no_grad():
        g = (bn.running_var.double() + bn.eps).rsqrt()
        if bn.weight is not None:
            g = g * bn.weight.double()
        shift = -bn.running_mean.double() * g
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        w = layer.weight.double() * g.view(-1, *([1] * (layer.weight.dim() - 1)))
        b = shift if layer.bias is None else layer.bias.double() * g + shift
        out.weight = nn.Parameter(w.to(layer.weight.dtype))
        out.bias = nn.Parameter(b.to(layer.weight.dtype))
    return out


class _Rewriter:
    def __init__(self, gm: fx.GraphModule, make_lif, maxpool: str) -> None:
        self.gm, self.g, self.make_lif, self.maxpool = gm, gm.graph, make_lif, maxpool
        self.calls: dict[str, int] = {}  # module target -> call sites seen
        for n in self.g.nodes:
            if n.op == "call_module":
                self.calls[n.target] = self.calls.get(n.target, 0) + 1

    def fail(self, n: fx.Node, what: str, why: str = "") -> None:
        raise ConversionError(f"cannot convert {what} at node '{n.name}'"
                              f"{': ' + why if why else ''}; supported: {SUPPORTED}")

    def site(self, n: fx.Node) -> str:
        """Module name for the replacement of call site `n`: the module's own name, or a new
        one for each call site of a module called at several."""
        return n.target if self.calls[n.target] == 1 else self.fresh(n.target)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while self._exists(name):
            name, k = f"{base}_{k}", k + 1
        return name

    def _exists(self, name: str) -> bool:
        try:
            self.gm.get_submodule(name)
            return True
        except AttributeError:
            return False

    def replace(self, n: fx.Node, module: nn.Module, name: str, args=None) -> None:
        self.gm.add_submodule(name, module)
        with self.g.inserting_after(n):
            new = self.g.call_module(name, tuple(args if args is not None else n.args[:1]))
        n.replace_all_uses_with(new)
        self.g.erase_node(n)

    def run(self) -> None:
        for n in list(self.g.nodes):
            if n.op == "call_module":
                self.module(n, self.gm.get_submodule(n.target))
            elif n.op == "call_function":
                self.function(n)
            elif n.op == "call_method":
                self.method(n)
            elif n.op == "get_attr":
                self.fail(n, f"a tensor attribute '{n.target}' used in forward")
        self.g.eliminate_dead_code()
        self.g.lint()
        self.gm.delete_all_unused_submodules()
        self.gm.recompile()

    def module(self, n: fx.Node, m: nn.Module) -> None:
        kind = type(m).__name__
        label = f"{kind} '{n.target}'"
        if isinstance(m, LIF):
            self.fail(n, label, "the model is already spiking")
        elif isinstance(m, nn.ReLU):  # one LIF per call site: a shared ReLU gets several
            self.replace(n, self.make_lif(), self.site(n))
        elif isinstance(m, BATCHNORMS):
            self.batchnorm(n, m, label)
        elif isinstance(m, (nn.Dropout, Dropout)):
            self.replace(n, Dropout(m.p), self.site(n))
        elif isinstance(m, nn.Identity):
            n.replace_all_uses_with(n.args[0])
            self.g.erase_node(n)
        elif isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                self.fail(n, label, "return_indices=True")
            self.replace(n, self.pool(n, m.kernel_size, m.stride, m.padding, m.dilation,
                                      m.ceil_mode), self.site(n))
        elif isinstance(m, KEPT_MODULES):
            if isinstance(m, WEIGHTED) and m.bias is not None:
                if self.calls[n.target] > 1:
                    self.fail(n, label, "a layer with a bias used at several places (its bias "
                              "would need one scale per place)")
                m.register_buffer("input_scale", torch.ones(()))  # bias units (calibration)
        else:
            self.fail(n, label, "no spiking counterpart")

    def pool(self, n: fx.Node, k, s, p, d, ceil: bool) -> nn.Module:
        if self.maxpool == "spiking":
            return SpikingMaxPool2d(k, s, p, d, ceil)
        if d not in (1, (1, 1)):
            self.fail(n, "MaxPool2d with dilation", "as average pooling (maxpool='avg')")
        warnings.warn(f"dietsnn.convert: max pooling at '{n.name}' replaced by average pooling "
                      "(maxpool='avg'); 'spiking' keeps the max", stacklevel=5)
        return AvgPool2d(k, s, p, ceil)

    def batchnorm(self, n: fx.Node, bn: nn.Module, label: str) -> None:
        src = n.args[0]
        layer = (self.gm.get_submodule(src.target)
                 if isinstance(src, fx.Node) and src.op == "call_module" else None)
        if not isinstance(layer, WEIGHTED) or len(src.users) != 1 or self.calls[src.target] != 1:
            self.fail(n, label, "BatchNorm folds only into a conv/linear right before it whose "
                      "output nothing else reads")
        folded = fold_batchnorm(layer, bn)
        folded.register_buffer("input_scale", torch.ones(()))
        self.gm.add_submodule(src.target, folded)
        n.replace_all_uses_with(src)
        self.g.erase_node(n)

    def function(self, n: fx.Node) -> None:
        f = n.target
        name = getattr(f, "__name__", str(f))
        if f in RELU_FUNCTIONS:
            self.replace(n, self.make_lif(), self.fresh(n.name))
        elif f in ADD_FUNCTIONS:
            self.merge_add(n, f"{name}")
        elif f in CAT_FUNCTIONS:
            self.merge_cat(n)
        elif f is F.dropout:
            p = n.kwargs.get("p", n.args[1] if len(n.args) > 1 else 0.5)
            self.replace(n, Dropout(p), self.fresh(n.name))
        elif f is F.max_pool2d:
            a = list(n.args) + [None] * 6
            kw = n.kwargs
            if kw.get("return_indices") or a[6]:
                self.fail(n, "F.max_pool2d", "return_indices=True")
            pool = self.pool(n, kw.get("kernel_size", a[1]), kw.get("stride", a[2]),
                             kw.get("padding", a[3] or 0), kw.get("dilation", a[4] or 1),
                             bool(kw.get("ceil_mode", a[5])))
            self.replace(n, pool, self.fresh(n.name))
        elif f in AS_MODULES:  # F.avg_pool2d(x, ...) -> nn.AvgPool2d(...): same arguments
            self.replace(n, AS_MODULES[f](*n.args[1:], **n.kwargs), self.fresh(n.name))
        elif f is operator.getitem:
            src, idx = n.args
            shape = isinstance(src, fx.Node) and (src.target in ("size", "shape") or (
                src.target is getattr and src.args[1] == "shape"))
            whole = isinstance(idx, tuple) and idx and idx[0] == slice(None)
            if not (shape or whole):
                self.fail(n, "indexing", "only x[:, ...] (every sample kept) is supported")
        elif f is torch.flatten:
            start = n.kwargs.get("start_dim", n.args[1] if len(n.args) > 1 else 0)
            if start == 0:
                self.fail(n, "torch.flatten(x) over the batch dim", "use torch.flatten(x, 1)")
            self.flatten(n, start, n.kwargs.get("end_dim", n.args[2] if len(n.args) > 2 else -1))
        elif f not in KEPT_FUNCTIONS:
            self.fail(n, f"function {name}", "no spiking counterpart")

    def method(self, n: fx.Node) -> None:
        if n.target in ("relu", "relu_"):
            self.replace(n, self.make_lif(), self.fresh(n.name))
        elif n.target in ("add", "add_", "__add__", "__iadd__"):
            self.merge_add(n, f".{n.target}()")
        elif n.target not in KEPT_METHODS:
            self.fail(n, f"tensor method .{n.target}()", "no spiking counterpart")
        elif n.target == "mean" and 0 in _dims(n):
            self.fail(n, ".mean() over the batch dim")
        elif n.target == "flatten" and n.args[1:2] == (1,) and len(n.args) <= 3:
            self.flatten(n, 1, n.args[2] if len(n.args) > 2 else -1)
        elif n.target in ("view", "reshape") and _batch_then_rest(n):
            self.flatten(n, 1, -1)

    def flatten(self, n: fx.Node, start: int, end: int) -> None:
        """`x.view(x.size(0), -1)` and the like as an `nn.Flatten` layer (one per call site)."""
        self.replace(n, nn.Flatten(start, end), self.fresh(n.name))

    def merge_add(self, n: fx.Node, label: str) -> None:
        if len(n.args) != 2 or n.kwargs or not all(isinstance(a, fx.Node) for a in n.args):
            self.fail(n, f"add {label}", "only the sum of two tensors (a residual add) is "
                      "supported, not a constant or alpha")
        self.replace(n, Merge("add", 2), self.fresh(n.name), n.args)

    def merge_cat(self, n: fx.Node) -> None:
        xs = n.args[0]
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
        if not isinstance(dim, int) or dim == 0:
            self.fail(n, "torch.cat along the batch dim", "concatenate along dim >= 1")
        if not all(isinstance(a, fx.Node) for a in xs):
            self.fail(n, "torch.cat of a constant")
        self.replace(n, Merge("cat", len(xs), dim), self.fresh(n.name), tuple(xs))


def _batch_then_rest(n: fx.Node) -> bool:
    """Whether the view/reshape node `n` is `x.view(x.size(0), -1)` (or x.shape[0])."""
    shape = n.args[1:] if len(n.args) != 2 or not isinstance(n.args[1], (tuple, list)) \
        else tuple(n.args[1])
    if len(shape) != 2 or shape[1] != -1 or not isinstance(shape[0], fx.Node):
        return False
    b, x = shape[0], n.args[0]
    if b.op == "call_method" and b.target == "size":
        return b.args[0] is x and (b.args[1:] == (0,) or b.kwargs == {"dim": 0})
    return (b.target is operator.getitem and b.args[1] == 0 and isinstance(b.args[0], fx.Node)
            and b.args[0].target is getattr and b.args[0].args == (x, "shape"))


def _dims(n: fx.Node) -> set[int]:
    d = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
    if d is None:
        return {0}
    return set(d) if isinstance(d, (tuple, list)) else {d}


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


def swap_modules(model: nn.Module, leak: float, threshold: float, gamma: float,
                 surrogate: str, maxpool: str = "spiking") -> nn.Module:
    """Conversion by module replacement, for models torch.fx cannot trace (`ModuleSNN`): a
    copy of `model` with each ReLU module a LIF, dropout the fixed-over-time `Dropout` and max
    pooling `SpikingMaxPool2d` (or average pooling), as the traced conversion does them."""
    snn = copy.deepcopy(model)
    replace_modules(snn, nn.ReLU, lambda _: LIF(leak, threshold, gamma, surrogate))
    replace_modules(snn, nn.Dropout, lambda m: Dropout(m.p))
    replace_modules(snn, nn.MaxPool2d, lambda m: (
        SpikingMaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        if maxpool == "spiking" else AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode)))
    return snn


def replacement_snn(model: nn.Module, timesteps: int, encoding: str, leak: float,
                    threshold: float, gamma: float, surrogate: str, maxpool: str,
                    source: str) -> Network:
    """The fallback for models torch.fx cannot trace: `swap_modules` in a `ModuleSNN`."""
    for name, m in model.named_modules():
        if isinstance(m, BATCHNORMS):
            raise ConversionError(f"cannot convert BatchNorm '{name}' without a traced graph "
                                  "(it must be folded into the layer before it)")
    snn = swap_modules(model, leak, threshold, gamma, surrogate, maxpool).eval()
    return ModuleSNN(snn, timesteps, encoding, source)


class ModuleSNN(Network):
    """A model converted by module replacement (not traced): runs `net` in time like any SNN."""

    def __init__(self, net: nn.Module, timesteps: int, encoding: str, source: str) -> None:
        super().__init__()
        self.net, self.timesteps, self.encoding = net, timesteps, encoding
        self.config = {"arch": "modules", "source": source}

    def body(self, x):
        return self.net(x)
