"""Recording the spikes of a forward without writing hooks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import LIF


class SpikeMonitor:
    """While active (a `with` block), records what every LIF layer of `model` emits, one entry
    per forward, in `[T, B, ...]` layout (time first), detached (`grad=True`: kept in the
    autograd graph, for a loss on the spikes); with `counts`, summed over time, `[B, ...]`.
    `monitor[name]` joins a layer's records over the batch; `monitor.records[name]` lists them;
    `names` are the layers' names in `model` ("" for a bare LIF). Works on a converted network
    and on LIF layers used on their own; while it is active, fused blocks run as their separate
    layers (the values are the same)."""

    def __init__(self, model: nn.Module, counts: bool = False, grad: bool = False) -> None:
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]
        self.counts, self.grad = counts, grad
        self.records: dict[str, list[Tensor]] = {n: [] for n, _ in self.layers}
        self._handles: list = []

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.layers]

    def __enter__(self) -> SpikeMonitor:
        for name, m in self.layers:
            self._handles.append(m.register_forward_hook(
                lambda mod, _inp, out, name=name: self._record(name, mod, out)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _record(self, name: str, mod: LIF, out: Tensor) -> None:
        if not self.grad:
            out = out.detach()
        if mod.timesteps is not None:  # in a network: time folded into the batch, [T*B, ...]
            out = out.view(mod.timesteps, -1, *out.shape[1:])
        self.records[name].append(out.sum(0) if self.counts else out)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.records:
            raise KeyError(f"no LIF layer {name!r}; monitored: {', '.join(self.names)}")
        if not self.records[name]:
            raise ValueError(f"no forward recorded for {name!r} yet")
        return torch.cat(self.records[name], dim=0 if self.counts else 1)

    def clear(self) -> None:
        for r in self.records.values():
            r.clear()


class _Tally(list):
    """A layer's records; takes (fired at each step [T], neurons, images) from the LIF."""

    def __init__(self, per_step: bool) -> None:
        super().__init__()
        self.per_step = per_step

    def append(self, entry: tuple[Tensor, int, int]) -> None:
        fired, neurons, images = entry
        super().append((fired if self.per_step else fired.sum(), neurons, images))


class SpikeCounter:
    """While active (a `with` block), counts the spikes every LIF layer of `model` fires: per
    layer and forward, `(fired, neurons, images)`, where `fired` is the 0-dim float64 count
    summed over time, images and neurons (with `per_step`, `[T]`: the count at each step),
    differentiable where the forward is (a spike penalty needs no spike tensor); `neurons` is
    the layer's neurons per image and `images` the batch. Unlike a `SpikeMonitor` it uses no
    hooks: fused blocks stay fused and count their spikes in the kernel. An inner counter takes
    over from an outer one until it ends."""

    def __init__(self, model: nn.Module, per_step: bool = False) -> None:
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]
        self.records: dict[str, list[tuple[Tensor, int, int]]] = {
            n: _Tally(per_step) for n, _ in self.layers}
        self._outer: list = []

    def __enter__(self) -> SpikeCounter:
        self._outer = [m.tally for _, m in self.layers]
        for name, m in self.layers:
            m.tally = self.records[name]
        return self

    def __exit__(self, *exc) -> None:
        for (_, m), outer in zip(self.layers, self._outer):
            m.tally = outer
        self._outer = []

    def clear(self) -> None:
        for r in self.records.values():
            r.clear()
