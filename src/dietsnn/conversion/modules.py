"""The layers a converted custom model needs beyond dietsnn's own (docs/CONVERSION.md), and the
spiking network that runs a converted `torch.fx` graph.

Time convention as in `dietsnn.layers`: tensors are `[T*B, ...]` (time folded into the batch,
time-major) or `[B, ...]` when constant over time (before the first neuron under direct
encoding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..layers import LIF, Temporal, fusable, lif_block
from ..models.base import Network

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class SpikingMaxPool2d(Temporal):
    """Max pooling of spike trains (or currents). At each step every window passes on the input
    of the position whose accumulated input (spike count, or summed current) is largest so far:
    its rate then follows the largest input rate, which is what the ANN's max of activations
    becomes (a plain max of spikes per step would be an OR and fire too often). A static input
    (constant over time) is pooled as in the ANN. In `stream` mode (threshold calibration over
    time chunks) the accumulated input carries over from one call to the next."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation, self.ceil_mode = padding, dilation, ceil_mode
        self.stream: dict | None = None

    def _pool(self, x: Tensor, indices: bool = False):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, return_indices=indices)

    def forward(self, x: Tensor) -> Tensor:
        if self.timesteps is None or self.is_static(x):
            return self._pool(x)
        xs = self.unfold(x)
        count = xs.detach().cumsum(0)
        if self.stream is not None:
            if "count" in self.stream:
                count = count + self.stream["count"]
            self.stream["count"] = count[-1]
        _, idx = self._pool(count.flatten(0, 1), indices=True)
        picked = x.flatten(2).gather(2, idx.flatten(2))
        return picked.view(idx.shape)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class Merge(Temporal):
    """A residual add (`kind="add"`) or a concatenation (`kind="cat"`, along `dim`) of `n`
    inputs, each multiplied first by its fixed gain. Calibration sets the gains so that every
    input is in the same units (docs/CONVERSION.md, "Biases and scales"); an input that is
    constant over time is broadcast to every step when another is not. In an SNN that keeps
    the paper's units (`GraphSNN(rescale=False)`) the gains stay 1 and are not applied."""

    def __init__(self, kind: str, n: int, dim: int = 1) -> None:
        super().__init__()
        if kind not in ("add", "cat"):
            raise ValueError(f"unknown merge {kind!r}")
        self.kind, self.n, self.dim = kind, n, dim
        self.weighted = True  # False: the gains are 1 by construction (GraphSNN(rescale=False))
        self.register_buffer("gains", torch.ones(n))

    def forward(self, *xs: Tensor) -> Tensor:
        if self.timesteps is not None and len({x.shape[0] for x in xs}) > 1:
            xs = tuple(self.unfold(x).flatten(0, 1) if self.is_static(x) else x for x in xs)
        if self.weighted:
            xs = tuple(x * self.gains[i].to(x.dtype) for i, x in enumerate(xs))
        if self.kind == "cat":
            return torch.cat(xs, self.dim)
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out

    def extra_repr(self) -> str:
        return f"kind={self.kind}, n={self.n}" + (f", dim={self.dim}" if self.kind == "cat" else "")


class GraphSNN(Network):
    """A converted model: `net`, a `torch.fx.GraphModule` whose ReLUs are LIF layers, run for
    `timesteps` steps like dietsnn's own SNNs (`Network.forward`: direct or rate encoding of
    `[B, ...]` input, or time-varying `[T, B, ...]` input; the output accumulates over time).
    `rescale`: calibration puts biases, residual sums and the output in the ANN's units
    (`calibrate.apply_scales`); without it every value stays in the units of the spikes that
    drive it (the paper's convention, kept for dietsnn's own bias-free architectures)."""

    def __init__(self, net: fx.GraphModule, timesteps: int, encoding: str = "direct",
                 input_dims: int | None = None, source: str = "", rescale: bool = True) -> None:
        super().__init__()
        self.net = net
        self.timesteps = timesteps
        self.encoding = encoding
        self.input_dims = input_dims
        self.rescale = rescale
        for m in net.modules():
            if isinstance(m, Merge):
                m.weighted = rescale
        self.config = {"arch": "graph", "source": source}
        # the output in the ANN's units (calibration sets it: docs/CONVERSION.md)
        self.register_buffer("output_gain", torch.ones(()))
        # the forward of `net` with each LIF and the dropout and/or average pooling right after
        # it as one `layers.lif_block` call (`fuse_blocks`), called with `net` itself: the same
        # modules, nothing added to the module tree or the state_dict
        self._fused_forward = type(fuse_blocks(net)).forward

    def body(self, x: Tensor) -> Tensor:
        out = self._fused_forward(self.net, x)
        return out * self.output_gain if self.rescale else out

    def units(self) -> list[nn.Module]:
        """The layers in order, for a graph that is a chain of layers (what a sequential export
        such as NIR needs); a ValueError names the first node that is not."""
        out, prev = [], None
        for n in self.net.graph.nodes:
            if n.op in ("placeholder", "output"):
                prev = n if n.op == "placeholder" else prev
                continue
            if n.op != "call_module" or n.all_input_nodes != [prev]:
                raise ValueError(f"this converted model is not a chain of layers (node "
                                 f"'{n.name}': {n.op} {getattr(n.target, '__name__', n.target)})"
                                 "; only a chain can be listed layer by layer")
            out.append(self.net.get_submodule(n.target))
            prev = n
        return out

    def synapse_sources(self) -> dict[str, list[str]]:
        """For each conv/linear layer (full module name), the LIF layers whose spikes drive
        it; an empty list: driven by the input (docs/METHOD.md section 8)."""
        out: dict[str, list[str]] = {}
        for n in self.net.graph.nodes:
            if n.op == "call_module" and isinstance(self.net.get_submodule(n.target), WEIGHTED):
                out[f"net.{n.target}"] = [f"net.{s}" for s in self._driving_lifs(n.args[0])]
        return out

    def _driving_lifs(self, node) -> list[str]:
        found, todo, seen = [], [node], set()
        while todo:
            n = todo.pop()
            if not isinstance(n, fx.Node) or n in seen:
                continue
            seen.add(n)
            if n.op == "call_module" and isinstance(self.net.get_submodule(n.target), LIF):
                found.append(n.target)
            elif not (n.op == "call_module"
                      and isinstance(self.net.get_submodule(n.target), WEIGHTED)):
                todo.extend(a for a in n.all_input_nodes)
        return sorted(set(found))


def fuse_blocks(net: fx.GraphModule) -> fx.GraphModule:
    """A copy of `net`'s graph, over the same modules, in which every LIF whose only reader is
    a `Dropout` and/or an `nn.AvgPool2d` (each read by the next alone) runs with them as one
    `layers.lif_block` call; `net` itself is left as it is (calibration, export and checkpoints
    read its plain graph)."""
    g = fx.Graph()
    g.output(g.graph_copy(net.graph, {}))
    for n in list(g.nodes):
        if n.op != "call_module" or not isinstance(net.get_submodule(n.target), LIF):
            continue
        chain = [n]  # the nodes after it, each the only reader of the one before
        while len(chain[-1].users) == 1 and len(chain) < 3:
            u = next(iter(chain[-1].users))
            if u.op != "call_module" or u.args != (chain[-1],) or u.kwargs:
                break
            chain.append(u)
        chain = chain[:1 + len(fusable([net.get_submodule(c.target) for c in chain[1:]]))]
        if len(chain) == 1:
            continue
        with g.inserting_before(chain[0]):
            mods = [g.get_attr(c.target) for c in chain]
            block = g.call_function(lif_block, (n.args[0], *mods))
        chain[-1].replace_all_uses_with(block)
        for c in reversed(chain):
            g.erase_node(c)
    return fx.GraphModule(net, g, net.__class__.__name__)
