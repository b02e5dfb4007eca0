"""Operation counts and compute energy (docs/METHOD.md section 8; Horowitz 2014, 45 nm, 32-bit float)."""

from __future__ import annotations

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def conv_flops(k: int | tuple[int, int], c_in: int, c_out: int, h_out: int, w_out: int,
               groups: int = 1) -> int:
    kh, kw = (k, k) if isinstance(k, int) else k
    return kh * kw * (c_in // groups) * c_out * h_out * w_out


def linear_flops(f_in: int, f_out: int) -> int:
    return f_in * f_out


def ann_energy(flops: list[int], e_mac: float = E_MAC_PJ) -> list[float]:
    """Per-layer ANN energy in pJ: every operation a multiply-accumulate."""
    return [f * e_mac for f in flops]


def snn_energy(
    flops: list[int],
    spike_rates_in: list[float | None],
    e_mac: float = E_MAC_PJ,
    e_ac: float = E_AC_PJ,
) -> list[float]:
    """Per-layer SNN energy in pJ. A layer whose input rate is None takes analog input (direct
    encoding) and costs its FLOPs as MACs once; otherwise FLOPs x input spike rate accumulates,
    the rate being spikes per input neuron summed over all T steps."""
    return [f * e_mac if r is None else f * r * e_ac for f, r in zip(flops, spike_rates_in)]
