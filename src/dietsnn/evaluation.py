"""Accuracy and loss of a model on (x, y): `evaluate`, used by training (the validation of each
epoch), the command line and threshold calibration's `scale="auto"`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from . import distributed
from .data import Batches
from .errors import UserError
from .memory import check_memory
from .models import Network


def eval_batches(x, y: Tensor, batch_size: int):
    """This rank's batches of (x, y): a contiguous shard of tensors, or the dataset's own."""
    if isinstance(x, Tensor):
        x, y = distributed.shard(x, y)
        return Batches(x, y, batch_size)
    return x.batches(batch_size)


def autocast(precision: str, device: str | torch.device = "cpu"):
    kind = torch.device(device).type
    if precision == "bf16":
        return torch.autocast(kind, dtype=torch.bfloat16)
    if precision != "fp32":
        raise UserError(f"unknown precision {precision!r}; choose fp32 or bf16")
    return torch.autocast(kind, enabled=False)


@torch.no_grad()
def evaluate(model: Network, x, y: Tensor, batch_size: int = 256,
             precision: str = "fp32", progress: bool = False, desc: str = "eval",
             device: str | torch.device = "cpu") -> dict:
    """Accuracy (fraction) and mean cross-entropy of `model` on (x, y) (x: a tensor or a folder
    dataset; in a process group each rank evaluates a shard and the sums are all-reduced)."""
    check_memory(getattr(model, "config", None), max(1, min(batch_size, len(y))),
                 getattr(model, "timesteps", None) or 1, "eval", device,
                 hint="lower the timesteps or the evaluation batch size")
    was = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    bar = tqdm(eval_batches(x, y, batch_size), desc=desc, leave=False, disable=not progress)
    for xb, yb in bar:
        xb, yb = xb.to(device), yb.to(device)
        with autocast(precision, device):
            out = model(xb)
        out = out.float()
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
        n += len(yb)
    model.train(was)
    correct, loss_sum, n = distributed.all_reduce_sum([correct, loss_sum, n])
    n = max(1, n)
    return {"accuracy": correct / n, "loss": loss_sum / n}
