"""`dietsnn energy`, `dietsnn sweep` and `dietsnn ablation`: what a trained SNN does."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from ..analysis import format_energy_table, measure, sweep
from ..analysis.ablation import Ablation, AblationConfig, ablation_outputs
from ..analysis.report import plot_if_possible, plot_sweep
from ..checkpoint import load_model
from ..config import MAX_BATCH, MAX_EPOCHS, MAX_SAMPLES, MAX_TIMESTEPS
from ..errors import UserError
from ..files import dumps, transaction, write_json
from ..functional.energy import E_AC_PJ, E_MAC_PJ
from ..pipeline import check_fits, load_checked
from ..rundir import RunDir
from .options import (
    MAX_SEED,
    common,
    float_in,
    float_list,
    int_list,
    metrics_file,
    open_out,
    positive_float,
    positive_int,
    run_config,
    setup,
)
from .train import SWEEP_TIMESTEPS


def add_commands(sub) -> dict:
    e = sub.add_parser("energy", help="per-layer FLOPs, spike rates and ANN vs SNN energy")
    e.add_argument("model", help="run directory or SNN model.safetensors")
    common(e, None)
    e.add_argument("--e-mac", type=positive_float("--e-mac"), default=E_MAC_PJ,
                   help="pJ per multiply-accumulate")
    e.add_argument("--e-ac", type=positive_float("--e-ac"), default=E_AC_PJ, help="pJ per accumulate")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.add_argument("--overwrite", action="store_true",
                   help="replace the energy result already stored in the run's metrics.json")

    s = sub.add_parser("sweep", help="accuracy, spike rate and energy of an SNN at several T")
    s.add_argument("run", help="run directory (its snn/ and converted/ are swept) or checkpoint")
    common(s, None)
    s.add_argument("--timesteps", type=int_list("--timesteps", MAX_TIMESTEPS),
                   default=list(SWEEP_TIMESTEPS))
    s.add_argument("--overwrite", action="store_true",
                   help="replace an earlier sweep of this run (metrics.json's sweep, sweep.json, "
                        "sweep.png)")

    d = AblationConfig()
    a = sub.add_parser("ablation", help="rate coding -> direct -> +threshold -> +leak training, "
                       "each trained at each T over several seeds")
    a.add_argument("ann", help="trained ANN run directory or model.safetensors")
    common(a, "runs/ablation")
    a.add_argument("--timesteps", type=int_list("--timesteps", MAX_TIMESTEPS),
                   default=list(d.timesteps),
                   help="T values at which every variant is trained and tested")
    a.add_argument("--rate-timesteps", type=int_list("--rate-timesteps", MAX_TIMESTEPS),
                   default=list(d.rate_timesteps),
                   help="further T values for (a), rate coding")
    a.add_argument("--seeds", type=int_list("--seeds", MAX_SEED, minimum=0),
                   default=list(d.seeds),
                   help="training seeds (dropout masks, batch order, rate-coded input)")
    a.add_argument("--variants", default=d.variants, help="which of a, b, c, d to run")
    a.add_argument("--snn-epochs", type=positive_int("--snn-epochs", MAX_EPOCHS), default=d.epochs)
    a.add_argument("--train-subset", type=positive_int("--train-subset", MAX_SAMPLES), default=d.train_subset,
                   metavar="N", help="training images per epoch")
    a.add_argument("--snn-lr", type=positive_float("--snn-lr"), default=d.lr)
    a.add_argument("--neuron-lr", type=positive_float("--neuron-lr"), default=d.neuron_lr,
                   help="learning rate of the leaks and thresholds")
    a.add_argument("--amsgrad", action="store_true", default=d.amsgrad,
                   help="Adam's AMSGrad variant")
    a.add_argument("--spike-penalties", type=float_list("--spike-penalties", zero=True),
                   default=list(d.penalties), metavar="W,...",
                   help="spike penalties at which (b)-(d) are trained (more than 0: the "
                   "accuracy-energy front)")
    a.add_argument("--batch-size", type=positive_int("--batch-size", MAX_BATCH), default=d.batch_size)
    a.add_argument("--scales", type=float_list("--scales"), default=list(d.scales),
                   help="threshold scales from which each T's is chosen on validation")
    a.add_argument("--percentile", type=float_in("--percentile", 1, 100), default=d.percentile)
    a.add_argument("--calib-size", type=positive_int("--calib-size", MAX_SAMPLES), default=d.calib_size)
    a.add_argument("--calib-timesteps", type=positive_int("--calib-timesteps", MAX_TIMESTEPS),
                   default=d.calib_timesteps)
    a.add_argument("--resume", action="store_true", help="skip the finished cells in --out")
    return {"energy": cmd_energy, "sweep": cmd_sweep, "ablation": cmd_ablation}


def _refuse_earlier(folder: Path, metrics_key: str, files: tuple[str, ...],
                    overwrite: bool, command: str) -> None:
    """An analysis command adds its result to a run; an earlier result of the same kind is
    replaced only with --overwrite. Checked before any computation."""
    if overwrite:
        return
    found = [folder / f for f in files if (folder / f).exists()]
    mf = folder / "metrics.json"
    if mf.is_file() and metrics_key in _read_metrics(mf):
        found.insert(0, mf)
    if found:
        what = f"{found[0]}" + (f"'s {metrics_key}" if found[0].name == "metrics.json" else "")
        raise UserError(f"{what} holds an earlier {command} result; pass --overwrite to replace "
                        "it")


def _sweep_targets(root: Path) -> tuple[dict[str, Path], Path]:
    """The models `sweep` runs on ({label: path}) and the folder its results go to."""
    if root.is_dir() and (root / "snn").is_dir():
        targets = {("converted SNN" if name == "converted" else "DIET-SNN"): root / name
                   for name in ("converted", "snn") if (root / name / "model.safetensors").is_file()}
    else:
        targets = {"SNN": root}
    return targets, (root if root.is_dir() else root.parent)


def cmd_energy(args) -> dict:
    mf = metrics_file(args.model)
    # the run it adds to: locked, its metrics.json checked, before any computation
    with RunDir(mf.parent, "energy", update=True, outputs=(mf.name,)) if mf else nullcontext():
        if mf is not None:
            _refuse_earlier(mf.parent, "energy", (), args.overwrite, "energy")
        model = load_model(args.model)
        if not model.is_spiking:
            raise UserError(f"{args.model} is an ANN; energy compares an SNN with its ANN, give "
                            "the converted or trained SNN")
        args.quiet = args.quiet or args.json
        ctx = setup(args)
        check_fits(model, ctx, args.model)
        m = measure(model, ctx.data.test_x, ctx.data.test_y, device=ctx.device,
                    e_mac=args.e_mac, e_ac=args.e_ac)
        en = m["energy"]
        result = {"energy": {k: en[k] for k in ("ann_pj", "snn_pj", "ratio", "layers",
                                                 "e_mac_pj", "e_ac_pj", "flops")},
                  "accuracy": m["accuracy"], "timesteps": model.timesteps}
        if mf is not None:
            data = _read_metrics(mf)
            data["energy"] = result["energy"]
            write_json(mf, data)
    if args.json:
        print(dumps(result))
    else:
        print(f"SNN T={model.timesteps} accuracy {m['accuracy']:.4f}")
        print(format_energy_table(en))
    return result


def _read_metrics(mf: Path) -> dict:
    try:
        data = json.loads(mf.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{mf}: not readable JSON ({e}); fix or move it away") from None
    if not isinstance(data, dict):
        raise UserError(f"{mf}: not a JSON object; fix or move it away")
    return data


def cmd_sweep(args) -> dict:
    targets, out_dir = _sweep_targets(Path(args.run))
    outputs = ("metrics.json", "sweep.json", "sweep.png")
    # locked and every output checked before any computation; written all or none
    with RunDir(out_dir, "sweep", update=True, outputs=outputs):
        _refuse_earlier(out_dir, "sweep", outputs[1:], args.overwrite, "sweep")
        mf = out_dir / "metrics.json"
        data = _read_metrics(mf) if mf.is_file() else None
        ctx = setup(args)
        result = {}
        for name, path in targets.items():
            model = check_fits(load_model(path), ctx, str(path))
            if not model.is_spiking:
                raise UserError(f"{path} is an ANN; sweep needs an SNN")
            ctx.log(f"{name}:")
            result[name] = sweep(model, args.timesteps, ctx.data.test_x, ctx.data.test_y,
                                 device=ctx.device, log=ctx.log)
        with transaction():
            if data is not None:
                data["sweep"] = result
                write_json(mf, data)
            else:
                write_json(out_dir / "sweep.json", result)
            ann_acc = (data or {}).get("ann", {}).get("test_accuracy")
            plotted = plot_if_possible(plot_sweep, result, ann_acc, out_dir / "sweep.png",
                                       "Accuracy against T", log=ctx.log)
    if plotted:
        ctx.log(f"wrote {out_dir / 'sweep.png'}")
    return result


def ablation_config(args) -> AblationConfig:
    """The AblationConfig of the options (a UserError for a bad combination)."""
    return AblationConfig(
        timesteps=args.timesteps, rate_timesteps=args.rate_timesteps, seeds=args.seeds,
        variants=args.variants, epochs=args.snn_epochs, train_subset=args.train_subset,
        lr=args.snn_lr, neuron_lr=args.neuron_lr, amsgrad=args.amsgrad,
        batch_size=args.batch_size, scales=args.scales, percentile=args.percentile,
        calib_size=args.calib_size, calib_timesteps=args.calib_timesteps,
        penalties=args.spike_penalties)


def cmd_ablation(args) -> dict:
    cfg = ablation_config(args)
    with open_out(args, (args.ann,), ablation_outputs(cfg)) as run:
        ctx = setup(args)
        ablation = Ablation(load_checked(args.ann, ctx), ctx.data, cfg, args.out, ctx.device,
                            ctx.log, ctx.progress, args.seed)
        run.start(run_config(args))
        # RunDir has refused a non-empty --out without --resume/--overwrite, and now holds
        # its own config.json: the grid continues whatever cells the folder has
        return ablation.run_grid()
