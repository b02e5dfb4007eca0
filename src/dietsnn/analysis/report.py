"""report.md and PNG plots of a run directory (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

from .. import logs
from ..files import atomic_write
from .energy import format_energy_table


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 10, "axes.grid": True,
                         "grid.alpha": 0.3})
    return plt


def _save(fig, path: Path) -> Path:
    """Lay out, render to memory, then write atomically (a killed write keeps the previous
    plot); closes `fig`."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _plt().close(fig)
    atomic_write(path, buf.getvalue())
    return path


def _history(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def plot_training(run: Path, out: Path) -> Path | None:
    plt = _plt()
    phases = [(p, _history(run / p / "history.json")) for p in ("ann", "snn")]
    phases = [(p, h) for p, h in phases if h]
    if not phases:
        return None
    fig, axes = plt.subplots(1, len(phases), figsize=(5.2 * len(phases), 3.6), squeeze=False)
    for ax, (phase, h) in zip(axes[0], phases):
        ep = [r["epoch"] for r in h]
        ax.plot(ep, [r["train_accuracy"] for r in h], "o-", label="train accuracy")
        if any(r.get("val_accuracy") is not None for r in h):  # none without validation
            ax.plot(ep, [r["val_accuracy"] for r in h], "s-", label="validation accuracy")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{phase.upper()} training")
        ax2 = ax.twinx()
        ax2.plot(ep, [r["train_loss"] for r in h], "--", color="gray", label="train loss")
        ax2.set_ylabel("loss")
        ax2.grid(False)
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out / "training.png")


def plot_sweep(sweeps: dict[str, list[dict]], ann_acc: float | None, path: Path,
               title: str = "Accuracy against timesteps") -> Path:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.4, 3.6))
    for name, rows in sweeps.items():
        T = [r["timesteps"] for r in rows]
        a1.plot(T, [100 * r["accuracy"] for r in rows], "o-", label=name)
        a2.plot(T, [r["mean_spike_rate"] for r in rows], "o-", label=name)
    if ann_acc is not None:
        a1.axhline(100 * ann_acc, color="k", ls="--", lw=1, label="ANN")
        a1.axhline(100 * ann_acc - 1, color="k", ls=":", lw=1, label="ANN - 1 point")
    a1.set_xlabel("timesteps T")
    a1.set_ylabel("test accuracy (%)")
    a1.set_title(title)
    a1.legend(fontsize=8)
    a2.set_xlabel("timesteps T")
    a2.set_ylabel("spikes per neuron per image")
    a2.set_title("Mean spike rate against timesteps")
    a2.legend(fontsize=8)
    return _save(fig, path)


def plot_if_possible(plot: Callable[..., Path], *args,
                     log: Callable[[str], None] | None = logs.warning) -> Path | None:
    """`plot(*args)`, or None (and a line to `log`) where matplotlib is not installed."""
    try:
        return plot(*args)
    except ImportError:
        if log:
            log("no plot written: install matplotlib (pip install dietsnn[plots])")
        return None


def plot_ablation(res: dict, path: Path) -> Path:
    """Accuracy and spikes per neuron against T, a line per ablation variant with its
    mean +- std band over seeds, the converted SNNs dashed, the ANN as a reference."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.4, 3.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks = {c["timesteps"] for c in res["converted"].values()}
    for i, c_enc in enumerate(sorted({c["encoding"] for c in res["converted"].values()})):
        rows = sorted((c for c in res["converted"].values() if c["encoding"] == c_enc),
                      key=lambda c: c["timesteps"])
        a1.plot([c["timesteps"] for c in rows], [100 * c["accuracy"] for c in rows], "x--",
                lw=1, color="0.5" if i else "0.7", label=f"converted, {c_enc}, untrained")
    top, low = 100 * res["ann_accuracy"] + 1.0, 100 * res["ann_accuracy"] - 5
    for i, v in enumerate(res["variants"].values()):
        rows, colour = v["rows"], colours[i % len(colours)]
        T = [r["timesteps"] for r in rows]
        m = [100 * r["accuracy_mean"] for r in rows]
        s = [100 * r["accuracy_std"] for r in rows]
        a1.plot(T, m, "o-", color=colour, label=v["label"])
        a1.fill_between(T, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                        color=colour, alpha=0.2)
        a2.plot(T, [r["spikes_mean"] for r in rows], "o-", color=colour, label=v["label"])
        top, low, ticks = max(top, *m), min(low, *m), ticks | set(T)
    a1.axhline(100 * res["ann_accuracy"], color="k", ls="--", lw=1, label="ANN")
    a1.axhline(100 * res["ann_accuracy"] - 1, color="k", ls=":", lw=1, label="ANN - 1 point")
    a1.set_ylim(max(low - 2, 0), top + 1)
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    a1.set_xlabel("timesteps T (trained and tested at T)")
    a1.set_ylabel("test accuracy (%)")
    a1.set_title("Accuracy against T (band: ± std over seeds)")
    a2.set_xlabel("timesteps T")
    a2.set_ylabel("spikes per neuron per image")
    a2.set_title("Mean spike rate against T")
    return _save(fig, path)



def plot_layers(layers: list[dict], path: Path) -> Path:
    plt = _plt()
    names = [d["name"] for d in layers]
    x = range(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].bar(x, [d["spike_rate"] for d in layers], color="tab:purple")
    axes[0].set_title("Spike rate per layer (spikes/neuron/image over T)")
    for ax, key in ((axes[1], "leak"), (axes[2], "threshold")):
        w = 0.38
        if f"{key}_init" in layers[0]:
            ax.bar([i - w / 2 for i in x], [d[f"{key}_init"] for d in layers], w, label="converted")
            ax.bar([i + w / 2 for i in x], [d[key] for d in layers], w, label="after DIET training")
            ax.legend(fontsize=8, loc="lower left")
        else:
            ax.bar(x, [d[key] for d in layers])
        ax.set_title(f"{key.capitalize()} per layer")
    for ax in axes:
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    return _save(fig, path)


def plot_energy(en: dict, path: Path) -> Path:
    plt = _plt()
    rows = en["layers"]
    names = [r["name"] for r in rows]
    x = range(len(rows))
    w = 0.38
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    ax.bar([i - w / 2 for i in x], [r["ann_pj"] / 1e6 for r in rows], w, label="ANN (MAC)")
    ax.bar([i + w / 2 for i in x], [r["snn_pj"] / 1e6 for r in rows], w, label="SNN (AC x spikes)")
    ax.set_yscale("log")
    ax.set_ylabel("energy per image (uJ)")
    ax.set_title(f"Compute energy per layer: ANN/SNN = {en['ratio']:.1f}x")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _figures(run: Path, metrics: dict, ann_acc, layers, en) -> list[tuple[str, str]]:
    figs = []
    p = plot_training(run, run)
    if p:
        figs.append(("Training curves", p.name))
    if metrics.get("sweep"):
        figs.append(("Accuracy and spike rate against T",
                     plot_sweep(metrics["sweep"], ann_acc, run / "sweep.png").name))
    if layers:
        figs.append(("Spike rate, leak and threshold per layer",
                     plot_layers(layers, run / "layers.png").name))
    if en:
        figs.append(("Compute energy per layer", plot_energy(en, run / "energy.png").name))
    return figs


def _pct_change(a: float, b: float) -> str:
    return f"{100 * (b - a) / a:+.1f}%" if a else "n/a"


def _neuron_summary(layers: list[dict]) -> str:
    """One sentence: how far DIET training moved the leaks and thresholds."""
    if "leak_init" not in layers[0]:
        return "Leaks and thresholds as converted (no SNN training)."
    low = min(layers, key=lambda d: d["leak"])
    dl = max(abs(d["leak"] - d["leak_init"]) for d in layers)
    dt = max(layers, key=lambda d: abs(d["threshold"] / d["threshold_init"] - 1))
    return (f"DIET training moved the leaks by up to {dl:.3f} (lowest: {low['leak']:.3f} in "
            f"{low['name']}) and the thresholds by up to "
            f"{_pct_change(dt['threshold_init'], dt['threshold'])} ({dt['name']}).")


def _mean_rate(m: dict) -> str:
    rates = [d["spike_rate"] for d in m.get("layers") or [] if "spike_rate" in d]
    return f"{sum(rates) / len(rates):.3f}" if rates else ""


def write_report(run: Path, metrics: dict) -> Path:
    """Write plots and report.md for a `dietsnn run` directory; returns the report's path."""
    ann_acc = metrics.get("ann", {}).get("test_accuracy")
    layers = metrics.get("snn", {}).get("layers")
    en = metrics.get("energy")
    try:
        figs = _figures(run, metrics, ann_acc, layers, en)
        note = []
    except ImportError:
        figs, note = [], ["", "(No plots: install matplotlib, e.g. `pip install dietsnn[plots]`.)"]
    snn, conv = metrics.get("snn", {}), metrics.get("converted", {})
    T = snn.get("timesteps")
    lines = ["# DIET-SNN run report", ""]
    cfg_path = run / "config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        lines += [f"Dataset {cfg.get('dataset')}, architecture {cfg.get('arch')}; command: "
                  f"`{cfg.get('command_line', 'dietsnn run')}`", ""]
    lines += ["| model | test accuracy | timesteps | spikes/neuron/image (mean over layers) |",
              "|---|---|---|---|"]
    if ann_acc is not None:
        lines.append(f"| ANN | {100 * ann_acc:.2f}% | - | - |")
    if conv:
        lines.append(f"| converted SNN (no training) | {100 * conv['test_accuracy']:.2f}% | "
                     f"{conv['timesteps']} | {_mean_rate(conv)} |")
    if snn:
        lines.append(f"| DIET-SNN | {100 * snn['test_accuracy']:.2f}% | {T} | "
                     f"{_mean_rate(snn)} |")
    if en:
        lines += ["", f"Compute energy per image: ANN {en['ann_pj'] / 1e6:.3f} uJ, SNN "
                      f"{en['snn_pj'] / 1e6:.3f} uJ: **{en['ratio']:.1f}x** less "
                      f"(E_MAC {en['e_mac_pj']} pJ, E_AC {en['e_ac_pj']} pJ; first layer as MACs).",
                  "", "```", format_energy_table(en), "```"]
    if layers:
        lines += ["", _neuron_summary(layers), "",
                  "| layer | leak (converted -> learned) | threshold (converted -> learned) | "
                  "spikes/neuron/image |", "|---|---|---|---|"]
        for d in layers:
            l0, t0 = d.get("leak_init", d["leak"]), d.get("threshold_init", d["threshold"])
            lines.append(f"| {d['name']} | {l0:.3f} -> {d['leak']:.3f} "
                         f"({_pct_change(l0, d['leak'])}) | {t0:.3f} -> {d['threshold']:.3f} "
                         f"({_pct_change(t0, d['threshold'])}) | {d['spike_rate']:.3f} |")
    for name, rows in (metrics.get("sweep") or {}).items():
        lines += ["", f"Latency sweep, {name}:", "", "| T | accuracy | spikes/neuron | ANN/SNN energy |",
                  "|---|---|---|---|"]
        lines += [f"| {r['timesteps']} | {100 * r['accuracy']:.2f}% | {r['mean_spike_rate']:.3f} | "
                  f"{r['energy_ratio']:.1f}x |" for r in rows]
    if metrics.get("profile"):
        lines += ["", "Time and memory per step (peak resident memory of the process so far):", "",
                  "| step | seconds | peak memory |", "|---|---|---|"]
        lines += [f"| {step} | {p['seconds']:.1f} | "
                  + (f"{p['peak_rss_mb']:.0f} MB |" if p.get("peak_rss_mb") else "- |")
                  for step, p in metrics["profile"].items()]
    lines += note
    for title, f in figs:
        lines += ["", f"## {title}", "", f"![{title}]({f})"]
    path = run / "report.md"
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return path
