"""`dietsnn run` (all three steps) and the steps one by one: train-ann, convert, train-snn,
evaluate."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import pipeline
from ..checkpoint import load_model, resolve_model_path
from ..config import (
    ANN_TRAIN,
    ARCH,
    DROPOUT,
    EVAL_BATCH,
    MAX_BATCH,
    MAX_CROP_PADDING,
    MAX_SAMPLES,
    MAX_TIMESTEPS,
    MAXPOOL,
    MAXPOOL_MODES,
    SNN_TRAIN,
    SWEEP_LIMIT,
    SWEEP_TIMESTEPS,
)
from ..errors import UserError
from ..files import dumps
from ..models import ARCHS
from .options import (
    check_resumable,
    common,
    conversion_config,
    float_in,
    int_in,
    int_list,
    open_out,
    positive_int,
    run_config,
    setup,
    snn_opts,
    train_config,
    train_opts,
)


def _model_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=ARCHS, default=ARCH)
    p.add_argument("--dropout", type=float_in("--dropout", 0, 1, False, True), default=DROPOUT,
                   help="dropout after every ReLU/LIF (paper: 0.2 for CIFAR/ImageNet)")


def _augment_opts(p: argparse.ArgumentParser) -> None:
    """The training augmentation (ANN and SNN phases alike): the dataset's (data/catalog.py:
    crop 4 px + flip on CIFAR, none on the 28x28 sets), or crop and flip given here."""
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without augmentation")
    p.add_argument("--crop-padding", type=int_in("--crop-padding", 0, MAX_CROP_PADDING),
                   default=ANN_TRAIN.crop_padding, metavar="PX",
                   help="random crop after zero padding of PX pixels, 0: no crop (default: the "
                        "dataset's: 4 on CIFAR, 0 on the 28x28 sets)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=ANN_TRAIN.flip,
                   help="random horizontal flip (default: the dataset's: on for CIFAR and "
                        "ImageNet, off for the 28x28 sets)")


def add_commands(sub) -> dict:
    r = sub.add_parser("run", help="all three steps: train-ann, convert, train-snn")
    common(r)
    _model_opts(r)
    r.add_argument("--resume", action="store_true", help="continue the run in --out")
    snn_opts(r)
    train_opts(r, ANN_TRAIN, "ann")
    train_opts(r, SNN_TRAIN, "snn", snn=True)
    _augment_opts(r)
    r.add_argument("--sweep-timesteps", type=int_list("--sweep-timesteps", MAX_TIMESTEPS,
                                                      allow_empty=True),
                   default=list(SWEEP_TIMESTEPS), help="T values for the latency sweep in the "
                   "report ('' to skip)")
    r.add_argument("--sweep-limit", type=positive_int("--sweep-limit", MAX_SAMPLES),
                   default=SWEEP_LIMIT,
                   metavar="N", help="test images used by the sweep")

    a = sub.add_parser("train-ann", help="step 1: train the ANN")
    common(a, "runs/ann")
    _model_opts(a)
    a.add_argument("--resume", action="store_true", help="continue the run in --out")
    _augment_opts(a)
    train_opts(a, ANN_TRAIN)

    c = sub.add_parser("convert", help="step 2: ANN -> SNN with calibrated thresholds")
    c.add_argument("ann", nargs="?", help="ANN run directory or model.safetensors")
    c.add_argument("--from-module", metavar="MODULE:NAME", default=None,
                   help="convert your own trained PyTorch model instead: NAME in the importable "
                        "MODULE is the nn.Module or a function returning it with its weights "
                        "loaded (docs/CONVERSION.md); default: none, the ANN checkpoint is "
                        "converted")
    common(c, "runs/converted")
    snn_opts(c)
    c.add_argument("--maxpool", choices=MAXPOOL_MODES, default=MAXPOOL,
                   help="what max pooling of a --from-module model becomes")

    s = sub.add_parser("train-snn", help="step 3: train the SNN (weights, leaks, thresholds)")
    s.add_argument("snn", help="converted SNN run directory or model.safetensors")
    common(s, "runs/snn")
    s.add_argument("--timesteps", "-T", type=positive_int("--timesteps", MAX_TIMESTEPS),
                   default=None, help="timesteps T to train at (default: the converted checkpoint's)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out")
    _augment_opts(s)
    train_opts(s, SNN_TRAIN, snn=True)

    e = sub.add_parser("evaluate", help="test accuracy (and per-layer spikes) of a checkpoint")
    e.add_argument("model", help="run directory or model.safetensors")
    common(e, None)
    e.add_argument("--timesteps", "-T", type=positive_int("--timesteps", MAX_TIMESTEPS),
                   default=None, help="timesteps T to evaluate an SNN at (default: the checkpoint's)")
    e.add_argument("--batch-size", type=positive_int("--batch-size", MAX_BATCH), default=EVAL_BATCH)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    return {"run": cmd_run, "train-ann": cmd_train_ann, "convert": cmd_convert,
            "train-snn": cmd_train_snn, "evaluate": cmd_evaluate}


def cmd_run(args) -> dict:
    with open_out(args) as run:
        out = Path(args.out)
        if args.resume:
            check_resumable(out / "ann", done_if="metrics.json")  # a finished step is reused
            check_resumable(out / "snn")
        ctx = setup(args)
        run.start(run_config(args))
        return pipeline.run(out, ctx, args.arch, train_config(args, "ann_"),
                            conversion_config(args), train_config(args, "snn_", snn=True),
                            dropout=args.dropout, seed=args.seed, resume=args.resume,
                            sweep_timesteps=args.sweep_timesteps, sweep_limit=args.sweep_limit)


def cmd_train_ann(args) -> dict:
    out = Path(args.out)
    with open_out(args) as run:
        if args.resume:
            check_resumable(out)
        ctx = setup(args)
        cfg = train_config(args)
        run.start(run_config(args))
        return pipeline.train_ann(args.arch, cfg, ctx, out, args.resume, args.dropout)


def cmd_convert(args) -> dict:
    if (args.ann is None) == (args.from_module is None):
        raise UserError("convert takes an ANN checkpoint or --from-module MODULE:NAME (one of "
                        "the two)")
    if args.from_module:
        model = pipeline.import_model(args.from_module)
        with open_out(args) as run:
            ctx = setup(args)
            opts = conversion_config(args)
            run.start(run_config(args))
            return pipeline.convert_module(model, args.from_module, opts, ctx, Path(args.out),
                                           args.seed, args.maxpool)
    src = resolve_model_path(args.ann)
    with open_out(args, (src,)) as run:
        ctx = setup(args)
        ann = pipeline.check_convertible(src, ctx)
        opts = conversion_config(args)
        run.start(run_config(args))
        return pipeline.convert(ann, opts, ctx, Path(args.out), args.seed)


def cmd_train_snn(args) -> dict:
    src = resolve_model_path(args.snn)
    out = Path(args.out)
    with open_out(args, (src,)) as run:
        if args.resume:
            check_resumable(out)
        ctx = setup(args)
        snn = pipeline.check_trainable(src, ctx)
        cfg = train_config(args, snn=True)
        run.start(run_config(args))
        return pipeline.train_snn(snn, cfg, ctx, out, args.resume, args.timesteps)


def cmd_evaluate(args) -> dict:
    model = load_model(args.model)
    if args.timesteps:
        if not model.is_spiking:
            raise UserError("--timesteps applies to SNN checkpoints; this one is an ANN")
        model.timesteps = args.timesteps
    args.quiet = args.quiet or args.json
    ctx = setup(args)
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
        print(dumps(out))
    else:
        kind = f"SNN T={model.timesteps}" if model.is_spiking else "ANN"
        print(f"{kind} test accuracy {out['test_accuracy']:.4f} on {len(ctx.data.test_y)} images")
        for d in out.get("layers", []):
            print(f"  {d['name']:<16} leak {d['leak']:.3f}  threshold {d['threshold']:.3f}  "
                  f"spikes/neuron {d['spike_rate']:.3f}")
    return out
