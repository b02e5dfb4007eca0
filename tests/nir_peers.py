"""How snnTorch, SpikingJelly and Norse import and run a NIR graph written by dietsnn
(docs/NIR.md, "Importing into other simulators"). Each `run_<peer>(graph, x, soft)` imports the
graph with the peer's own importer, optionally switches its neurons to dietsnn's soft
(subtractive) reset, presents the analog image `x` [B, C, H, W] at each of the graph's
`timesteps` steps (direct encoding) and returns the sum over the steps of the graph's output:
the logits. Used by tests/test_nir_peers.py and benchmarks/nir_peers.py."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import numpy as np
import torch

PEERS = ("snntorch", "spikingjelly", "norse")


def _steps(graph) -> int:
    return int(graph.metadata["timesteps"])


@contextlib.contextmanager
def _quiet():
    """The importers print and log chatter (weight-scaling notes, deprecations)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


@torch.no_grad()
def run_snntorch(graph, x: torch.Tensor, soft: bool = True) -> torch.Tensor:
    """snnTorch 1.0: `snntorch.import_nir.import_from_nir`. Its neurons keep their membrane
    inside the module (`init_hidden`), so each call imports afresh. It maps nir.LIF to `Leaky`
    with `reset_mechanism="zero"`; `soft` sets "subtract"."""
    from snntorch.import_nir import import_from_nir

    with _quiet():
        net = import_from_nir(graph)
    if soft:
        for m in net.modules():
            if hasattr(m, "reset_mechanism"):
                m.reset_mechanism = "subtract"
    out = 0
    for _ in range(_steps(graph)):
        y = net(x)
        out = out + (y[0] if isinstance(y, tuple) else y)
    return out


@torch.no_grad()
def run_spikingjelly(graph, x: torch.Tensor, soft: bool = True) -> torch.Tensor:
    """SpikingJelly 2.0: `nir_exchange.import_from_nir(graph, dt)`, state passed explicitly.
    It sets each neuron's `v_reset` from the graph (hard reset); `soft` sets `v_reset = None`,
    SpikingJelly's soft reset."""
    from spikingjelly.activation_based.neuron import BaseNode
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    with _quiet():
        net = import_from_nir(graph, dt=float(graph.metadata["dt"]))
    if soft:
        for m in net.modules():
            if isinstance(m, BaseNode):
                m.v_reset = None
    out, state = 0, None
    for _ in range(_steps(graph)):
        y, state = net(x, state)
        out = out + y
    return out


@torch.no_grad()
def run_norse(graph, x: torch.Tensor, soft: bool = True) -> torch.Tensor:
    """Norse 1.1: `norse.torch.from_nir(graph, dt=...)`, state passed explicitly. Its nir.LIF
    cells reset to `v_reset` whatever `reset_method` is passed; `soft` replaces the cells'
    `reset_method` with `reset_subtract`."""
    import norse.torch
    from norse.torch.functional.reset import reset_subtract

    with _quiet():
        net = norse.torch.from_nir(graph, dt=float(graph.metadata["dt"]))
    if soft:
        for m in net.modules():
            p = getattr(m, "p", None)
            if p is not None and hasattr(p, "reset_method"):
                m.p = p._replace(reset_method=reset_subtract)
    out, state = 0, None
    with _quiet():
        for _ in range(_steps(graph)):
            y, state = net(x, state)
            out = out + y
    return out


RUN = {"snntorch": run_snntorch, "spikingjelly": run_spikingjelly, "norse": run_norse}


def agreement(peer: str, graph, x: torch.Tensor, want: torch.Tensor, soft: bool = True,
              batch: int = 100) -> float:
    """Fraction of images where `peer`'s simulation of `graph` predicts the class `want`."""
    got = torch.cat([RUN[peer](graph, xb, soft).argmax(1) for xb in x.split(batch)])
    return (got == want).float().mean().item()


# The other direction: each peer builds a network from the layers of a dietsnn SNN (same weights,
# leaks and thresholds, each peer's own neuron), exports it with its own exporter and runs it
# natively; `dietsnn.from_nir` must then predict what the peer predicts.

def _copy(u, bias: bool = False):
    from torch import nn
    m = (nn.Conv2d(u.in_channels, u.out_channels, u.kernel_size, u.stride, u.padding, bias=bias)
         if isinstance(u, nn.Conv2d) else nn.Linear(u.in_features, u.out_features, bias=bias))
    with torch.no_grad():
        m.weight.copy_(u.weight)
        if bias:
            m.bias.copy_(u.bias if u.bias is not None else torch.zeros_like(m.bias))
    return m


def _layers(units, neuron, bias: bool = False) -> list:
    """The peer's layers for dietsnn `units`: conv/linear copied, each LIF as `neuron(lam, v,
    width)` (width: the features of the linear layer before it)."""
    from torch import nn

    from dietsnn.layers import LIF
    out, width = [], 0
    for u in units:
        if isinstance(u, (nn.Conv2d, nn.Linear)):
            out.append(_copy(u, bias))
            width = u.weight.shape[0]
        elif isinstance(u, LIF):
            out.append(neuron(u.leak.item(), u.threshold.item(), width))
        elif isinstance(u, nn.AvgPool2d):
            out.append(nn.AvgPool2d(u.kernel_size, u.stride))
        elif isinstance(u, nn.Flatten):
            out.append(nn.Flatten())
    return out


@torch.no_grad()
def native_spikingjelly(units, x: torch.Tensor, T: int):
    """SpikingJelly 2.0 (IFNode / LIFNode with decay_input=False, its hard reset to 0): the graph
    of `export_to_nir(net, x, dt=1e-4)` and the network's own logits (output summed over T)."""
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    def node(lam, v, _):
        if lam == 1.0:
            return neuron.IFNode(v_threshold=v)
        return neuron.LIFNode(tau=1.0 / (1.0 - lam), decay_input=False, v_threshold=v)

    net = torch.nn.Sequential(*_layers(units, node)).eval()
    with _quiet():
        graph = export_to_nir(net, x[:1], dt=1e-4)
    out = []
    for xb in x.split(100):
        functional.reset_net(net)
        out.append(sum(net(xb) for _ in range(T)))
    return graph, torch.cat(out)


@torch.no_grad()
def native_snntorch(units, x: torch.Tensor, T: int, reset: str = "zero"):
    """snnTorch 1.0 (`Leaky`, `reset_mechanism=reset`): the graph of `export_to_nir` and the
    network's own logits. Its exporter fails on Conv2d with nir 1.0.8 and types the output with
    the sample's batch dim: linear networks on flattened input, one unbatched sample."""
    import snntorch
    from snntorch.export_nir import export_to_nir

    def node(lam, v, width):  # per-neuron values: the exporter needs the layer's width
        return snntorch.Leaky(beta=torch.full((width,), lam), threshold=torch.full((width,), v),
                              init_hidden=True, reset_mechanism=reset)

    net = torch.nn.Sequential(*_layers(units, node)).eval()
    with _quiet():
        graph = export_to_nir(net, x[0])
    out = []
    for xb in x.split(100):
        for m in net.modules():
            if isinstance(m, snntorch.Leaky):
                m.reset_mem()
        out.append(sum(net(xb) for _ in range(T)))
    return graph, torch.cat(out)


NORSE_DT = 1e-3  # Norse's default step


@torch.no_grad()
def native_norse(units, x: torch.Tensor, T: int):
    """Norse 1.1 (`LIFBoxCell`, `IAFCell`, hard reset to 0): the graph of `norse.torch.to_nir`
    and the network's own logits. Its exporter maps neither pooling nor Flatten (they become
    empty nodes): linear networks on flattened input only."""
    import norse.torch as nt

    def node(lam, v, _):
        if lam == 1.0:
            return nt.IAFCell(nt.IAFParameters(v_th=torch.tensor(v)))
        return nt.LIFBoxCell(nt.LIFBoxParameters(tau_mem_inv=torch.tensor((1 - lam) / NORSE_DT),
                                                 v_th=torch.tensor((1 - lam) * v)), dt=NORSE_DT)

    net = nt.SequentialState(*_layers(units, node, bias=True)).eval()
    with _quiet():
        graph = nt.to_nir(net, x[:1], dt=NORSE_DT)
        out = []
        for xb in x.split(100):
            logits, state = 0, None
            for _ in range(T):
                y, state = net(xb, state)
                logits = logits + y
            out.append(logits)
    return graph, torch.cat(out)


def fix_norse(graph, dt: float = NORSE_DT):
    """Norse 1.1 writes nir.LIF's tau as dt / tau_mem_inv (NIR's tau is 1 / tau_mem_inv) and
    nir.IF's r as 1 (its IAFCell adds the input unscaled; NIR's IF adds dt r I): rewritten to
    the NIR values of the network Norse runs (docs/NIR.md)."""
    import nir
    for node in graph.nodes.values():
        if isinstance(node, nir.LIF):
            node.tau = np.asarray(node.tau) / dt
        elif isinstance(node, nir.IF):
            node.r = np.asarray(node.r) / dt
    return graph
