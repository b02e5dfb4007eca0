"""The DIET-SNN ablation, from one trained ANN and one training budget, every variant trained at
every T it reports, over several seeds:

(a) rate coding, (b) direct encoding (weights only), (c) + threshold training,
(d) + threshold and leak training (DIET-SNN).

The conversion scale for each (encoding, T) is chosen by one rule for all variants: the scale
that maximises the converted SNN's validation accuracy. Each (variant, T, seed) cell is written to
`cells/<key>.json` as it finishes; `resume` skips finished cells and continues an unfinished one
from its last epoch, so the grid can be run in pieces. `summarize` turns the cells found into
`ablation.json`, `ablation.md` and `ablation.png` (after every cell, so partial grids are
readable).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from .. import checkpoint as ckpt
from .. import files, logs
from ..config import SCALES, SNN_TRAIN, ConversionConfig, TrainConfig
from ..conversion import calibrate_thresholds, choose_scale, convert
from ..data import Splits
from ..errors import UserError
from ..layers import lif_layers
from ..models import Network
from ..rundir import RunDir
from ..training import evaluate, fit, seeded
from .energy import measure, write_predictions
from .report import plot_ablation, plot_if_possible

VARIANTS = {  # key: label, encoding, train threshold, train leak
    "a": ("(a) rate coding", "rate", False, False),
    "b": ("(b) direct encoding", "direct", False, False),
    "c": ("(c) + threshold training", "direct", True, False),
    "d": ("(d) + threshold and leak (DIET-SNN)", "direct", True, True),
}


@dataclass
class AblationConfig:
    timesteps: tuple[int, ...] = (1, 2, 3, 5)  # every variant is trained at each
    rate_timesteps: tuple[int, ...] = (10, 20)  # further T for (a): rate coding needs more steps
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: str = "abcd"
    epochs: int = 1
    train_subset: int | None = 10000  # training images per epoch (the first of the shuffled split)
    lr: float = SNN_TRAIN.lr
    neuron_lr: float = SNN_TRAIN.neuron_lr
    amsgrad: bool = False
    batch_size: int = SNN_TRAIN.batch_size
    scales: tuple[float, ...] = SCALES
    percentile: float = ConversionConfig.percentile
    calib_size: int = ConversionConfig.calib_size
    calib_timesteps: int = ConversionConfig.calib_timesteps
    # spike penalties (TrainConfig.spike_penalty) at which (b)-(d) are trained: with more than
    # 0 the grid is the accuracy-energy front (analysis.front)
    penalties: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        bad = set(self.variants) - set(VARIANTS)
        if bad or not self.variants:
            raise UserError(f"variants must be letters from {''.join(VARIANTS)}, got "
                            f"{self.variants!r}")
        for name in ("timesteps", "rate_timesteps", "seeds", "scales", "penalties"):
            setattr(self, name, tuple(getattr(self, name)))
        if not self.timesteps or min(self.timesteps) < 1 or min(self.rate_timesteps, default=1) < 1:
            raise UserError("timesteps must be integers >= 1")
        if not self.seeds:
            raise UserError("at least one seed is needed")
        if not self.scales or min(self.scales) <= 0:
            raise UserError("scales must be > 0")
        if not self.penalties or min(self.penalties) < 0:
            raise UserError("spike penalties must be >= 0")

    def cells(self) -> list[tuple[str, int, int, float]]:
        """(variant, T, seed, spike penalty) in run order: direct-encoded variants first, seed
        by seed and penalty by penalty, so that partial grids compare (b), (c), (d) on the same
        seeds; rate coding is trained without penalty."""
        direct = [(v, T, s, p) for s in self.seeds for p in self.penalties
                  for T in self.timesteps for v in "bcd" if v in self.variants]
        rate = [(v, T, s, 0.0) for s in self.seeds
                for T in sorted({*self.timesteps, *self.rate_timesteps}) for v in "a"
                if v in self.variants]
        return direct + rate


def cell_key(variant: str, T: int, seed: int, penalty: float = 0.0) -> str:
    return f"{variant}-T{T}-s{seed}" + (f"-p{penalty:g}" if penalty else "")


def ablation_outputs(cfg: AblationConfig) -> list[str]:
    """Every file the grid of `cfg` may write into its folder (checked before it starts)."""
    runs = [f"runs/{cell_key(*c)}/{f}" for c in cfg.cells()
            for f in (ckpt.MODEL_FILE, ckpt.STATE_FILE, "history.json")]
    preds = [f"predictions/{cell_key(*c)}.txt" for c in cfg.cells()]
    preds += [f"predictions/converted-{e}-T{T}.txt" for e in ("direct", "rate")
              for T in {*cfg.timesteps, *cfg.rate_timesteps}]
    return ["ann.json", "converted.json", "setup-direct.json", "setup-rate.json",
            "ablation.json", "ablation.md", "ablation.png", "test_labels.txt",
            "front.json", "front.md", "front.png",
            *(f"cells/{cell_key(*c)}.json" for c in cfg.cells()), *runs, *preds]


class Ablation:
    """The ablation grid over one ANN, writing into `out`."""

    def __init__(self, ann: Network, data: Splits, cfg: AblationConfig, out: str | Path,
                 device: str | torch.device = "cpu",
                 log: Callable[[str], None] = logs.info, progress: bool = False,
                 calib_seed: int = 0) -> None:
        if ann.is_spiking:
            raise UserError("the ablation starts from a trained ANN, not an SNN")
        if len(data.val_y) == 0:
            raise UserError("the ablation chooses each T's threshold scale on the validation "
                            "split; give --val-size >= 1")
        self.ann, self.data, self.cfg, self.out = ann, data, cfg, Path(out)
        self.device, self.log, self.progress, self.calib_seed = device, log, progress, calib_seed

    # -- conversion, shared by every variant of an encoding ---------------------------------
    def setup(self, encoding: str) -> dict:
        """Raw (scale 1) thresholds and the validation-chosen scale per T, cached on disk."""
        path = self.out / f"setup-{encoding}.json"
        if path.is_file():
            return json.loads(path.read_text())
        cfg, d = self.cfg, self.data
        g = torch.Generator().manual_seed(self.calib_seed)
        idx = torch.randperm(len(d.train_x), generator=g)[:cfg.calib_size]
        snn = convert(self.ann, cfg.calib_timesteps, encoding).to(self.device)
        with seeded(self.calib_seed):
            calibrate_thresholds(snn, d.train_x[idx].to(self.device), cfg.percentile, 1.0,
                                 cfg.calib_timesteps, limit=None)
        raw = {name: m.threshold.item() for name, m in lif_layers(snn)}
        Ts = sorted({*cfg.timesteps, *(cfg.rate_timesteps if encoding == "rate" else ())})
        scan: dict[str, dict[str, float]] = {}
        chosen: dict[str, float] = {}
        for T in Ts:
            snn.timesteps = T
            _set_thresholds(snn, raw, 1.0)
            best, accs = choose_scale(snn, d.val_x, d.val_y, cfg.scales, self.device,
                                      climb=False)
            scan[str(T)] = {str(s): a for s, a in accs.items()}
            chosen[str(T)] = best
            self.log(f"{encoding} T={T}: scale {best} (validation accuracy "
                     f"{accs[best]:.4f}; scanned {', '.join(map(str, cfg.scales))})")
        res = {"encoding": encoding, "raw_thresholds": raw, "scale": chosen,
               "validation_scan": scan}
        files.write_json(path, res)
        return res

    def converted(self, encoding: str, T: int) -> Network:
        st = self.setup(encoding)
        snn = convert(self.ann, T, encoding).to(self.device)
        _set_thresholds(snn, st["raw_thresholds"], st["scale"][str(T)])
        return snn

    # -- one cell ----------------------------------------------------------------------------
    def run_cell(self, variant: str, T: int, seed: int, resume: bool = True,
                 penalty: float = 0.0) -> dict:
        key = cell_key(variant, T, seed, penalty)
        path = self.out / "cells" / f"{key}.json"
        if resume and path.is_file():
            return json.loads(path.read_text())
        cfg = self.cfg
        label, enc, train_thr, train_leak = VARIANTS[variant]
        snn = self.converted(enc, T)
        initial = [(m.leak.item(), m.threshold.item()) for _, m in lif_layers(snn)]
        n = cfg.train_subset or len(self.data.train_x)
        data = replace(self.data, train_x=self.data.train_x[:n], train_y=self.data.train_y[:n])
        tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, optimizer="adam", weight_decay=0.0,
                           batch_size=cfg.batch_size, augment=False, seed=seed,
                           train_leak=train_leak, train_threshold=train_thr,
                           neuron_lr=cfg.neuron_lr, amsgrad=cfg.amsgrad, spike_penalty=penalty)
        t0 = time.time()
        run_dir = self.out / "runs" / key
        res = fit(snn, data, tcfg, run_dir, resume=resume, progress=self.progress,
                  log=self.log, desc=key, device=self.device)
        best = ckpt.load_model(run_dir / ckpt.MODEL_FILE).to(self.device)
        preds: list[Tensor] = []
        m = measure(best, self.data.test_x, self.data.test_y, device=self.device,
                    predictions=preds)
        lifs = lif_layers(best)
        cell = {"key": key, "variant": variant, "label": label, "timesteps": T, "seed": seed,
                "spike_penalty": penalty,
                "accuracy": m["accuracy"], "val_accuracy": res["best_val_accuracy"],
                "mean_spike_rate": m["mean_spike_rate"], "spike_rates": m["spike_rates"],
                "energy_ratio": m["energy"]["ratio"],
                "scale": self.setup(enc)["scale"][str(T)],
                "layers": [n for n, _ in lifs],
                "leaks": [x.leak.item() for _, x in lifs],
                "thresholds": [x.threshold.item() for _, x in lifs],
                "leaks_init": [a for a, _ in initial], "thresholds_init": [b for _, b in initial],
                "seconds": time.time() - t0}
        write_predictions(self.out / "predictions" / f"{key}.txt", torch.cat(preds))
        files.write_json(path, cell)
        (run_dir / ckpt.STATE_FILE).unlink(missing_ok=True)  # finished: no resume state needed
        self.log(f"{key}: test accuracy {cell['accuracy']:.4f}, spikes/neuron "
                 f"{cell['mean_spike_rate']:.3f}, {cell['seconds']:.0f}s")
        return cell

    def run(self, resume: bool = False, overwrite: bool = False) -> dict:
        """Run the grid into `out`, opened as a `RunDir`: a folder that holds other work is
        refused unless `resume` (continue an ablation there) or `overwrite` (replace a dietsnn
        run) says so, and it stays locked while the grid runs."""
        with RunDir(self.out, "ablation", resume=resume, overwrite=overwrite,
                    outputs=ablation_outputs(self.cfg)) as rd:
            rd.start({"command": "ablation", "ablation": asdict(self.cfg)})
            return self.run_grid()

    def run_grid(self) -> dict:
        """Run the grid into `out`, a folder the caller has opened as a `RunDir` (the command
        line does): finished cells are kept, an unfinished one continues from its last epoch."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        info = out / "ann.json"
        if not info.is_file():
            acc = evaluate(self.ann, self.data.test_x, self.data.test_y,
                           device=self.device)["accuracy"]
            n = min(self.cfg.train_subset or len(self.data.train_x), len(self.data.train_x))
            files.write_json(info, {"ann_accuracy": acc, "config": asdict(self.cfg),
                                   "train_images": n})
        if not (out / "test_labels.txt").is_file():  # for paired tests on the predictions
            write_predictions(out / "test_labels.txt", self.data.test_y)
        self.log(f"ANN test accuracy {json.loads(info.read_text())['ann_accuracy']:.4f}")
        for enc in sorted({VARIANTS[v][1] for v in self.cfg.variants}):
            self.setup(enc)
        self.converted_accuracies()
        todo = self.cfg.cells()
        for i, (v, T, s, p) in enumerate(todo):
            self.log(f"[{i + 1}/{len(todo)}] {VARIANTS[v][0]}, T={T}, seed {s}"
                     + (f", spike penalty {p:g}" if p else ""))
            self.run_cell(v, T, s, resume=True, penalty=p)
            summarize(out, self.log if i + 1 == len(todo) else None)
        return summarize(out)

    def converted_accuracies(self) -> dict:
        """Test accuracy of each converted SNN before training (the row 'converted')."""
        path = self.out / "converted.json"
        done = json.loads(path.read_text()) if path.is_file() else {}
        for enc in sorted({VARIANTS[v][1] for v in self.cfg.variants}):
            Ts = self.cfg.timesteps + (self.cfg.rate_timesteps if enc == "rate" else ())
            for T in sorted(set(Ts)):
                k = f"{enc}-T{T}"
                if k not in done:
                    snn = self.converted(enc, T)
                    preds: list[Tensor] = []
                    m = measure(snn, self.data.test_x, self.data.test_y,
                                device=self.device, predictions=preds)
                    done[k] = {"encoding": enc, "timesteps": T, "accuracy": m["accuracy"],
                               "mean_spike_rate": m["mean_spike_rate"],
                               "energy_ratio": m["energy"]["ratio"]}
                    write_predictions(self.out / "predictions" / f"converted-{k}.txt",
                                      torch.cat(preds))
                    files.write_json(path, done)
        return done


@torch.no_grad()
def _set_thresholds(snn: Network, raw: dict[str, float], scale: float) -> None:
    for name, m in lif_layers(snn):
        m.threshold.fill_(scale * raw[name])


# -- summary -------------------------------------------------------------------------------------
def _stats(xs: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), len(xs)


def summarize(out: str | Path, log=None) -> dict:
    """Aggregate the finished cells of `out` into ablation.json / .md / .png."""
    out = Path(out)
    every = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    cells = [c for c in every if not c.get("spike_penalty")]  # the ablation proper
    ann = json.loads((out / "ann.json").read_text())
    conv_path = out / "converted.json"
    converted = json.loads(conv_path.read_text()) if conv_path.is_file() else {}
    groups: dict[tuple[str, int], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["variant"], c["timesteps"]), []).append(c)
    table: dict[str, dict] = {}
    for v, (label, *_rest) in VARIANTS.items():
        rows = []
        for T in sorted(T for (vv, T) in groups if vv == v):
            g = groups[(v, T)]
            acc = _stats([c["accuracy"] for c in g])
            rows.append({"timesteps": T, "accuracy_mean": acc[0], "accuracy_std": acc[1],
                         "seeds": acc[2], "spikes_mean": _stats([c["mean_spike_rate"] for c in g])[0],
                         "energy_ratio_mean": _stats([c["energy_ratio"] for c in g])[0],
                         "leaks_mean": [statistics.fmean(x) for x in zip(*(c["leaks"] for c in g))],
                         "thresholds_mean": [statistics.fmean(x)
                                             for x in zip(*(c["thresholds"] for c in g))],
                         "thresholds_init": g[0]["thresholds_init"], "layers": g[0]["layers"],
                         "seconds": sum(c["seconds"] for c in g)})
        if rows:
            ok = [r["timesteps"] for r in rows if r["accuracy_mean"] >= ann["ann_accuracy"] - 0.01]
            table[v] = {"label": label, "rows": rows, "t_within_1pt": min(ok) if ok else None}
    paired = _paired(cells, "d", "b")
    res = {"ann_accuracy": ann["ann_accuracy"], "config": ann["config"],
           "train_images": ann["train_images"], "variants": table,
           "converted": converted, "d_minus_b": paired, "cells": len(cells),
           "cpu_seconds": sum(c["seconds"] for c in cells)}
    md = ablation_markdown(res)
    with files.transaction():  # the summary's three files: all or none
        files.write_json(out / "ablation.json", res)
        files.atomic_write(out / "ablation.md", md.encode())
        plot_if_possible(plot_ablation, res, out / "ablation.png", log=log)
    if len(every) > len(cells):
        from .front import load_labels, summarize_front

        res["front"] = summarize_front(out, every, converted, ann["ann_accuracy"], log,
                                       load_labels(out))
    if log:
        log(md)
    return res


def _paired(cells: list[dict], a: str, b: str) -> list[dict]:
    """Per T: mean and std over seeds of accuracy(a) - accuracy(b), same seed paired."""
    by = {(c["variant"], c["timesteps"], c["seed"]): c["accuracy"] for c in cells}
    rows = []
    for T in sorted({t for (v, t, _) in by if v == a}):
        diffs = [by[(a, T, s)] - by[(b, T, s)] for (v, t, s) in by if v == a and t == T
                 and (b, T, s) in by]
        if diffs:
            m, sd, n = _stats(diffs)
            rows.append({"timesteps": T, "mean": m, "std": sd, "seeds": n})
    return rows


def _pct(m: float, s: float, n: int) -> str:
    return f"{100 * m:.2f} ± {100 * s:.2f}" if n > 1 else f"{100 * m:.2f}"


def ablation_markdown(res: dict) -> str:
    cfg = res["config"]
    Ts = sorted({r["timesteps"] for v in res["variants"].values() for r in v["rows"]})
    lines = [f"ANN test accuracy {100 * res['ann_accuracy']:.2f}%. Each variant trained at each T "
             f"for {cfg['epochs']} epoch(s) on {res['train_images']} training images "
             f"(Adam lr {cfg['lr']:g}, leak/threshold lr {cfg['neuron_lr']:g}"
             f"{', AMSGrad' if cfg['amsgrad'] else ''}, batch {cfg['batch_size']}); test accuracy "
             f"in % on the full test set, mean ± std over seeds; {res['cells']} cells, "
             f"{res['cpu_seconds'] / 3600:.2f} h of training and testing.", "",
             "| variant | " + " | ".join(f"T={t}" for t in Ts) + " | smallest T within 1 pt |",
             "|---" * (len(Ts) + 2) + "|"]
    conv = {}
    for c in res["converted"].values():
        conv.setdefault(c["encoding"], {})[c["timesteps"]] = c["accuracy"]
    for enc, accs in sorted(conv.items()):
        cells = " | ".join(f"{100 * accs[t]:.2f}" if t in accs else "" for t in Ts)
        lines.append(f"| converted, {enc}, no training | {cells} | |")
    for v in res["variants"].values():
        by = {r["timesteps"]: r for r in v["rows"]}
        cells = " | ".join(_pct(by[t]["accuracy_mean"], by[t]["accuracy_std"], by[t]["seeds"])
                           if t in by else "" for t in Ts)
        t1 = v["t_within_1pt"] if v["t_within_1pt"] is not None else f"> {max(by)}"
        lines.append(f"| {v['label']} | {cells} | {t1} |")
    lines += ["", "Spikes per neuron per image (mean over layers and seeds) and ANN/SNN compute "
              "energy:", "", "| variant | " + " | ".join(f"T={t}" for t in Ts) + " |",
              "|---" * (len(Ts) + 1) + "|"]
    for v in res["variants"].values():
        by = {r["timesteps"]: r for r in v["rows"]}
        cells = " | ".join(f"{by[t]['spikes_mean']:.3f} ({by[t]['energy_ratio_mean']:.1f}x)"
                           if t in by else "" for t in Ts)
        lines.append(f"| {v['label']} | {cells} |")
    if res["d_minus_b"]:
        lines += ["", "(d) − (b), paired by seed (points):", "",
                  "| T | mean | std | seeds |", "|---|---|---|---|"]
        for r in res["d_minus_b"]:
            lines.append(f"| {r['timesteps']} | {100 * r['mean']:+.2f} | {100 * r['std']:.2f} | "
                         f"{r['seeds']} |")
    for key in ("c", "d"):
        v = res["variants"].get(key)
        if not v:
            continue
        lines += ["", f"Learned values of {v['label']} (mean over seeds; threshold: converted -> "
                  "learned):", "", "| T | " + " | ".join(v["rows"][0]["layers"]) + " |",
                  "|---" * (len(v["rows"][0]["layers"]) + 1) + "|"]
        for r in v["rows"]:
            cells = " | ".join(f"leak {lk:.3f}, thr {t0:.3f} -> {t:.3f}" for lk, t0, t in
                               zip(r["leaks_mean"], r["thresholds_init"], r["thresholds_mean"]))
            lines.append(f"| {r['timesteps']} | {cells} |")
    return "\n".join(lines) + "\n"
