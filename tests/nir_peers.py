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
