"""Operation counts, spike rates and compute energy of a model (docs/METHOD.md section 8)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..conversion import replace_modules
from ..functional import encoding as _encoding
from ..functional import energy as E
from ..layers import LIF
from ..models import Network, example_input
from .spikes import spike_rates


@torch.no_grad()
def layer_flops(model: Network) -> list[dict]:
    """FLOPs (multiply-accumulates) of every conv and linear layer for one image, in order."""
    ann = replace_modules(copy.deepcopy(model), LIF, lambda _: nn.ReLU())
    ann.timesteps = None
    rows: list[dict] = []
    hooks = []
    for name, m in ann.named_modules():
        if isinstance(m, nn.Conv2d):
            def h(mod, inp, out, name=name):
                rows.append({"name": name, "flops": E.conv_flops(
                    tuple(mod.kernel_size), mod.in_channels, mod.out_channels, out.shape[2],
                    out.shape[3], mod.groups)})
            hooks.append(m.register_forward_hook(h))
        elif isinstance(m, nn.Linear):
            def h(mod, inp, out, name=name):
                rows.append({"name": name, "flops": E.linear_flops(mod.in_features,
                                                                    mod.out_features)})
            hooks.append(m.register_forward_hook(h))
    ann.eval()
    ann(example_input(ann))
    for hk in hooks:
        hk.remove()
    return rows


def input_spike_rate(model: Network, x: Tensor) -> float:
    """Rate-coded input: spikes per pixel per image over all T (|signed spikes|)."""
    T = model.timesteps or 1
    s = _encoding.poisson(x, T, torch.Generator().manual_seed(0))
    return s.abs().sum().item() / x.numel()


def energy(model: Network, rates: dict[str, float] | None = None, input_rate: float | None = None,
           e_mac: float = E.E_MAC_PJ, e_ac: float = E.E_AC_PJ) -> dict:
    """Per-layer and total compute energy of the ANN and of the SNN with measured `rates`
    (LIF name -> spikes per neuron per image over T). Each conv/linear layer is driven by the
    spikes of the LIF layer before it; the first layer by the image (direct: MACs once) or by
    input spikes (rate coding: accumulates at `input_rate`). In a converted custom model
    (`GraphSNN`) each layer is charged at the rate of the LIFs its graph input comes from."""
    flops = {r["name"]: r["flops"] for r in layer_flops(model)}
    rows, last_rate = [], input_rate
    # a converted graph names the LIFs that drive each layer (several: their mean rate)
    sources = model.synapse_sources() if hasattr(model, "synapse_sources") else {}
    for name, m in model.named_modules():
        if isinstance(m, LIF) and rates is not None:
            last_rate = rates.get(name, 0.0)
        elif name in flops:
            if name in sources and rates is not None:
                src = sources[name]
                last_rate = sum(rates.get(s, 0.0) for s in src) / len(src) if src else input_rate
            f = flops[name]
            ann_pj = E.ann_energy([f], e_mac)[0]
            snn_pj = E.snn_energy([f], [last_rate], e_mac, e_ac)[0] if rates is not None else None
            rows.append({"name": name, "flops": f, "spike_rate_in": last_rate, "ann_pj": ann_pj,
                         "snn_pj": snn_pj})
    ann_total = sum(r["ann_pj"] for r in rows)
    out = {"ann_pj": ann_total, "flops": sum(r["flops"] for r in rows), "layers": rows,
           "e_mac_pj": e_mac, "e_ac_pj": e_ac}
    if rates is not None:
        snn_total = sum(r["snn_pj"] for r in rows)
        out.update(snn_pj=snn_total, ratio=ann_total / snn_total if snn_total else float("inf"))
    return out


def measure(model: Network, x: Tensor, y: Tensor, batch_size: int = 256,
            device: str | torch.device = "cpu", e_mac: float = E.E_MAC_PJ,
            e_ac: float = E.E_AC_PJ) -> dict:
    """Accuracy, per-layer spike rates and energy of an SNN on (x, y)."""
    rows, acc = spike_rates(model, x, batch_size, device, y)
    rates = {r["name"]: r["spike_rate"] for r in rows}
    in_rate = input_spike_rate(model, x) if model.encoding == "rate" else None
    en = energy(model, rates, in_rate, e_mac, e_ac)
    return {"timesteps": model.timesteps, "accuracy": acc, "spike_rates": rates,
            "mean_spike_rate": sum(rates.values()) / max(1, len(rates)), "energy": en}


def format_energy_table(en: dict) -> str:
    lines = [f"{'layer':<16}{'FLOPs':>14}{'rate in':>10}{'ANN uJ':>10}{'SNN uJ':>10}"]
    for r in en["layers"]:
        rate = "analog" if r["spike_rate_in"] is None else f"{r['spike_rate_in']:.3f}"
        snn = "" if r["snn_pj"] is None else f"{r['snn_pj'] / 1e6:.3f}"
        lines.append(f"{r['name']:<16}{r['flops']:>14,}{rate:>10}{r['ann_pj'] / 1e6:>10.3f}{snn:>10}")
    tail = f"total: ANN {en['ann_pj'] / 1e6:.3f} uJ"
    if "snn_pj" in en:
        tail += f", SNN {en['snn_pj'] / 1e6:.3f} uJ, ANN/SNN {en['ratio']:.2f}x"
    return "\n".join(lines + [tail])
