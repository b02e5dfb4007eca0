"""Operation counts, spike rates and compute energy of a model (docs/METHOD.md section 8)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .. import files
from ..conversion import replace_modules
from ..functional import encoding as _encoding
from ..functional import energy as E
from ..layers import LIF
from ..models import Network, example_input
from ..monitor import SpikeCounter
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
           e_mac: float = E.E_MAC_PJ, e_ac: float = E.E_AC_PJ,
           flops: list[dict] | None = None) -> dict:
    """Per-layer and total compute energy of the ANN and of the SNN with measured `rates`
    (LIF name -> spikes per neuron per image over T). Each conv/linear layer is driven by the
    spikes of the LIF layer before it; the first layer by the image (direct: MACs once) or by
    input spikes (rate coding: accumulates at `input_rate`). In a converted custom model
    (`GraphSNN`) each layer is charged at the rate of the LIFs its graph input comes from.
    `flops`: `layer_flops(model)`, when the caller has it already."""
    flops = {r["name"]: r["flops"] for r in (flops if flops is not None else layer_flops(model))}
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


class SpikeEnergy:
    """The compute energy of an SNN's forwards as a differentiable quantity, for an energy-aware
    loss (docs/METHOD.md section 8.1): while active (a context manager, or `attach()`/`detach()`),
    it records every LIF layer's spikes, and `cost()` returns the SNN's compute energy over the
    ANN's for the forwards since the last call, per image, counted as `energy` counts it
    (accumulates driven by spikes, the first layer of a directly encoded network as MACs). The
    value is the inverse of the reported ANN/SNN energy ratio, so one penalty weight means the
    same on any network and at any T; its gradient reaches the weights, leaks and thresholds
    through the surrogate gradient of the spikes.

        with SpikeEnergy(snn) as energy:
            loss = F.cross_entropy(snn(x), y) + 0.1 * energy.cost()

    The spikes are counted by the LIF layers themselves (`monitor.SpikeCounter`, no hooks), so
    the fused LIF-dropout-pooling kernel keeps running and adds the penalty's gradient to each
    spike's in its backward."""

    def __init__(self, model: Network, input_rate: float | None = None,
                 e_mac: float = E.E_MAC_PJ, e_ac: float = E.E_AC_PJ) -> None:
        self.layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LIF)]
        # the energy model is affine in the rates: its constant and one coefficient per layer
        fl = layer_flops(model)
        zero = {n: 0.0 for n, _ in self.layers}
        base = energy(model, zero, input_rate, e_mac, e_ac, fl)
        self.ann_pj, self.base_pj = base["ann_pj"], base["snn_pj"]
        self.coef = {n: energy(model, {**zero, n: 1.0}, input_rate, e_mac, e_ac, fl)["snn_pj"]
                     - self.base_pj for n, _ in self.layers}
        self.counter = SpikeCounter(model)

    def attach(self) -> SpikeEnergy:
        self.counter.__enter__()
        return self

    def detach(self) -> None:
        self.counter.__exit__()

    __enter__ = attach

    def __exit__(self, *exc) -> None:
        self.detach()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Observe nothing within this block (e.g. a validation pass between training steps:
        its spikes would otherwise be kept until the next `cost()`)."""
        self.reset()
        self.detach()
        try:
            yield
        finally:
            self.attach()

    def cost(self) -> Tensor:
        """SNN/ANN compute energy per image of the forwards since the last call (then reset)."""
        records = self.counter.records
        first = records[self.layers[0][0]] if self.layers else []
        if not first:
            raise RuntimeError("SpikeEnergy.cost(): no forward of the network was observed "
                               "(run the forward inside the `with` block)")
        images = sum(r[2] for r in first)
        # per layer: spikes per neuron summed over steps and images
        total = sum(self.coef[n] * sum(fired.float() / neurons for fired, neurons, _ in rs)
                    for n, rs in records.items() if rs)
        out = (total / images + self.base_pj) / self.ann_pj
        self.reset()
        return out

    def reset(self) -> None:
        """Forget the forwards observed so far."""
        self.counter.clear()


def measure(model: Network, x: Tensor, y: Tensor, batch_size: int = 256,
            device: str | torch.device = "cpu", e_mac: float = E.E_MAC_PJ,
            e_ac: float = E.E_AC_PJ, predictions: list[Tensor] | None = None) -> dict:
    """Accuracy, per-layer spike rates and energy of an SNN on (x, y); the predicted classes
    are appended to `predictions` (a list, batch by batch) when given."""
    rows, acc = spike_rates(model, x, batch_size, device, y, predictions)
    rates = {r["name"]: r["spike_rate"] for r in rows}
    in_rate = input_spike_rate(model, x) if model.encoding == "rate" else None
    en = energy(model, rates, in_rate, e_mac, e_ac)
    return {"timesteps": model.timesteps, "accuracy": acc, "spike_rates": rates,
            "mean_spike_rate": sum(rates.values()) / max(1, len(rates)), "energy": en}


def write_predictions(path, predictions: Tensor) -> None:
    """Per-image predicted classes as text (one character per image, '0'-'9' then 'a'-'z', for
    up to 36 classes; else one number per line), for paired tests between models."""
    p = predictions.tolist()
    text = ("".join("0123456789abcdefghijklmnopqrstuvwxyz"[c] for c in p) + "\n"
            if max(p, default=0) < 36 else "\n".join(map(str, p)) + "\n")
    files.atomic_write(path, text.encode())


def read_predictions(path) -> list[int]:
    """The classes `write_predictions` wrote."""
    text = open(path).read().strip()
    return [int(v) for v in text.split()] if "\n" in text else [int(c, 36) for c in text]


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
