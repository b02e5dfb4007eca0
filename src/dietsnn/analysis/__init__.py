"""What a trained SNN does: spike counts, operation counts and compute energy, latency sweeps,
the ablation of the method's steps, and the reports and plots of a run."""

from __future__ import annotations

from .energy import SpikeEnergy, energy, format_energy_table, input_spike_rate, layer_flops, measure
from .spikes import spike_rates, spikes_per_image
from .sweep import smallest_t_within, sweep

__all__ = ["SpikeEnergy", "energy", "format_energy_table", "input_spike_rate", "layer_flops",
           "measure", "smallest_t_within", "spike_rates", "spikes_per_image", "sweep"]
