"""Counting spikes: one counter serves spike rates (energy, reports) and per-image counts
(predictions)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import distributed
from ..evaluation import eval_batches
from ..layers import LIF, lif_layers
from ..models import Network


class SpikeCounter:
    """While active (a context manager), counts the spikes every LIF layer of `model` emits:
    `totals[name]` (spikes over all images and steps), `neurons[name]` (neurons x images seen)
    and, per forward, the spikes of each image summed over layers (`take_per_image`)."""

    def __init__(self, model: Network) -> None:
        self.layers = lif_layers(model)
        self.totals: dict[str, float] = {n: 0.0 for n, _ in self.layers}
        self.neurons: dict[str, float] = {n: 0.0 for n, _ in self.layers}
        self._per_image: list[Tensor] = []
        self._handles: list = []

    def __enter__(self) -> SpikeCounter:
        for name, m in self.layers:
            self._handles.append(m.register_forward_hook(
                lambda mod, _inp, out, name=name: self._count(name, mod, out)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _count(self, name: str, mod: LIF, out: Tensor) -> None:
        per_image = out.reshape(mod.timesteps, mod.batch, -1).sum((0, 2))  # time-major [T*B, ...]
        self._per_image.append(per_image)
        self.totals[name] += per_image.sum().item()
        self.neurons[name] += out[0].numel() * mod.batch

    def take_per_image(self, batch: int) -> Tensor:
        """Spikes of each image of the forwards since the last call, summed over layers."""
        out = torch.stack(self._per_image).sum(0) if self._per_image else torch.zeros(batch)
        self._per_image.clear()
        return out


def spike_rates(model: Network, x, batch_size: int = 256,
                device: str | torch.device = "cpu",
                y: Tensor | None = None,
                predictions: list[Tensor] | None = None) -> tuple[list[dict], float | None]:
    """Per LIF layer: spikes per neuron per image summed over all T (the energy model's
    zeta, docs/METHOD.md section 8), as rows
    {"name", "spike_rate"}; and the accuracy on labels `y` from the same pass (None without);
    the predicted classes are appended to `predictions` when given."""
    was = model.training
    model.eval()
    correct = 0
    labels = y if y is not None else torch.zeros(len(x), dtype=torch.long)
    try:
        with torch.no_grad(), SpikeCounter(model) as counter:
            for xb, yb in eval_batches(x, labels, batch_size):
                out = model(xb.to(device))
                counter.take_per_image(len(yb))
                pred = out.argmax(1).cpu()
                correct += (pred == yb).sum().item()
                if predictions is not None:
                    predictions.append(pred)
    finally:
        model.train(was)
    names = list(counter.totals)
    sums = distributed.all_reduce_sum([v for n in names
                                       for v in (counter.totals[n], counter.neurons[n])]
                                      + [correct])
    totals = {n: sums[2 * i : 2 * i + 2] for i, n in enumerate(names) if sums[2 * i + 1] > 0}
    rows: list[dict] = [{"name": n, "spike_rate": s / max(1.0, c)} for n, (s, c) in totals.items()]
    return rows, (sums[-1] / max(1, len(y)) if y is not None else None)
