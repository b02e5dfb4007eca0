"""`dietsnn` command line: train-ann, convert, train-snn, evaluate and run (all three steps)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .errors import UserError

DEFAULTS = {
    "ann_epochs": 10, "snn_epochs": 1, "ann_lr": 0.05, "snn_lr": 1e-4, "snn_neuron_lr": None,
    "ann_batch": 128, "snn_batch": 64,
}


def _positive_int(name):
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v
    return parse


def _float_in(name, lo, hi, lo_open=True, hi_open=False):
    def parse(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}") from None
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
        if not ok:
            a, b = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"{name} must be in {a}{lo}, {hi}{b}, got {v}")
        return v
    return parse


def _common(p: argparse.ArgumentParser, out_default: str | None = "runs/dietsnn") -> None:
    from .data import DATASETS

    g = p.add_argument_group("data and run")
    g.add_argument("--dataset", default="fashion-mnist", choices=sorted(DATASETS))
    g.add_argument("--data-dir", default=None, help="folder with the dataset files")
    g.add_argument("--limit-train", type=_positive_int("--limit-train"), default=None,
                   metavar="N", help="use the first N training samples (smoke runs)")
    g.add_argument("--limit-test", type=_positive_int("--limit-test"), default=None, metavar="N",
                   help="use the first N test samples")
    g.add_argument("--val-size", type=int, default=5000, help="validation samples carved "
                   "from the training set (checkpoints are chosen on them)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    g.add_argument("--threads", type=_positive_int("--threads"), default=None,
                   help="CPU threads for torch (default: all cores)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    if out_default is not None:
        g.add_argument("--out", default=out_default, help="run directory to write")


def _snn_opts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("spiking network")
    g.add_argument("--timesteps", "-T", type=_positive_int("--timesteps"), default=5)
    g.add_argument("--encoding", choices=["direct", "rate"], default="direct")
    g.add_argument("--percentile", type=_float_in("--percentile", 0, 100), default=99.7)
    g.add_argument("--scale", type=_float_in("--scale", 0, float("inf")), default=0.6,
                   help="threshold scaling factor after calibration (0.6: best at T=5 for "
                        "vgg_small on Fashion-MNIST validation; the paper's deep VGG16 used 0.2-0.3)")
    g.add_argument("--leak", type=_float_in("--leak", 0, 1), default=1.0,
                   help="initial membrane leak of every layer (1 = IF, as converted)")
    g.add_argument("--calib-size", type=_positive_int("--calib-size"), default=512)
    g.add_argument("--calib-timesteps", type=_positive_int("--calib-timesteps"), default=100)
    g.add_argument("--surrogate", default="linear",
                   choices=["linear", "exponential", "sigmoid", "atan"])
    g.add_argument("--gamma", type=_float_in("--gamma", 0, float("inf")), default=0.3,
                   help="surrogate damping factor")


def _train_opts(p, epochs, lr, batch, optimizer, wd, prefix="", snn=False) -> None:
    g = p.add_argument_group(f"{prefix or 'training'}".strip())
    pre = f"--{prefix}-" if prefix else "--"
    dest = f"{prefix}_" if prefix else ""
    g.add_argument(f"{pre}epochs", dest=f"{dest}epochs", type=_positive_int(f"{pre}epochs"),
                   default=epochs)
    g.add_argument(f"{pre}lr", dest=f"{dest}lr", type=_float_in(f"{pre}lr", 0, float("inf")),
                   default=lr)
    g.add_argument(f"{pre}batch-size", dest=f"{dest}batch_size",
                   type=_positive_int(f"{pre}batch-size"), default=batch)
    g.add_argument(f"{pre}optimizer", dest=f"{dest}optimizer", choices=["sgd", "adam"],
                   default=optimizer)
    g.add_argument(f"{pre}weight-decay", dest=f"{dest}weight_decay", type=float, default=wd)
    g.add_argument(f"{pre}schedule", dest=f"{dest}schedule", choices=["cosine", "step", "none"],
                   default="cosine")
    if snn:
        g.add_argument(f"{pre}neuron-lr", dest=f"{dest}neuron_lr",
                       type=_float_in(f"{pre}neuron-lr", 0, float("inf")),
                       default=DEFAULTS["snn_neuron_lr"],
                       help="learning rate of the leaks and thresholds (default: the weights' lr)")
        g.add_argument("--amsgrad", action="store_true",
                       help="Adam's AMSGrad variant (the authors' SNN optimiser)")
        g.add_argument("--no-train-leak", dest="train_leak", action="store_false",
                       help="keep leaks fixed")
        g.add_argument("--no-train-threshold", dest="train_threshold", action="store_false",
                       help="keep thresholds fixed")
        g.add_argument("--no-compile", dest="compile", action="store_false",
                       help="run the LIF time loops eagerly instead of with torch.compile")
        g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")


class _Parser(argparse.ArgumentParser):
    """Option mistakes as one line (no usage dump), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dietsnn",
        description="DIET-SNN: train an ANN, convert it to a spiking network with calibrated "
                    "thresholds, then train the SNN's weights, leaks and thresholds with BPTT.")
    p.add_argument("--version", action="version", version=f"dietsnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from .models import ARCHS

    r = sub.add_parser("run", help="all three steps: train-ann, convert, train-snn")
    _common(r)
    r.add_argument("--arch", choices=ARCHS, default="vgg_small")
    r.add_argument("--dropout", type=_float_in("--dropout", 0, 1, False, True), default=0.1,
                   help="dropout after every ReLU/LIF (paper: 0.2 for CIFAR/ImageNet)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out")
    _snn_opts(r)
    _train_opts(r, DEFAULTS["ann_epochs"], DEFAULTS["ann_lr"], DEFAULTS["ann_batch"], "sgd",
                5e-4, "ann")
    _train_opts(r, DEFAULTS["snn_epochs"], DEFAULTS["snn_lr"], DEFAULTS["snn_batch"], "adam",
                0.0, "snn", snn=True)
    r.add_argument("--no-augment", dest="augment", action="store_false")
    r.add_argument("--sweep-timesteps", default="1,2,3,4,5,6,8,10",
                   help="T values for the latency sweep in the report ('' to skip)")
    r.add_argument("--sweep-limit", type=_positive_int("--sweep-limit"), default=2000,
                   metavar="N", help="test images used by the sweep")

    a = sub.add_parser("train-ann", help="step 1: train the ANN")
    _common(a, "runs/ann")
    a.add_argument("--arch", choices=ARCHS, default="vgg_small")
    a.add_argument("--dropout", type=_float_in("--dropout", 0, 1, False, True), default=0.1,
                   help="dropout after every ReLU/LIF (paper: 0.2 for CIFAR/ImageNet)")
    a.add_argument("--resume", action="store_true")
    a.add_argument("--no-augment", dest="augment", action="store_false")
    _train_opts(a, DEFAULTS["ann_epochs"], DEFAULTS["ann_lr"], DEFAULTS["ann_batch"], "sgd", 5e-4)

    c = sub.add_parser("convert", help="step 2: ANN -> SNN with calibrated thresholds")
    c.add_argument("ann", help="ANN run directory or model.safetensors")
    _common(c, "runs/converted")
    _snn_opts(c)

    s = sub.add_parser("train-snn", help="step 3: train the SNN (weights, leaks, thresholds)")
    s.add_argument("snn", help="converted SNN run directory or model.safetensors")
    _common(s, "runs/snn")
    s.add_argument("--timesteps", "-T", type=_positive_int("--timesteps"), default=None)
    s.add_argument("--resume", action="store_true")
    s.add_argument("--no-augment", dest="augment", action="store_false")
    _train_opts(s, DEFAULTS["snn_epochs"], DEFAULTS["snn_lr"], DEFAULTS["snn_batch"], "adam",
                0.0, snn=True)

    e = sub.add_parser("evaluate", help="test accuracy (and per-layer spikes) of a checkpoint")
    e.add_argument("model", help="run directory or model.safetensors")
    _common(e, None)
    e.add_argument("--timesteps", "-T", type=_positive_int("--timesteps"), default=None)
    e.add_argument("--batch-size", type=_positive_int("--batch-size"), default=256)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    import importlib

    for mod in EXTENSIONS:
        try:
            ext = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:
                raise
            continue
        COMMANDS.update(ext.add_commands(sub, _common))
    return p


def _setup(args):
    import torch

    from . import data
    from .pipeline import Context

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device here; use --device cpu")
    log = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    log(f"loading {args.dataset}")
    splits = data.load(args.dataset, args.data_dir, args.val_size, args.seed, args.limit_train,
                       args.limit_test)
    return Context(splits, args.device, progress=not args.quiet and sys.stderr.isatty(), log=log)


def _train_cfg(args, prefix: str = "", snn: bool = False):
    from .training import TrainConfig

    g = lambda k: getattr(args, f"{prefix}{k}")  # noqa: E731
    return TrainConfig(
        epochs=g("epochs"), lr=g("lr"), optimizer=g("optimizer"), weight_decay=g("weight_decay"),
        schedule=g("schedule"), batch_size=g("batch_size"), augment=args.augment, seed=args.seed,
        train_leak=getattr(args, "train_leak", True) if snn else True,
        train_threshold=getattr(args, "train_threshold", True) if snn else True,
        precision=getattr(args, "precision", "fp32") if snn else "fp32",
        neuron_lr=g("neuron_lr") if snn else None,
        amsgrad=getattr(args, "amsgrad", False) if snn else False)


def _snn_options(args):
    from .pipeline import SNNOptions

    return SNNOptions(args.timesteps, args.encoding, args.percentile, args.scale, args.calib_size,
                      args.calib_timesteps, args.gamma, args.surrogate, args.leak)


def _backend(args) -> None:
    from .functional import neuron

    neuron.set_backend("compile" if getattr(args, "compile", False) and _has_compiler()
                       else "eager")


def _has_compiler() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("cc", "gcc", "clang", "g++"))


def _write_config(out: Path, args) -> None:
    from .checkpoint import write_json

    out.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in vars(args).items() if k != "func"}
    write_json(out / "config.json", cfg)


def cmd_run(args) -> dict:
    from . import pipeline
    from .checkpoint import write_json

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"{out} is not empty; pass --resume to continue it or choose another --out")
    _write_config(out, args)
    ctx = _setup(args)
    _backend(args)
    t0 = time.time()
    metrics: dict = {}
    ann_cfg = _train_cfg(args, "ann_")
    metrics["ann"] = _step_cached(out / "ann", args.resume, "ann", lambda: pipeline.train_ann(
        args.arch, ann_cfg, ctx, out / "ann", args.resume, args.dropout))
    opts = _snn_options(args)
    metrics["converted"] = _step_cached(out / "converted", args.resume, "converted",
                                        lambda: pipeline.convert(out / "ann" / "model.safetensors",
                                                                 opts, ctx, out / "converted",
                                                                 args.seed))
    snn_cfg = _train_cfg(args, "snn_", snn=True)
    metrics["snn"] = pipeline.train_snn(out / "converted" / "model.safetensors", snn_cfg, ctx,
                                        out / "snn", args.resume)
    _analyse(out, metrics, ctx, args)
    metrics["seconds"] = time.time() - t0
    write_json(out / "metrics.json", metrics)
    from .distributed import is_writer
    from .report import write_report

    if is_writer():
        write_report(out, metrics)
    ctx.log(f"ANN {metrics['ann']['test_accuracy']:.4f} | converted SNN T={args.timesteps} "
            f"{metrics['converted']['test_accuracy']:.4f} | DIET-SNN T={args.timesteps} "
            f"{metrics['snn']['test_accuracy']:.4f} | {metrics['seconds'] / 60:.1f} min -> {out}")
    return metrics


def _analyse(out: Path, metrics: dict, ctx, args) -> None:
    """Energy of the trained SNN on the test set, latency sweep of converted and trained SNN."""
    from . import analysis
    from .checkpoint import load_model
    from .functional.energy import E_AC_PJ, E_MAC_PJ

    snn = load_model(out / "snn" / "model.safetensors").to(ctx.device)
    rates = {d["name"]: d["spike_rate"] for d in metrics["snn"]["layers"]}
    metrics["energy"] = analysis.energy(snn, rates, None, E_MAC_PJ, E_AC_PJ)
    ctx.log(analysis.format_energy_table(metrics["energy"]))
    ts = [int(v) for v in args.sweep_timesteps.split(",") if v.strip()]
    if not ts:
        return
    n = args.sweep_limit
    x, y = ctx.data.test_x[:n], ctx.data.test_y[:n]
    metrics["sweep"] = {}
    metrics["sweep_images"] = len(y)
    converted = load_model(out / "converted" / "model.safetensors").to(ctx.device)
    for name, model in (("converted SNN", converted), ("DIET-SNN", snn)):
        ctx.log(f"latency sweep, {name} ({len(y)} test images):")
        metrics["sweep"][name] = analysis.sweep(model, ts, x, y, device=ctx.device, log=ctx.log)


def _step_cached(out: Path, resume: bool, key: str, fn):
    """On --resume, a step whose metrics.json exists is done: reuse it."""
    path = out / "metrics.json"
    if resume and path.is_file():
        return json.loads(path.read_text())[key]
    return fn()


def cmd_train_ann(args) -> dict:
    from . import pipeline

    out = Path(args.out)
    _write_config(out, args)
    ctx = _setup(args)
    return pipeline.train_ann(args.arch, _train_cfg(args), ctx, out, args.resume, args.dropout)


def cmd_convert(args) -> dict:
    from . import pipeline
    from .checkpoint import resolve_model_path

    src = resolve_model_path(args.ann)
    out = Path(args.out)
    if out.resolve() == src.parent.resolve():
        raise UserError("--out must differ from the ANN's folder: the ANN checkpoint is never "
                        "modified")
    _write_config(out, args)
    ctx = _setup(args)
    return pipeline.convert(src, _snn_options(args), ctx, out, args.seed)


def cmd_train_snn(args) -> dict:
    from . import pipeline
    from .checkpoint import resolve_model_path

    src = resolve_model_path(args.snn)
    out = Path(args.out)
    _write_config(out, args)
    ctx = _setup(args)
    _backend(args)
    return pipeline.train_snn(src, _train_cfg(args, snn=True), ctx, out, args.resume,
                              args.timesteps)


def cmd_evaluate(args) -> dict:
    from . import checkpoint, pipeline

    model = checkpoint.load_model(args.model)
    if args.timesteps:
        if not model.is_spiking:
            raise UserError("--timesteps applies to SNN checkpoints; this one is an ANN")
        model.timesteps = args.timesteps
    args.quiet = args.quiet or args.json
    ctx = _setup(args)
    ctx.eval_batch = args.batch_size
    pipeline.check_fits(model, ctx, args.model)
    if model.is_spiking:
        layers, acc = pipeline.layer_report(model, ctx)
        out = {"test_accuracy": acc, "spiking": True, "timesteps": model.timesteps,
               "layers": layers}
    else:
        res = pipeline.evaluate_test(model, ctx)
        out = {"test_accuracy": res["accuracy"], "test_loss": res["loss"], "spiking": False}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        kind = f"SNN T={model.timesteps}" if model.is_spiking else "ANN"
        print(f"{kind} test accuracy {out['test_accuracy']:.4f} on {len(ctx.data.test_y)} images")
        for d in out.get("layers", []):
            print(f"  {d['name']:<16} leak {d['leak']:.3f}  threshold {d['threshold']:.3f}  "
                  f"spikes/neuron {d['spike_rate']:.3f}")
    return out


COMMANDS = {"run": cmd_run, "train-ann": cmd_train_ann, "convert": cmd_convert,
            "train-snn": cmd_train_snn, "evaluate": cmd_evaluate}
# modules with add_commands(sub)
EXTENSIONS = ("dietsnn.analysis_cli", "dietsnn.deploy_cli", "dietsnn.presets")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from . import distributed, presets

    args = presets.apply(parser, argv, args)  # --preset: defaults that explicit options override
    distributed.setup_args(args)  # under torchrun: process group, this rank's device
    try:
        COMMANDS[args.command](args)
    except UserError as e:
        print(f"dietsnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dietsnn {args.command}: interrupted; rerun with --resume to continue",
              file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
