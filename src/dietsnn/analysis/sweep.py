"""Latency sweeps: accuracy, spike rate and energy of an SNN at several T."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import distributed
from ..evaluation import eval_batches
from ..layers import lif_layers
from ..models import Network
from ..monitor import SpikeCounter
from ..runtime import use_engine
from .energy import energy, layer_flops, measure


def sweep(model: Network, timesteps: list[int], x: Tensor, y: Tensor, batch_size: int = 256,
          device: str | torch.device = "cpu", log=None) -> list[dict]:
    """Accuracy, mean spike rate and compute energy of `model` at each T of `timesteps` (the
    model's own T restored afterwards). A directly encoded SNN is simulated once, at the
    largest T (`prefix_sweep`); rate-coded input, whose spikes are drawn anew for each T, is
    measured at each T (`measure`)."""
    own = model.timesteps
    try:
        if model.encoding == "direct" and timesteps:
            rows = prefix_sweep(model, timesteps, x, y, batch_size, device)
        else:
            rows = []
            for T in timesteps:
                model.timesteps = T
                m = measure(model, x, y, batch_size, device)
                rows.append({"timesteps": T, "accuracy": m["accuracy"],
                             "mean_spike_rate": m["mean_spike_rate"],
                             "energy_ratio": m["energy"]["ratio"],
                             "snn_pj": m["energy"]["snn_pj"]})
    finally:
        model.timesteps = own
    if log:
        for r in rows:
            log(f"  T={r['timesteps']:<3d} accuracy {r['accuracy']:.4f}  mean spikes/neuron "
                f"{r['mean_spike_rate']:.3f}  ANN/SNN energy {r['energy_ratio']:.1f}x")
    return rows


@torch.no_grad()
def prefix_sweep(model: Network, timesteps: list[int], x: Tensor, y: Tensor,
                 batch_size: int = 256, device: str | torch.device = "cpu") -> list[dict]:
    """`sweep` of a directly encoded SNN from one run at the largest T: the network is causal,
    so its outputs and spikes over the first t steps of that run are the run at T=t (the
    summed outputs equal up to float rounding). Per step it keeps only the running sums; the
    layers count their spikes at each step themselves (`SpikeCounter`), so fused blocks stay
    fused. Each batch holds as many image-steps as `batch_size` images at the model's own T
    (the memory of evaluating it)."""
    Tmax = max(timesteps)
    batch_size = max(1, batch_size * min(model.timesteps or Tmax, Tmax) // Tmax)
    names = [n for n, _ in lif_layers(model)]
    spikes = {n: torch.zeros(Tmax, dtype=torch.float64) for n in names}
    neurons = dict.fromkeys(names, 0)  # neurons of one image, per layer
    was = model.training
    model.eval()
    model.timesteps = Tmax
    correct = torch.zeros(Tmax, dtype=torch.float64)
    try:
        with use_engine(), SpikeCounter(model, per_step=True) as counter:
            for xb, yb in eval_batches(x, y, batch_size):
                cum = model.step_outputs(xb.to(device)).float().cumsum(0)
                correct += (cum.argmax(-1).cpu() == yb).sum(1, dtype=torch.float64)
                for n in names:
                    for fired, per_image, _ in counter.records[n]:
                        spikes[n] += fired.cpu()
                        neurons[n] = per_image
                counter.clear()
    finally:
        model.train(was)
    sums = distributed.all_reduce_sum([*correct.tolist(),
                                       *(v for n in names for v in spikes[n].tolist())])
    images, correct = len(y), sums[:Tmax]  # y is the whole set; each rank ran its shard
    flops = layer_flops(model)
    rows = []
    for T in timesteps:
        rates = {n: sum(sums[Tmax * (1 + i): Tmax * (1 + i) + T]) / max(1, neurons[n] * images)
                 for i, n in enumerate(names)}
        en = energy(model, rates, None, flops=flops)
        rows.append({"timesteps": T, "accuracy": correct[T - 1] / max(1, images),
                     "mean_spike_rate": sum(rates.values()) / max(1, len(rates)),
                     "energy_ratio": en["ratio"], "snn_pj": en["snn_pj"]})
    return rows


def smallest_t_within(rows: list[dict], target: float, tol: float = 0.01) -> int | None:
    """The smallest T whose accuracy is within `tol` of `target` (None if none is)."""
    ok = [r["timesteps"] for r in rows if r["accuracy"] >= target - tol]
    return min(ok) if ok else None
