"""Threshold calibration (docs/METHOD.md section 7.2, docs/CONVERSION.md), layer by layer in
the order of a `GraphSNN`'s graph, residual branches and concatenations included.

Each LIF's input current is computed, time chunk by time chunk, from the spike trains of the
LIFs before it (`calibration.Bits`, or `calibration.Refire` for a LIF driven by a constant
current) (and the values that are constant over time) through the layers between
them; a spike train is dropped once every LIF that reads it is calibrated. Before each layer the
biases and merge gains are set from the thresholds fixed so far (`apply_scales`). A model
converted by module replacement, which torch.fx cannot trace, is calibrated by re-running it up
to each LIF (`calibrate_modules`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

import torch
from torch import Tensor, fx

from ..functional import encoding as _encoding
from ..layers import LIF, set_time
from . import currents as cal
from .modules import WEIGHTED, GraphSNN, Merge, SpikingMaxPool2d


def apply_scales(snn: GraphSNN, scale: float = 1.0, units: str = "scaled") -> dict[fx.Node, float]:
    """Put every bias and merge gain in the units of the spikes that reach it.

    A LIF's spikes are 0/1, so a rate r stands for the ANN activation `c * r`, where the scale
    `c` is the product of the thresholds along the path from the input (each layer's current is
    its ANN pre-activation divided by the scale of its input). A conv/linear bias, added once per
    step, is therefore divided by its input's scale; a residual add or concatenation multiplies
    each input by `c_input / c_first` so that all its inputs share the first one's units, and
    the output is multiplied by its scale: each step's output is then the ANN's output (the
    logits summed over T steps are T times the ANN's), whatever the thresholds, which keeps
    the softmax of SNN training at the ANN's temperature. `units` "scaled" takes the thresholds
    as they are; "calibrated" takes them divided by `scale`, the factor they carry over the
    calibrated ones (the scale then lowers the thresholds and nothing else). Returns the scale
    of every node (nothing is set, and an empty dict returned, for an SNN built with
    `rescale=False`)."""
    if not snn.rescale:
        return {}
    unit = scale if units == "calibrated" else 1.0
    gm = snn.net
    scale: dict[fx.Node, float] = {}
    for n in gm.graph.nodes:
        ins = [scale[a] for a in n.all_input_nodes if a in scale]
        c = ins[0] if ins else 1.0
        m = gm.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(m, LIF):
            c = c * m.threshold.item() / unit
        elif isinstance(m, WEIGHTED) and m.bias is not None and hasattr(m, "input_scale"):
            with torch.no_grad():  # the ANN's bias is bias * input_scale
                m.bias.mul_(m.input_scale / c)
                m.input_scale.fill_(c)
        elif isinstance(m, Merge):
            refs = [scale.get(a, 1.0) for a in n.args]
            m.gains.copy_(torch.tensor([r / refs[0] for r in refs]))
            c = refs[0]
        scale[n] = c
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    snn.output_gain.fill_(scale.get(out, 1.0) if isinstance(out, fx.Node) else 1.0)
    return scale


def describe(snn: GraphSNN, input_shape: list[int]) -> None:
    """Record the input shape (and, as dietsnn's own models do, in_channels, image_size and
    num_classes where the input is a square image and the output a linear layer)."""
    c = snn.config
    if c.get("arch") != "graph":  # one of dietsnn's architectures: its config says it all
        return
    c["input_shape"] = input_shape
    if len(input_shape) == 3 and input_shape[1] == input_shape[2]:
        c["in_channels"], c["image_size"] = input_shape[0], input_shape[1]
    out = next(n for n in snn.net.graph.nodes if n.op == "output").args[0]
    if isinstance(out, fx.Node) and out.op == "call_module":
        last = snn.net.get_submodule(out.target)
        if isinstance(last, torch.nn.Linear):
            c["num_classes"] = last.out_features


class _Runner:
    """Evaluates nodes of the graph for one sub-batch of images and time chunk from kept
    values."""

    def __init__(self, gm: fx.GraphModule, x: Tensor, T: int) -> None:
        self.gm, self.x, self.T = gm, x, T
        self.static: set[fx.Node] = set()  # the same at every step: [b, ...] from x[b0:b1]
        self.kept: dict[fx.Node, cal.Source] = {}  # [T, B, ...] spike trains or input series
        self.width: dict[fx.Node, int] = {}  # elements per image and step
        self.B = self.b = 0  # images, images per sub-batch

    def op(self, n: fx.Node, env: dict) -> object:
        args = fx.node.map_arg(n.args, env.__getitem__)
        kwargs = fx.node.map_arg(n.kwargs, env.__getitem__)
        if n.op == "call_module":
            return self.gm.get_submodule(n.target)(*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        raise RuntimeError(f"unexpected node {n.op} {n.target}")

    def measure(self, one: Tensor, B: int) -> None:
        """The width of every value, from a run of the graph on one image at one step, and the
        sub-batch size for `B` images (`currents.sub_batch` of the widest)."""
        env: dict = {}
        set_time(self.gm, 1, 1)
        for n in self.gm.graph.nodes:
            if n.op != "output":
                env[n] = one if n.op == "placeholder" else self.op(n, env)
                if isinstance(env[n], Tensor) and env[n].dim() > 0:
                    self.width[n] = env[n][0].numel()
        self.B, self.b = B, cal.sub_batch(B, max(self.width.values()))

    def ancestors(self, node: fx.Node) -> list[fx.Node]:
        """Nodes to evaluate for `node`, in graph order, stopping at kept values."""
        need, todo = set(), [node]
        while todo:
            n = todo.pop()
            if n in need or n in self.kept:
                continue
            need.add(n)
            todo.extend(n.all_input_nodes)
        return [n for n in self.gm.graph.nodes if n in need]

    def sources(self, node: fx.Node) -> set[fx.Node]:
        """The kept values that `node` is computed from."""
        found, todo, seen = set(), [node], set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.kept:
                found.add(n)
            elif n not in self.static:
                todo.extend(n.all_input_nodes)
        return found

    def static_env(self, order: list[fx.Node], sl: slice) -> dict:
        """The static values among `order` for images `sl`."""
        set_time(self.gm, self.T, sl.stop - sl.start)
        env: dict = {}
        for n in order:
            if n in self.static:
                env[n] = self.x[sl] if n.op == "placeholder" else self.op(n, env)
        return env

    def static_value(self, node: fx.Node, sl: slice) -> Tensor:
        return self.static_env(self.ancestors(node), sl)[node]

    def chunks(self, node: fx.Node, steps: int) -> Iterator[cal.Chunk]:
        """`node`'s values over `steps` steps (1 for a static node) as chunks `[t, b, ...]`:
        sub-batch by sub-batch, time chunk by time chunk (spiking max pooling carries its
        counts across the chunks of a sub-batch)."""
        order = self.ancestors(node)
        pools = [self.gm.get_submodule(n.target) for n in order if n.op == "call_module"
                 and n not in self.static
                 and isinstance(self.gm.get_submodule(n.target), SpikingMaxPool2d)]
        srcs = self.sources(node)
        step = cal.chunk_steps(self.b * max(self.width[n] for n in [*order, *srcs]), steps)
        try:
            for b0 in range(0, self.B, self.b):
                sl = slice(b0, min(b0 + self.b, self.B))
                b = sl.stop - b0
                for m in pools:
                    m.stream = {}
                static = self.static_env(order, sl)
                for t0 in range(0, steps, step):
                    t = min(step, steps - t0)
                    env = dict(static)
                    env.update({k: self.kept[k].read(t0, t, sl).flatten(0, 1) for k in srcs})
                    set_time(self.gm, t, b)
                    for n in order:
                        if n not in env:
                            env[n] = self.op(n, env)
                    yield sl, t0, env[node].view(t, b, *env[node].shape[1:])
        finally:
            for m in pools:
                m.stream = None


@torch.no_grad()
def calibrate_graph(snn: GraphSNN, x: Tensor, p: float, scale: float, T: int,
                    progress: bool = False, units: str = "scaled") -> list[float]:
    """Set every LIF threshold of `snn` in place from the inputs `x` (`[N, ...]`, or
    `[T, N, ...]` time-varying input), then biases and gains in `units` ("scaled" or
    "calibrated", `apply_scales`); returns the thresholds set. Each layer is logged when
    done (INFO), with a bar over its sub-batches' steps if `progress`."""
    was = snn.training
    snn.eval()
    gm = snn.net
    nodes = list(gm.graph.nodes)
    lifs = [n for n in nodes if n.op == "call_module"
            and isinstance(gm.get_submodule(n.target), LIF)]
    series = snn.input_dims is not None and x.dim() == snn.input_dims + 1
    if snn.input_dims is None:
        snn.input_dims = x.dim()
    if series:
        T, B = x.shape[:2]
    else:
        B = x.shape[0]
        describe(snn, list(x.shape[1:]))
    run = _Runner(gm, x, T)
    placeholder = next(n for n in nodes if n.op == "placeholder")
    if series:
        run.kept[placeholder] = cal.Kept(x)
    elif snn.encoding == "rate":  # one draw for all images, as in a forward of the batch
        run.kept[placeholder] = cal.Kept(
            _encoding.poisson(x, T).view(T, B, *x.shape[1:]).to(torch.int8))
    else:
        run.static.add(placeholder)
    try:
        run.measure(x[0, :1] if series else x[:1], B)
        for n in nodes:  # values constant over time
            if (n.op in ("call_module", "call_function", "call_method") and n.all_input_nodes
                    and all(a in run.static for a in n.all_input_nodes) and n not in lifs):
                run.static.add(n)
        prog = cal.Progress([f"net.{n.target}" for n in lifs], progress)
        for k, ln in enumerate(lifs):
            apply_scales(snn)
            lif: LIF = gm.get_submodule(ln.target)
            src = ln.args[0]
            steps = 1 if src in run.static else T
            with prog.bar(steps * math.ceil(B / run.b)) as bar:
                thr, chunks = cal.max_percentile(run.chunks(src, steps), p,
                                                 B * run.width[src], steps, bar)
            cal.set_threshold(lif, thr)
            prog.done(lif.threshold.item())
            if src in run.static:
                run.kept[ln] = cal.Refire(lif, partial(run.static_value, src))
            else:
                run.kept[ln] = cal.fire(lif, chunks if chunks.cached else run.chunks(src, T),
                                        T, B)
            needed = set().union(*(run.sources(m.args[0]) for m in lifs[k + 1 :]))
            for kept in [v for v in run.kept if v not in needed]:
                del run.kept[kept]  # no later layer reads these spikes
        thresholds = cal.finish([gm.get_submodule(n.target) for n in lifs], scale)
        apply_scales(snn, scale, units)
    finally:
        set_time(snn, None, None)
        snn.train(was)
    return thresholds


class _Stop(Exception):
    pass


@torch.no_grad()
def calibrate_modules(snn, x: Tensor, p: float, scale: float, T: int) -> list[float]:
    """Calibration of a spiking network without a graph (converted by module replacement, or
    built from LIF layers by hand): the LIFs in the order the forward calls them, each from its
    input current recorded by re-running the SNN up to it (memory: one layer's currents for all
    T steps and images)."""
    was, steps = snn.training, snn.timesteps
    snn.eval()
    snn.timesteps = T
    lifs = [m for m in snn.modules() if isinstance(m, LIF)]
    calls: list[LIF] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(mod)) for m in lifs]
    try:
        snn(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if len(set(map(id, calls))) != len(calls):
        raise ValueError("a ReLU module is called at several places in forward; without a "
                         "traced graph they would share one threshold: use one nn.ReLU per "
                         "place or make forward traceable by torch.fx")
    try:
        for lif in calls:
            seen: list[Tensor] = []

            def grab(mod, inp, seen=seen):
                seen.append(inp[0])
                raise _Stop

            h = lif.register_forward_pre_hook(grab)
            try:
                snn(x)
            except _Stop:
                pass
            finally:
                h.remove()
            cur = seen[0]
            B = x.shape[0]
            if cur.shape[0] == B and T > 1:
                thr = cal.percentile_of(cur, p)
            else:
                cur = cur.view(T, B, *cur.shape[1:])
                thr = max(cal.percentile_of(cur[t], p) for t in range(T))
            cal.set_threshold(lif, thr)
        return cal.finish(calls, scale)
    finally:
        snn.timesteps = steps
        snn.train(was)
