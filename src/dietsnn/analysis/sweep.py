"""Latency sweeps: accuracy, spike rate and energy of an SNN at several T."""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import Network
from .energy import measure


def sweep(model: Network, timesteps: list[int], x: Tensor, y: Tensor, batch_size: int = 256,
          device: str | torch.device = "cpu", log=None) -> list[dict]:
    """`measure` at each T (the model's own T restored afterwards)."""
    own = model.timesteps
    rows = []
    try:
        for T in timesteps:
            model.timesteps = T
            m = measure(model, x, y, batch_size, device)
            rows.append({"timesteps": T, "accuracy": m["accuracy"],
                         "mean_spike_rate": m["mean_spike_rate"],
                         "energy_ratio": m["energy"]["ratio"], "snn_pj": m["energy"]["snn_pj"]})
            if log:
                log(f"  T={T:<3d} accuracy {m['accuracy']:.4f}  mean spikes/neuron "
                    f"{m['mean_spike_rate']:.3f}  ANN/SNN energy {m['energy']['ratio']:.1f}x")
    finally:
        model.timesteps = own
    return rows


def smallest_t_within(rows: list[dict], target: float, tol: float = 0.01) -> int | None:
    """The smallest T whose accuracy is within `tol` of `target` (None if none is)."""
    ok = [r["timesteps"] for r in rows if r["accuracy"] >= target - tol]
    return min(ok) if ok else None
