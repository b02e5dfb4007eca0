"""`dietsnn energy`, `dietsnn sweep` and `dietsnn ablation`."""

from __future__ import annotations

import argparse
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


def _int_list(s: str) -> list[int]:
    import argparse

    try:
        vs = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {s!r}") from None
    if not vs or min(vs) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0, got {s!r}")
    return vs


def _float_list(s: str) -> list[float]:
    import argparse

    try:
        vs = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.3,0.5, got {s!r}") from None
    if not vs or min(vs) <= 0:
        raise argparse.ArgumentTypeError(f"expected numbers > 0, got {s!r}")
    return vs


def _positive(name: str):
    from .cli import _positive_int

    return _positive_int(name)


def _positive_float(name: str):
    from .cli import _float_in

    return _float_in(name, 0, float("inf"))


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

    from .ablation import AblationConfig

    d = AblationConfig()
    a = sub.add_parser("ablation", help="rate coding -> direct -> +threshold -> +leak training, "
                       "each trained at each T over several seeds",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("ann", help="trained ANN run directory or model.safetensors")
    common(a, "runs/ablation")
    a.add_argument("--timesteps", type=_timesteps_list, default=list(d.timesteps),
                   help="T values at which every variant is trained and tested")
    a.add_argument("--rate-timesteps", type=_timesteps_list, default=list(d.rate_timesteps),
                   help="further T values for (a), rate coding")
    a.add_argument("--seeds", type=_int_list, default=list(d.seeds),
                   help="training seeds (dropout masks, batch order, rate-coded input)")
    a.add_argument("--variants", default=d.variants, help="which of a, b, c, d to run")
    a.add_argument("--snn-epochs", type=_positive("--snn-epochs"), default=d.epochs)
    a.add_argument("--train-subset", type=_positive("--train-subset"), default=d.train_subset,
                   metavar="N", help="training images per epoch")
    a.add_argument("--snn-lr", type=_positive_float("--snn-lr"), default=d.lr)
    a.add_argument("--neuron-lr", type=_positive_float("--neuron-lr"), default=d.neuron_lr,
                   help="learning rate of the leaks and thresholds")
    a.add_argument("--amsgrad", action="store_true", help="Adam's AMSGrad variant")
    a.add_argument("--batch-size", type=_positive("--batch-size"), default=d.batch_size)
    a.add_argument("--scales", type=_float_list, default=list(d.scales),
                   help="threshold scales from which each T's is chosen on validation")
    a.add_argument("--percentile", type=_positive_float("--percentile"), default=d.percentile)
    a.add_argument("--calib-size", type=_positive("--calib-size"), default=d.calib_size)
    a.add_argument("--calib-timesteps", type=_positive("--calib-timesteps"),
                   default=d.calib_timesteps)
    a.add_argument("--resume", action="store_true", help="skip the finished cells in --out")
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
    from .ablation import Ablation, AblationConfig
    from .cli import _backend
    from .pipeline import load_checked

    cfg = AblationConfig(
        timesteps=args.timesteps, rate_timesteps=args.rate_timesteps, seeds=args.seeds,
        variants=args.variants, epochs=args.snn_epochs, train_subset=args.train_subset,
        lr=args.snn_lr, neuron_lr=args.neuron_lr, amsgrad=args.amsgrad,
        batch_size=args.batch_size, scales=args.scales, percentile=args.percentile,
        calib_size=args.calib_size, calib_timesteps=args.calib_timesteps)
    ctx = _ctx(args)
    _backend(args)
    ann = load_checked(args.ann, ctx)
    return Ablation(ann, ctx.data, cfg, args.out, ctx.device, ctx.log, ctx.progress,
                    args.seed).run(args.resume)
