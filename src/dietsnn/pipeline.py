"""The three DIET-SNN steps as functions over run directories, and `run`, all three with the
analysis and the report; the command line only parses options and calls these."""

from __future__ import annotations

import copy
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from . import analysis, conversion, distributed, files, logs, memory
from . import checkpoint as ckpt
from .analysis.report import write_report
from .analysis.spikes import spike_rates
from .config import (
    DROPOUT,
    EVAL_BATCH,
    MAXPOOL,
    SWEEP_LIMIT,
    SWEEP_TIMESTEPS,
    ConversionConfig,
    TrainConfig,
)
from .data import Splits
from .errors import UserError
from .functional.energy import E_AC_PJ, E_MAC_PJ
from .layers import lif_layers
from .models import Network, build_ann
from .training import evaluate, fit, neuron_summary, seeded


@dataclass
class Context:
    data: Splits
    device: str = "cpu"
    progress: bool = True
    log: Callable[[str], None] = logs.info
    eval_batch: int = EVAL_BATCH


def check_fits(model: Network, ctx: Context, source: str) -> Network:
    """A model must match the dataset's image shape and classes; otherwise a UserError."""
    c, info = model.config, ctx.data.info
    if "input_shape" in c:  # a converted custom model: the input shape it was calibrated on
        want_shape = [info.in_channels, info.image_size, info.image_size]
        if c["input_shape"] != want_shape:
            raise UserError(f"{source} takes inputs of shape {c['input_shape']}, but "
                            f"{info.name} has {want_shape}: pass the --dataset it was trained on")
        return model.to(ctx.device)
    want = (info.in_channels, info.image_size, info.num_classes)
    got = (c.get("in_channels"), c.get("image_size"), c.get("num_classes"))
    if got != want:
        raise UserError(
            f"{source} expects {got[0]}x{got[1]}x{got[1]} images and {got[2]} classes, but "
            f"{info.name} has {want[0]}x{want[1]}x{want[1]} and {want[2]}: pass the --dataset it "
            "was trained on")
    return model.to(ctx.device)


def load_checked(path, ctx: Context) -> Network:
    return check_fits(ckpt.load_model(path), ctx, str(path))


def evaluate_test(model: Network, ctx: Context, desc: str = "test") -> dict:
    """Loss and accuracy of `model` on the run's test set."""
    return evaluate(model, ctx.data.test_x, ctx.data.test_y, ctx.eval_batch,
                    progress=ctx.progress, desc=desc, device=ctx.device)


def layer_report(model: Network, ctx: Context,
                 initial: list[dict] | None = None) -> tuple[list[dict], float]:
    """One pass over the test set: per LIF layer name, leak, threshold, spike rate (and initial
    values), and the test accuracy."""
    rows, accuracy = spike_rates(model, ctx.data.test_x, ctx.eval_batch, ctx.device,
                                 ctx.data.test_y)
    rates = {r["name"]: r["spike_rate"] for r in rows}
    layers = neuron_summary(model)
    for i, d in enumerate(layers):
        d["spike_rate"] = rates.get(d["name"], 0.0)
        if initial:
            d["leak_init"] = initial[i]["leak"]
            d["threshold_init"] = initial[i]["threshold"]
    return layers, accuracy


def train_ann(arch: str, cfg: TrainConfig, ctx: Context, out: Path, resume: bool = False,
              dropout: float = DROPOUT) -> dict:
    """Step 1: train the ANN into `out`; returns its metrics."""
    return _train_ann(arch, cfg, ctx, out, resume, dropout)[0]


def _train_ann(arch: str, cfg: TrainConfig, ctx: Context, out: Path, resume: bool,
               dropout: float) -> tuple[dict, Network]:
    info = ctx.data.info
    with seeded(cfg.seed):
        model = build_ann(arch, info.num_classes, info.in_channels, info.image_size, dropout)
    model.to(ctx.device)
    t0 = time.time()
    res = fit(model, ctx.data, cfg, out, resume, ctx.progress, ctx.log, "ann", ctx.device)
    best = _best(model, res, out, ctx)
    test = evaluate_test(best, ctx, "test")
    metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
               "val_accuracy": res["best_val_accuracy"], "epochs": cfg.epochs,
               "seconds": time.time() - t0}
    files.write_json(out / "metrics.json", {"ann": metrics})
    ctx.log(f"ANN test accuracy {metrics['test_accuracy']:.4f}")
    return metrics, best


def _best(model: Network, res: dict, out: Path, ctx: Context) -> Network:
    """The model of the epoch `fit` kept: its state from memory, or from `out` when that epoch
    was trained before a resume."""
    if res["best_state"] is None:
        return ckpt.load_model(out / ckpt.MODEL_FILE).to(ctx.device)
    model.load_state_dict(res["best_state"])
    return model.eval()


def check_convertible(ann_path: Path, ctx: Context) -> Network:
    """The ANN at `ann_path`, loaded and checked against the data; a UserError otherwise."""
    ann = load_checked(ann_path, ctx)
    if ann.is_spiking:
        raise UserError(f"{ann_path} is already an SNN; convert takes an ANN checkpoint")
    return ann


def check_trainable(snn_path: Path, ctx: Context) -> Network:
    """The SNN at `snn_path`, loaded and checked against the data; a UserError otherwise."""
    snn = load_checked(snn_path, ctx)
    if not snn.is_spiking:
        raise UserError(f"{snn_path} is an ANN; run `dietsnn convert` first")
    return snn


def import_model(spec: str) -> nn.Module:
    """The model named by `MODULE:NAME` (NAME may be dotted): an `nn.Module`, or a function
    or class called without arguments to make one (with its trained weights loaded)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UserError(f"--from-module takes MODULE:NAME (e.g. mypkg.models:trained_net), got "
                        f"{spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a module beside the command, as `python -m` does
    try:
        obj = importlib.import_module(mod_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise UserError(f"--from-module {spec}: {e}") from None
    model = obj if isinstance(obj, nn.Module) else obj() if callable(obj) else obj
    if not isinstance(model, nn.Module):
        raise UserError(f"--from-module {spec}: got {type(model).__name__}, not an nn.Module")
    return model


def convert_module(model: nn.Module, source: str, opts: ConversionConfig, ctx: Context,
                   out: Path, seed: int = 0, maxpool: str = MAXPOOL) -> dict:
    """A user's trained ANN -> calibrated SNN checkpoint in `out` (docs/CONVERSION.md)."""
    model = model.eval().to(ctx.device)
    x = ctx.data.test_x[:2].to(ctx.device)
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:  # noqa: BLE001 - any failure here means the data do not fit
        raise UserError(f"{source} does not take {ctx.data.info.name} images of shape "
                        f"{list(x.shape[1:])} ({type(e).__name__}: {e})") from None
    ann_acc = evaluate_test(model, ctx, "ANN")["accuracy"]
    ctx.log(f"ANN test accuracy {ann_acc:.4f}")
    snn = conversion.convert(model, opts.timesteps, opts.encoding, leak=opts.leak,
                           gamma=opts.gamma, surrogate=opts.surrogate, maxpool=maxpool)
    metrics = _calibrate_and_save(snn, opts, ctx, out, seed)
    metrics.update(source=source, ann_test_accuracy=ann_acc)
    files.write_json(out / "metrics.json", {"converted": metrics})
    return metrics


def convert(ann: Network | Path, opts: ConversionConfig, ctx: Context, out: Path,
            seed: int = 0) -> dict:
    """Step 2: the ANN (a model from `check_convertible`, or its checkpoint, only read) ->
    calibrated SNN checkpoint in `out`; returns its metrics."""
    return _convert(ann, opts, ctx, out, seed)[0]


def _convert(ann: Network | Path, opts: ConversionConfig, ctx: Context, out: Path,
             seed: int) -> tuple[dict, Network]:
    if not isinstance(ann, Network):
        ann = check_convertible(ann, ctx)
    snn = conversion.convert(ann, opts.timesteps, opts.encoding, leak=opts.leak, gamma=opts.gamma,
                           surrogate=opts.surrogate)
    metrics = _calibrate_and_save(snn, opts, ctx, out, seed)
    files.write_json(out / "metrics.json", {"converted": metrics})
    return metrics, snn


def _calibrate_and_save(snn: Network, opts: ConversionConfig, ctx: Context, out: Path,
                        seed: int) -> dict:
    snn = snn.to(ctx.device)
    t0 = time.time()
    images = ctx.data.calibration_images(opts.calib_size, seed).to(ctx.device)
    auto = opts.scale == "auto"
    if auto and len(ctx.data.val_y) == 0:
        raise UserError("--scale auto chooses the scale on the validation split; give "
                        "--val-size >= 1 or a number")
    with seeded(seed):
        conversion.calibrate_thresholds(snn, images, opts.percentile, 1.0 if auto else opts.scale,
                                      opts.calib_timesteps, progress=ctx.progress,
                                      units=opts.units)
    units = "scaled" if opts.units == "auto" else opts.units  # with a fixed scale
    scan = scans = None
    if auto:
        units, scale, scans = conversion.choose_units(snn, ctx.data.val_x, ctx.data.val_y,
                                                      device=ctx.device, units=opts.units)
        scan = scans[units]
        chosen = (f"scale {scale} (validation accuracy {scan[scale]:.4f}; scanned "
                  f"{', '.join(map(str, scan))})")
        if len(scans) > 1:
            chosen += f", {units} units (best: " + ", ".join(
                f"{u} {max(a.values()):.4f}" for u, a in scans.items()) + ")"
        ctx.log(chosen)
        if near_chance(scan, ctx.data.info.num_classes):
            logs.warning(f"the converted SNN is near chance at every scale scanned (best "
                         f"{scan[scale]:.1%}), so the scale chosen, {scale}, is noise; DIET "
                         "training from it may end lower than from a fixed --scale (batch-norm "
                         "networks: docs/RESULTS.md section 1.3)")
        opts = replace(opts, scale=scale)
    opts = replace(opts, units=units)
    seconds = time.time() - t0
    ctx.log(f"calibrated {len(lif_layers(snn))} thresholds in {seconds:.1f}s")
    logs.debug("thresholds: " + ", ".join(f"{name} {m.threshold.item():.4g}"
                                          for name, m in lif_layers(snn)))
    ckpt.save_model(snn, out / ckpt.MODEL_FILE, {"calibration": asdict(opts)})
    layers, accuracy = layer_report(snn, ctx)
    metrics = {"test_accuracy": accuracy, "timesteps": opts.timesteps,
               "encoding": opts.encoding, "calibration_seconds": seconds,
               "calibration": asdict(opts), "layers": layers}
    if scan is not None:
        metrics["scale_validation_accuracy"] = {str(s): a for s, a in scan.items()}
    if scans is not None and len(scans) > 1:
        metrics["units_validation_accuracy"] = {
            u: {str(s): a for s, a in accs.items()} for u, accs in scans.items()}
    ctx.log(f"converted SNN (T={opts.timesteps}) test accuracy {metrics['test_accuracy']:.4f}")
    return metrics


def near_chance(scan: dict[float, float], classes: int) -> bool:
    """Whether the best accuracy of a scale scan is below twice chance among `classes`."""
    return max(scan.values()) < 2.0 / classes


def train_snn(snn: Network | Path, cfg: TrainConfig, ctx: Context, out: Path,
              resume: bool = False, timesteps: int | None = None) -> dict:
    """Step 3: DIET-train the SNN (a model from `check_trainable`, trained in place, or its
    checkpoint) into `out`; returns its metrics."""
    return _train_snn(snn, cfg, ctx, out, resume, timesteps)[0]


def _train_snn(snn: Network | Path, cfg: TrainConfig, ctx: Context, out: Path, resume: bool,
               timesteps: int | None) -> tuple[dict, Network]:
    if not isinstance(snn, Network):
        snn = check_trainable(snn, ctx)
    if timesteps:
        snn.timesteps = timesteps
    snn.to(ctx.device)
    initial = neuron_summary(snn)
    t0 = time.time()
    res = fit(snn, ctx.data, cfg, out, resume, ctx.progress, ctx.log, "snn", ctx.device)
    best = _best(snn, res, out, ctx)
    layers, accuracy = layer_report(best, ctx, initial)
    metrics = {"test_accuracy": accuracy,
               "val_accuracy": res["best_val_accuracy"], "timesteps": best.timesteps,
               "encoding": best.encoding, "epochs": cfg.epochs, "seconds": time.time() - t0,
               "layers": layers}
    files.write_json(out / "metrics.json", {"snn": metrics})
    ctx.log(f"DIET-SNN (T={best.timesteps}) test accuracy {metrics['test_accuracy']:.4f}")
    for d in layers:
        ctx.log(f"  {d['name']:<16} leak {d['leak_init']:.3f} -> {d['leak']:.3f}   threshold "
                f"{d['threshold_init']:.3f} -> {d['threshold']:.3f}   spikes/neuron "
                f"{d['spike_rate']:.3f}")
    return metrics, best



def run(out: Path, ctx: Context, arch: str, ann_cfg: TrainConfig, opts: ConversionConfig,
        snn_cfg: TrainConfig, dropout: float = DROPOUT, seed: int = 0, resume: bool = False,
        sweep_timesteps: tuple[int, ...] | list[int] = SWEEP_TIMESTEPS,
        sweep_limit: int = SWEEP_LIMIT) -> dict:
    """`dietsnn run`: train the ANN, convert and calibrate, DIET-train the SNN, then the energy
    table, the latency sweep and the report, all in `out`. With `resume`, a step whose
    `metrics.json` exists is reused and an unfinished training continues."""
    t0 = time.time()
    metrics: dict = {"profile": {}}
    ann = converted = None  # the models pass from step to step in memory
    if _done(out / "ann", resume):
        metrics["ann"] = _metrics(out / "ann", "ann")
    else:
        metrics["ann"], ann = _train_ann(arch, ann_cfg, ctx, out / "ann", resume, dropout)
    _profile(metrics, "ann", t0)
    if _done(out / "converted", resume):
        metrics["converted"] = _metrics(out / "converted", "converted")
    else:
        metrics["converted"], converted = _convert(
            ann if ann is not None else out / "ann" / ckpt.MODEL_FILE, opts, ctx,
            out / "converted", seed)
    del ann
    _profile(metrics, "converted", t0)
    start = (copy.deepcopy(converted) if converted is not None  # the sweep needs it untrained
             else out / "converted" / ckpt.MODEL_FILE)
    metrics["snn"], snn = _train_snn(start, snn_cfg, ctx, out / "snn", resume, None)
    del start
    _profile(metrics, "snn", t0)
    if converted is None:
        converted = ckpt.load_model(out / "converted" / ckpt.MODEL_FILE).to(ctx.device)
    _analyse(metrics, ctx, snn, converted, sweep_timesteps, sweep_limit)
    _profile(metrics, "analysis", t0)
    metrics["seconds"] = time.time() - t0
    with files.transaction():  # metrics.json, report.md and the plots: all or none
        files.write_json(out / "metrics.json", metrics)
        if distributed.is_writer():
            write_report(out, metrics)
    T = metrics["converted"]["timesteps"]
    ctx.log(f"ANN {metrics['ann']['test_accuracy']:.4f} | converted SNN T={T} "
            f"{metrics['converted']['test_accuracy']:.4f} | DIET-SNN T={T} "
            f"{metrics['snn']['test_accuracy']:.4f} | {metrics['seconds'] / 60:.1f} min -> {out}")
    return metrics


def _profile(metrics: dict, step: str, t0: float) -> None:
    """Seconds of `step` (since the previous one ended) and the process's peak resident memory
    at its end (the peak so far: a step that raised it is the one where it was reached)."""
    prof = metrics["profile"]
    start = sum(p["seconds"] for p in prof.values())
    prof[step] = {"seconds": time.time() - t0 - start, "peak_rss_mb": memory.peak_rss_mb()}


def _analyse(metrics: dict, ctx: Context, snn: Network, converted: Network, sweep_timesteps,
             sweep_limit: int) -> None:
    """Energy of the trained SNN on the test set, latency sweep of converted and trained SNN."""
    rates = {d["name"]: d["spike_rate"] for d in metrics["snn"]["layers"]}
    metrics["energy"] = analysis.energy(snn, rates, None, E_MAC_PJ, E_AC_PJ)
    ctx.log(analysis.format_energy_table(metrics["energy"]))
    if not sweep_timesteps:
        return
    x, y = ctx.data.test_x[:sweep_limit], ctx.data.test_y[:sweep_limit]
    metrics["sweep"] = {}
    metrics["sweep_images"] = len(y)
    for name, model in (("converted SNN", converted), ("DIET-SNN", snn)):
        ctx.log(f"latency sweep, {name} ({len(y)} test images):")
        metrics["sweep"][name] = analysis.sweep(model, sweep_timesteps, x, y, device=ctx.device,
                                                log=ctx.log)


def _done(out: Path, resume: bool) -> bool:
    """On resume, a step whose metrics.json exists is done."""
    return resume and (out / "metrics.json").is_file()


def _metrics(out: Path, key: str) -> dict:
    return json.loads((out / "metrics.json").read_text())[key]
