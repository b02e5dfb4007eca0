"""The DIET-SNN ablation (SPEC 9) from one trained ANN with one training budget:
(a) rate-coded hybrid SNN, (b) direct encoding, (c) + threshold training, (d) + leak training."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from . import analysis
from . import checkpoint as ckpt
from .calibration import calibrate_thresholds
from .checkpoint import write_json
from .errors import UserError
from .functional import neuron
from .pipeline import calibration_images, load_checked
from .snn import ann_to_snn
from .training import TrainConfig, evaluate, fit

VARIANTS = [  # key, label, encoding, train threshold, train leak
    ("a", "(a) rate coding", "rate", False, False),
    ("b", "(b) direct encoding", "direct", False, False),
    ("c", "(c) + threshold training", "direct", True, False),
    ("d", "(d) + leak training (DIET-SNN)", "direct", True, True),
]


def run_ablation(args, ctx) -> dict:
    from .cli import _has_compiler

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    neuron.set_backend("compile" if args.compile and _has_compiler() else "eager")
    ann = load_checked(args.ann, ctx)
    if ann.is_spiking:
        raise UserError(f"{args.ann} is an SNN; the ablation starts from a trained ANN")
    ann_acc = evaluate(ann, ctx.data.test_x, ctx.data.test_y, device=ctx.device)["accuracy"]
    ctx.log(f"ANN test accuracy {ann_acc:.4f}")
    images = calibration_images(ctx, args.calib_size, args.seed).to(ctx.device)
    converted = {}
    for enc in ("rate", "direct"):
        snn = ann_to_snn(ann, args.train_timesteps, enc).to(ctx.device)
        torch.manual_seed(args.seed)
        calibrate_thresholds(snn, images, args.percentile, args.scale, args.calib_timesteps)
        converted[enc] = snn
    results = {"ann_accuracy": ann_acc, "train_timesteps": args.train_timesteps,
               "snn_epochs": args.snn_epochs, "variants": {}}
    sweeps = {}
    for key, label, enc, train_thr, train_leak in VARIANTS:
        ctx.log(f"{label}: training {args.snn_epochs} epoch(s) at T={args.train_timesteps}")
        snn = copy.deepcopy(converted[enc])
        cfg = TrainConfig(epochs=args.snn_epochs, lr=args.snn_lr, optimizer="adam",
                          weight_decay=0.0, batch_size=args.batch_size, seed=args.seed,
                          train_leak=train_leak, train_threshold=train_thr)
        fit(snn, ctx.data, cfg, out / key, progress=ctx.progress, log=ctx.log, desc=key,
            device=ctx.device)
        best = ckpt.load_model(out / key / ckpt.MODEL_FILE).to(ctx.device)
        rows = analysis.sweep(best, args.timesteps, ctx.data.test_x, ctx.data.test_y,
                              device=ctx.device, log=ctx.log)
        at_train = analysis.measure(best, ctx.data.test_x, ctx.data.test_y, device=ctx.device)
        sweeps[label] = rows
        results["variants"][key] = {
            "label": label, "encoding": enc, "train_threshold": train_thr, "train_leak": train_leak,
            "sweep": rows, "t_within_1pt": analysis.smallest_t_within(rows, ann_acc),
            "accuracy": at_train["accuracy"], "mean_spike_rate": at_train["mean_spike_rate"],
            "energy_ratio": at_train["energy"]["ratio"],
            "leaks": [m.leak.item() for _, m in _lifs(best)],
            "thresholds": [m.threshold.item() for _, m in _lifs(best)]}
    write_json(out / "ablation.json", results)
    (out / "ablation.md").write_text(ablation_markdown(results))
    from .report import plot_sweep_if_possible

    plot_sweep_if_possible(sweeps, ann_acc, out / "ablation.png", "Ablation: accuracy against T",
                           ctx.log)
    ctx.log(ablation_markdown(results))
    return results


def _lifs(model):
    from .modules import lif_layers

    return lif_layers(model)


def ablation_markdown(res: dict) -> str:
    Ts = [r["timesteps"] for r in next(iter(res["variants"].values()))["sweep"]]
    head = ("| variant | " + " | ".join(f"T={t}" for t in Ts)
            + " | smallest T within 1 pt of ANN | spikes/neuron (T=train) | ANN/SNN energy |")
    lines = [f"ANN test accuracy {100 * res['ann_accuracy']:.2f}%; each variant trained "
             f"{res['snn_epochs']} epoch(s) at T={res['train_timesteps']}.", "", head,
             "|---" * (len(Ts) + 4) + "|"]
    for v in res["variants"].values():
        accs = " | ".join(f"{100 * r['accuracy']:.2f}" for r in v["sweep"])
        t = v["t_within_1pt"] if v["t_within_1pt"] is not None else f"> {max(Ts)}"
        lines.append(f"| {v['label']} | {accs} | {t} | {v['mean_spike_rate']:.3f} | "
                     f"{v['energy_ratio']:.1f}x |")
    return "\n".join(lines) + "\n"


def load_results(path: Path) -> dict:
    return json.loads(Path(path).read_text())
