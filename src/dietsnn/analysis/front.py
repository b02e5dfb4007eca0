"""The accuracy-energy front of an ablation trained at several spike penalties: per variant, T
and penalty the test accuracy and ANN/SNN compute energy over seeds with 95% t-intervals;
paired differences between variants ((d) - (c): what a learned leak adds; (c) - (b): a learned
threshold) as t-intervals over seeds and exact McNemar tests on the per-image predictions; a plot
of accuracy against energy ratio, one curve per variant. Written as `front.json`, `front.md`
and `front.png` beside the ablation's own summary."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from .. import files
from .energy import read_predictions
from .report import _plt, _save, plot_if_possible

# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_interval(xs: list[float]) -> dict:
    """Mean and 95% t-interval half-width over `xs` (None for one value)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return {"mean": m, "half_width": None, "n": len(xs)}
    q = _T975[len(xs) - 2] if len(xs) - 1 <= len(_T975) else 1.96
    return {"mean": m, "half_width": q * statistics.stdev(xs) / math.sqrt(len(xs)), "n": len(xs)}


def mcnemar(pred_a: list[int], pred_b: list[int], labels: list[int]) -> dict:
    """Exact two-sided McNemar test: images only `a` gets right against only `b`."""
    only_a = sum(1 for a, b, y in zip(pred_a, pred_b, labels) if a == y and b != y)
    only_b = sum(1 for a, b, y in zip(pred_a, pred_b, labels) if a != y and b == y)
    n = only_a + only_b
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1))
    p = min(1.0, float(2 * Fraction(tail, 2 ** n))) if n else 1.0
    return {"only_a": only_a, "only_b": only_b, "p": p}


def _fmt(ci: dict, scale: float = 100.0, digits: int = 2) -> str:
    m = f"{scale * ci['mean']:.{digits}f}"
    return m if ci["half_width"] is None else f"{m} ± {scale * ci['half_width']:.{digits}f}"


def _verdict(ci: dict) -> str:
    if ci["half_width"] is None:
        return " (one seed)"
    return " (no detectable effect)" if abs(ci["mean"]) <= ci["half_width"] else ""


def summarize_front(out: str | Path, cells: list[dict], converted: dict, ann_accuracy: float,
                    log: Callable[[str], None] | None = None,
                    labels: list[int] | None = None) -> dict:
    """Aggregate the direct-encoded cells of `out` over penalties (see the module docstring).
    `labels`: the test labels, for McNemar tests on the cells' saved predictions."""
    out = Path(out)
    groups: dict[tuple[str, int, float], list[dict]] = {}
    for c in cells:
        if c["variant"] in "bcd":
            groups.setdefault((c["variant"], c["timesteps"], c.get("spike_penalty", 0.0)),
                              []).append(c)
    rows = []
    for (v, T, p), g in sorted(groups.items()):
        rows.append({"variant": v, "timesteps": T, "spike_penalty": p, "seeds": len(g),
                     "accuracy": t_interval([c["accuracy"] for c in g]),
                     "energy_ratio": t_interval([c["energy_ratio"] for c in g]),
                     "spikes": t_interval([c["mean_spike_rate"] for c in g]),
                     "leaks": [statistics.fmean(x) for x in zip(*(c["leaks"] for c in g))],
                     "thresholds": [statistics.fmean(x)
                                    for x in zip(*(c["thresholds"] for c in g))]})
    by = {(c["variant"], c["timesteps"], c.get("spike_penalty", 0.0), c["seed"]): c
          for c in cells}
    pairs = []
    for a, b in (("d", "c"), ("c", "b")):
        for (_, T, p) in sorted({k[:3] for k in by if k[0] == a}):
            seeds = [s for (vv, t, pp, s) in by if (vv, t, pp) == (a, T, p) and (b, T, p, s) in by]
            if not seeds:
                continue
            ca, cb = [by[(a, T, p, s)] for s in seeds], [by[(b, T, p, s)] for s in seeds]
            row = {"a": a, "b": b, "timesteps": T, "spike_penalty": p, "seeds": len(seeds),
                   "accuracy": t_interval([x["accuracy"] - y["accuracy"] for x, y in zip(ca, cb)]),
                   "energy_ratio": t_interval([x["energy_ratio"] - y["energy_ratio"]
                                               for x, y in zip(ca, cb)])}
            if labels is not None:
                tests = []
                for x, y in zip(ca, cb):
                    pa, pb = (out / "predictions" / f"{c.get('key')}.txt" for c in (x, y))
                    if pa.is_file() and pb.is_file():
                        tests.append(mcnemar(read_predictions(pa), read_predictions(pb), labels))
                row["mcnemar"] = tests
            pairs.append(row)
    conv = {c["timesteps"]: c for c in converted.values() if c["encoding"] == "direct"}
    res = {"ann_accuracy": ann_accuracy, "rows": rows, "pairs": pairs,
           "converted": {str(T): c for T, c in sorted(conv.items())}}
    files.write_json(out / "front.json", res)
    files.atomic_write(out / "front.md", front_markdown(res).encode())
    plot_if_possible(plot_front, res, out / "front.png", log=log)
    return res


def front_markdown(res: dict) -> str:
    lines = [f"ANN test accuracy {100 * res['ann_accuracy']:.2f}%. Mean ± 95% t-interval over "
             "seeds; energy: ANN/SNN compute energy (higher = less SNN energy); spikes per "
             "neuron per image, mean over layers.", "",
             "| variant | T | spike penalty | seeds | test accuracy (%) | ANN/SNN energy | spikes "
             "| leaks |", "|---|---|---|---|---|---|---|---|"]
    for T, c in res["converted"].items():
        lines.append(f"| converted | {T} | | | {100 * c['accuracy']:.2f} | "
                     + (f"{c['energy_ratio']:.2f}" if "energy_ratio" in c else "")
                     + f" | {c['mean_spike_rate']:.3f} | |")
    for r in res["rows"]:
        leaks = ", ".join(f"{x:.2f}" for x in r["leaks"])
        lines.append(f"| ({r['variant']}) | {r['timesteps']} | {r['spike_penalty']:g} | "
                     f"{r['seeds']} | {_fmt(r['accuracy'])} | "
                     f"{_fmt(r['energy_ratio'], 1.0)} | {_fmt(r['spikes'], 1.0, 3)} | {leaks} |")
    lines += ["", "Paired by seed, same T and penalty (accuracy in points, energy ratio in x); "
              "'no detectable effect' where the 95% interval covers zero; McNemar: exact "
              "two-sided p per seed on the test images.", "",
              "| difference | T | spike penalty | accuracy | energy ratio | McNemar p |",
              "|---|---|---|---|---|---|"]
    for r in res["pairs"]:
        acc = _fmt(r["accuracy"]) + _verdict(r["accuracy"])
        en = _fmt(r["energy_ratio"], 1.0) + _verdict(r["energy_ratio"])
        mc = ", ".join(f"{t['p']:.2g}" for t in r.get("mcnemar", []))
        lines.append(f"| ({r['a']}) − ({r['b']}) | {r['timesteps']} | {r['spike_penalty']:g} | "
                     f"{acc} | {en} | {mc} |")
    return "\n".join(lines) + "\n"


def plot_front(res: dict, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = {"b": "tab:blue", "c": "tab:orange", "d": "tab:green"}
    names = {"b": "(b) weights", "c": "(c) + threshold", "d": "(d) + leak (DIET-SNN)"}
    markers = {}
    for v in "bcd":
        for T in sorted({r["timesteps"] for r in res["rows"] if r["variant"] == v}):
            pts = sorted((r["energy_ratio"]["mean"], r["accuracy"]["mean"],
                           r["accuracy"]["half_width"] or 0.0) for r in res["rows"]
                          if r["variant"] == v and r["timesteps"] == T)
            if not pts:
                continue
            m = markers.setdefault(T, "osD^v<>"[len(markers) % 7])
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, [100 * y for y in ys], yerr=[100 * e for e in es], marker=m,
                        color=colors[v], capsize=2, lw=1,
                        label=f"{names[v]}, T={T}")
    for T, c in res["converted"].items():
        if "energy_ratio" in c:
            ax.plot(c["energy_ratio"], 100 * c["accuracy"], "k" + markers.get(int(T), "x"),
                    mfc="none", label=f"converted, T={T}")
    ax.axhline(100 * res["ann_accuracy"], color="gray", ls="--", lw=1, label="ANN")
    ax.set_xlabel("ANN/SNN compute energy (x)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against energy over spike penalties (mean ± 95% CI over seeds)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def load_labels(out: str | Path) -> list[int] | None:
    path = Path(out) / "test_labels.txt"
    return read_predictions(path) if path.is_file() else None


__all__ = ["front_markdown", "load_labels", "mcnemar", "plot_front", "summarize_front",
           "t_interval"]
