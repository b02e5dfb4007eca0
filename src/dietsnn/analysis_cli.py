"""`dietsnn energy`, `dietsnn sweep` and `dietsnn ablation`."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError


def _timesteps_list(s: str) -> list[int]:
    import argparse

    try:
        ts = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timesteps takes integers like 1,2,5, got {s!r}") from None
    if not ts or min(ts) < 1:
        raise argparse.ArgumentTypeError(f"--timesteps must be integers >= 1, got {s!r}")
    return ts


def add_commands(sub, common) -> dict:
    e = sub.add_parser("energy", help="per-layer FLOPs, spike rates and ANN vs SNN energy")
    e.add_argument("model", help="run directory or SNN model.safetensors")
    common(e, None)
    e.add_argument("--e-mac", type=float, default=4.6, help="pJ per multiply-accumulate")
    e.add_argument("--e-ac", type=float, default=0.9, help="pJ per accumulate")
    e.add_argument("--json", action="store_true")

    s = sub.add_parser("sweep", help="accuracy, spike rate and energy of an SNN at several T")
    s.add_argument("run", help="run directory (its snn/ and converted/ are swept) or checkpoint")
    common(s, None)
    s.add_argument("--timesteps", type=_timesteps_list, default=[1, 2, 3, 4, 5, 6, 8, 10])

    a = sub.add_parser("ablation", help="rate coding -> direct -> +threshold -> +leak training")
    a.add_argument("ann", help="trained ANN run directory or model.safetensors")
    common(a, "runs/ablation")
    a.add_argument("--train-timesteps", type=int, default=5,
                   help="T at which each variant is trained")
    a.add_argument("--timesteps", type=_timesteps_list, default=[1, 2, 3, 4, 5, 6, 8, 10],
                   help="T values each trained variant is evaluated at")
    a.add_argument("--snn-epochs", type=int, default=1)
    a.add_argument("--snn-lr", type=float, default=1e-4)
    a.add_argument("--batch-size", type=int, default=64)
    a.add_argument("--scale", type=float, default=0.6)
    a.add_argument("--percentile", type=float, default=99.7)
    a.add_argument("--calib-size", type=int, default=512)
    a.add_argument("--calib-timesteps", type=int, default=100)
    a.add_argument("--no-compile", dest="compile", action="store_false")
    return {"energy": cmd_energy, "sweep": cmd_sweep, "ablation": cmd_ablation}


def _ctx(args):
    from .cli import _setup

    return _setup(args)


def _metrics_file(model_arg: str) -> Path | None:
    p = Path(model_arg)
    for cand in (p / "metrics.json", p.parent / "metrics.json"):
        if cand.is_file():
            return cand
    return None


def cmd_energy(args) -> dict:
    from . import analysis, checkpoint
    from .pipeline import check_fits

    model = checkpoint.load_model(args.model)
    if not model.is_spiking:
        raise UserError(f"{args.model} is an ANN; energy compares an SNN with its ANN, give the "
                        "converted or trained SNN")
    args.quiet = args.quiet or args.json
    ctx = _ctx(args)
    check_fits(model, ctx, args.model)
    m = analysis.measure(model, ctx.data.test_x, ctx.data.test_y, device=ctx.device,
                         e_mac=args.e_mac, e_ac=args.e_ac)
    en = m["energy"]
    result = {"energy": {k: en[k] for k in ("ann_pj", "snn_pj", "ratio", "layers", "e_mac_pj",
                                             "e_ac_pj", "flops")},
              "accuracy": m["accuracy"], "timesteps": model.timesteps}
    mf = _metrics_file(args.model)
    if mf is not None:
        data = json.loads(mf.read_text())
        data["energy"] = result["energy"]
        from .checkpoint import write_json

        write_json(mf, data)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"SNN T={model.timesteps} accuracy {m['accuracy']:.4f}")
        print(analysis.format_energy_table(en))
    return result


def cmd_sweep(args) -> dict:
    from . import analysis, checkpoint
    from .checkpoint import write_json
    from .pipeline import check_fits
    from .report import plot_sweep_if_possible

    root = Path(args.run)
    targets = {}
    if root.is_dir() and (root / "snn").is_dir():
        for name in ("converted", "snn"):
            if (root / name / "model.safetensors").is_file():
                targets["converted SNN" if name == "converted" else "DIET-SNN"] = root / name
    else:
        targets["SNN"] = root
    ctx = _ctx(args)
    result = {}
    for name, path in targets.items():
        model = check_fits(checkpoint.load_model(path), ctx, str(path))
        if not model.is_spiking:
            raise UserError(f"{path} is an ANN; sweep needs an SNN")
        ctx.log(f"{name}:")
        result[name] = analysis.sweep(model, args.timesteps, ctx.data.test_x, ctx.data.test_y,
                                      device=ctx.device, log=ctx.log)
    out_dir = root if root.is_dir() else root.parent
    mf = out_dir / "metrics.json"
    ann_acc = None
    if mf.is_file():
        data = json.loads(mf.read_text())
        ann_acc = data.get("ann", {}).get("test_accuracy")
        data["sweep"] = result
        write_json(mf, data)
    else:
        write_json(out_dir / "sweep.json", result)
    if plot_sweep_if_possible(result, ann_acc, out_dir / "sweep.png", "Accuracy against T", ctx.log):
        ctx.log(f"wrote {out_dir / 'sweep.png'}")
    return result


def cmd_ablation(args) -> dict:
    from .ablation import run_ablation

    return run_ablation(args, _ctx(args))
