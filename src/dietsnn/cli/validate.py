"""The checks every command runs after parsing and before any work (no data loaded, nothing
written): environment variables, the device, option combinations, and memory bounds
(`dietsnn.memory`) for the batch sizes and timesteps asked for. `main(..., validate_only=True)`
stops after them."""

from __future__ import annotations

import argparse

import torch

from .. import distributed, environment
from ..checkpoint import read_config
from ..config import EVAL_BATCH
from ..conversion import check_calibration_memory
from ..data import augmentation, dataset_info, validation_size
from ..errors import UserError
from ..memory import check_memory
from .analysis import ablation_config
from .options import val_size

PREDICT_BATCH = 64  # predict_images' default batch


def _device(args: argparse.Namespace) -> str:
    dev = getattr(args, "device", "cpu")
    try:
        kind = torch.device(dev).type
    except (RuntimeError, ValueError):
        raise UserError(f"--device {dev!r} is not a device; use cpu or cuda[:N]") from None
    if kind not in ("cpu", "cuda"):
        raise UserError(f"--device {dev!r}: dietsnn runs on cpu or cuda[:N]")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {dev}: no CUDA device here; use --device cpu")
    return dev


def _config_from_options(args: argparse.Namespace) -> dict:
    info = dataset_info(args.dataset)
    return {"arch": args.arch, "num_classes": info.num_classes, "in_channels": info.in_channels,
            "image_size": info.image_size, "dropout": args.dropout}


def _checkpoint(args: argparse.Namespace) -> tuple[dict, dict]:
    for attr in ("ann", "snn", "model", "run"):
        if isinstance(getattr(args, attr, None), str):
            return read_config(getattr(args, attr))
    raise AssertionError(f"{args.command}: no checkpoint argument")  # pragma: no cover


def _cap(n: int, limit: int | None) -> int:
    return min(n, limit) if limit else n


def check_memory_bounds(args: argparse.Namespace, device: str) -> None:
    """Refuse batch sizes and timesteps that would not fit in memory (`dietsnn.memory`). The
    batch counts as at most --limit-train (--limit-test for evaluation) images."""
    cmd = args.command
    train_cap, test_cap = getattr(args, "limit_train", None), getattr(args, "limit_test", None)

    def train(cfg: dict, batch: int, T: int, hint: str) -> None:
        check_memory(cfg, _cap(batch, train_cap), T, "train", device, hint=hint)

    def evaluate(cfg: dict, batch: int, T: int, hint: str) -> None:
        check_memory(cfg, _cap(batch, test_cap), T, "eval", device, hint=hint)

    def calibrate(cfg: dict, encoding: str) -> None:
        check_calibration_memory(cfg, _cap(args.calib_size, train_cap), args.calib_timesteps,
                                 encoding, device)

    if cmd in ("run", "train-ann"):
        cfg = _config_from_options(args)
        if cmd == "train-ann":
            train(cfg, args.batch_size, 1, "lower --batch-size")
            return
        train(cfg, args.ann_batch_size, 1, "lower --ann-batch-size")
        calibrate(cfg, args.encoding)
        train(cfg, args.snn_batch_size, args.timesteps, "lower --timesteps or --snn-batch-size")
        evaluate(cfg, EVAL_BATCH, max([args.timesteps, *args.sweep_timesteps]),
                 "lower --timesteps or --sweep-timesteps")
    elif cmd == "convert" and getattr(args, "ann", None) is None:
        return  # --from-module: a custom model, unknown to the estimate
    elif cmd in ("convert", "train-snn", "evaluate", "energy", "sweep", "predict", "ablation"):
        cfg, spiking = _checkpoint(args)
        T = getattr(args, "timesteps", None)
        if cmd == "convert":
            calibrate(cfg, args.encoding)
            evaluate(cfg, EVAL_BATCH, T, "lower --timesteps")
        elif cmd == "train-snn":
            train(cfg, args.batch_size, T or spiking.get("timesteps", 1),
                  "lower --timesteps or --batch-size")
        elif cmd == "evaluate":
            evaluate(cfg, args.batch_size, T or spiking.get("timesteps", 1),
                     "lower --timesteps or --batch-size")
        elif cmd == "sweep":
            evaluate(cfg, EVAL_BATCH, max(T), "lower the largest --timesteps")
        elif cmd == "ablation":
            calibrate(cfg, "rate" if "a" in args.variants else "direct")
            train(cfg, args.batch_size, max([*args.timesteps, *args.rate_timesteps]),
                  "lower --timesteps, --rate-timesteps or --batch-size")
        else:  # energy, predict: the checkpoint's own T
            batch = min(PREDICT_BATCH, len(args.images)) if cmd == "predict" else EVAL_BATCH
            check_memory(cfg, _cap(batch, test_cap), spiking.get("timesteps", 1), "eval",
                         device, hint="lower the checkpoint's timesteps")


def validate(args: argparse.Namespace) -> None:
    """Every check that needs neither data nor training, before a command starts."""
    environment.check_screened()
    distributed.launch_environment()
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        raise UserError("--resume and --overwrite exclude each other; choose one")
    if hasattr(args, "val_size") and val_size(args) and getattr(args, "limit_train", None):
        validation_size(args.limit_train, args.val_size, limited=True)
    if args.command == "ablation":
        ablation_config(args)
        if args.val_size == 0:
            raise UserError("the ablation chooses each T's threshold scale on the validation "
                            "split; give --val-size >= 1")
    if getattr(args, "crop_padding", None) is not None:  # refused if not smaller than the image
        augmentation(dataset_info(args.dataset), args.crop_padding)
    if getattr(args, "scale", None) == "auto" and val_size(args) == 0:
        raise UserError("--scale auto chooses the scale on the validation split; give "
                        "--val-size >= 1 or a number")
    device = _device(args) if hasattr(args, "device") else "cpu"
    check_memory_bounds(args, device)
