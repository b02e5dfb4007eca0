"""Two ablation folders (`dietsnn ablation --out A`, `--out B`) side by side: per cell present in
both (the same variant, T, seed and penalty), test accuracy, spikes per neuron and ANN/SNN
energy of each, and B - A paired by seed as mean +- 95% t-interval, with the exact McNemar test
on the per-image predictions of each pair. Prints Markdown.

    PYTHONPATH=src python3 benchmarks/compare_ablations.py A B [--names A_NAME B_NAME]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from dietsnn.analysis.energy import read_predictions
from dietsnn.analysis.front import load_labels, mcnemar, t_interval


def cells(folder: Path) -> dict[str, dict]:
    return {(c := json.loads(p.read_text()))["key"]: c
            for p in sorted((folder / "cells").glob("*.json"))}


def predictions(folder: Path, key: str) -> list[int] | None:
    p = folder / "predictions" / f"{key}.txt"
    return read_predictions(p) if p.is_file() else None


def fmt(ci: dict, scale: float, digits: int) -> str:
    m = f"{scale * ci['mean']:+.{digits}f}"
    return m if ci["half_width"] is None else f"{m} ± {scale * ci['half_width']:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A_NAME", "B_NAME"))
    args = ap.parse_args()
    na, nb = args.names
    ca, cb = cells(args.a), cells(args.b)
    labels = load_labels(args.a)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for key in sorted(set(ca) & set(cb)):
        c = ca[key]
        groups[(c["variant"], c["timesteps"], c.get("spike_penalty", 0.0))].append(key)
    print(f"| variant | T | penalty | {na} accuracy | {nb} accuracy | {nb} - {na} (points) | "
          f"{na} / {nb} spikes | {na} / {nb} energy | McNemar p per seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (v, T, pen), keys in sorted(groups.items()):
        acc_a = [ca[k]["accuracy"] for k in keys]
        acc_b = [cb[k]["accuracy"] for k in keys]
        diff = t_interval([b - a for a, b in zip(acc_a, acc_b)])
        ps = []
        for k in keys:
            pa, pb = predictions(args.a, k), predictions(args.b, k)
            ps.append(f"{mcnemar(pa, pb, labels)['p']:.3g}" if pa and pb and labels else "-")
        mean = lambda cs, f: sum(c[f] for c in cs) / len(cs)  # noqa: E731
        sa, sb = [ca[k] for k in keys], [cb[k] for k in keys]
        print(f"| {v} | {T} | {pen:g} | {100 * mean(sa, 'accuracy'):.2f} | "
              f"{100 * mean(sb, 'accuracy'):.2f} | {fmt(diff, 100, 2)} | "
              f"{mean(sa, 'mean_spike_rate'):.3f} / {mean(sb, 'mean_spike_rate'):.3f} | "
              f"{mean(sa, 'energy_ratio'):.2f}x / {mean(sb, 'energy_ratio'):.2f}x | "
              f"{', '.join(ps)} |")


if __name__ == "__main__":
    main()
