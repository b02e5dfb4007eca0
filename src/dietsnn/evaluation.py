"""Accuracy and loss of a model on (x, y): `evaluate`, used by training (the validation of each
epoch), the command line and threshold calibration's `scale="auto"`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed, runtime
from .data import Batches
from .errors import UserError
from .memory import check_memory
from .models import Network

SNN_IMAGE_STEPS = 128  # an SNN without gradients runs at most this many images x steps at once


def forward(model: Network, x: Tensor) -> Tensor:
    """`model(x)`. Without gradients, an SNN with direct input encoding runs over images `[N,
    ...]` in even pieces of at most `SNN_IMAGE_STEPS` images x timesteps: the same outputs
    (every image is computed on its own) in a fraction of the memory of the whole batch's
    spike trains. (Rate encoding draws for the whole batch at once and is not split.)"""
    T = getattr(model, "timesteps", None)
    if (not T or torch.is_grad_enabled() or getattr(model, "encoding", None) == "rate"
            or x.dim() != (getattr(model, "input_dims", None) or x.dim())
            or len(x) * T <= SNN_IMAGE_STEPS):
        return model(x)
    size = math.ceil(len(x) / math.ceil(len(x) * T / SNN_IMAGE_STEPS))
    return torch.cat([model(part) for part in x.split(size)])


def eval_batches(x, y: Tensor, batch_size: int):
    """This rank's batches of (x, y): a contiguous shard of tensors, or the dataset's own."""
    if isinstance(x, Tensor):
        x, y = distributed.shard(x, y)
        return Batches(x, y, batch_size)
    return x.batches(batch_size)


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether `device` is a CPU that computes bf16 natively (AVX512-BF16 or AMX)."""
    if torch.device(device).type != "cpu":
        return False
    caps = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """"auto" -> "bf16" on a CPU with native bf16 (`native_bf16`), else "fp32"; "fp32" and
    "bf16" stay as they are. Under bf16 autocast the convolutions and linear layers compute in
    bf16, an SNN's neurons integrate in float32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    return precision


def autocast(precision: str, device: str | torch.device = "cpu"):
    """bf16 autocast on `device` for "bf16", none for "fp32" ("auto": `resolve_precision`)."""
    kind = torch.device(device).type
    precision = resolve_precision(precision, device)
    if precision == "bf16":
        return torch.autocast(kind, dtype=torch.bfloat16)
    return torch.autocast(kind, enabled=False)


@torch.no_grad()
def evaluate(model: Network, x, y: Tensor, batch_size: int = 256,
             precision: str = "fp32", progress: bool = False, desc: str = "eval",
             device: str | torch.device = "cpu") -> dict:
    """Accuracy (fraction) and mean cross-entropy of `model` on (x, y) (x: a tensor or a folder
    dataset; in a process group each rank evaluates a shard and the sums are all-reduced).
    Runs inside `runtime.use_engine()`."""
    check_memory(getattr(model, "config", None), max(1, min(batch_size, len(y))),
                 getattr(model, "timesteps", None) or 1, "eval", device,
                 hint="lower the timesteps or the evaluation batch size")
    was = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    bar = tqdm(eval_batches(x, y, batch_size), desc=desc, leave=False, disable=not progress)
    with runtime.use_engine():
        for xb, yb in bar:
            xb, yb = xb.to(device), yb.to(device)
            with autocast(precision, device):
                out = forward(model, xb).float()
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            n += len(yb)
    model.train(was)
    correct, loss_sum, n = distributed.all_reduce_sum([correct, loss_sum, n])
    n = max(1, n)
    return {"accuracy": correct / n, "loss": loss_sum / n}
