"""Counting spikes: spike rates (energy, reports) with a `SpikeCounter`, per-image counts
(predictions) with a `SpikeMonitor`."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import distributed
from ..evaluation import eval_batches, forward
from ..layers import lif_layers
from ..models import Network
from ..monitor import SpikeCounter, SpikeMonitor


def spikes_per_image(monitor: SpikeMonitor) -> Tensor:
    """Spikes of each image of the forwards `monitor` (counts=True) recorded since it was last
    cleared, summed over layers and time; then clears it."""
    per_image = sum(monitor[n].flatten(1).sum(1) for n in monitor.names if monitor.records[n])
    monitor.clear()
    return per_image


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
    names = [n for n, _ in lif_layers(model)]
    totals = {n: [0.0, 0.0] for n in names}  # spikes, neurons x images
    try:
        with torch.no_grad(), SpikeCounter(model) as counter:
            for xb, yb in eval_batches(x, labels, batch_size):
                out = forward(model, xb.to(device))
                for n in names:
                    for fired, neurons, images in counter.records[n]:  # exact in float64
                        totals[n][0] += fired.item()
                        totals[n][1] += neurons * images
                counter.clear()
                pred = out.argmax(1).cpu()
                correct += (pred == yb).sum().item()
                if predictions is not None:
                    predictions.append(pred)
    finally:
        model.train(was)
    sums = distributed.all_reduce_sum([v for n in names for v in totals[n]] + [correct])
    totals = {n: sums[2 * i : 2 * i + 2] for i, n in enumerate(names) if sums[2 * i + 1] > 0}
    rows: list[dict] = [{"name": n, "spike_rate": s / max(1.0, c)} for n, (s, c) in totals.items()]
    return rows, (sums[-1] / max(1, len(y)) if y is not None else None)
