"""Training and evaluation loops, shared by the ANN and the SNN (BPTT through `lif`).

Data are in-memory tensors (`data.Batches`) or a dataset object with a `batches(batch_size,
shuffle, augment, seed)` method yielding this rank's part of each global batch (ImageNet folders,
`dietsnn.imagenet`). Under torchrun (`dietsnn.distributed`) the model trains in
DistributedDataParallel: each rank takes a disjoint shard of every global batch of the same
seeded permutation, the loss is weighted so that the averaged gradient is the global batch's
mean, and metrics are summed over ranks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import distributed, files, logs, runtime
from .analysis.energy import SpikeEnergy
from .config import DIVERGED_LOSS_FACTOR, OPTIMIZERS, SCHEDULES, TrainConfig
from .data import Batches, Splits, augmentation
from .errors import TrainingDiverged, UserError
from .evaluation import autocast as _autocast
from .evaluation import eval_batches, evaluate, resolve_precision  # noqa: F401  (this module's API)
from .layers import constrain_, lif_layers
from .memory import check_memory
from .models import Network

RANK_SEED = 1_000_003  # rank r > 0 seeds its dropout RNG with seed + r * RANK_SEED


def _train_batches(data: Splits, cfg: TrainConfig):
    if isinstance(data.train_x, Tensor):
        info = augmentation(data.info, cfg.crop_padding, cfg.flip)
        return Batches(data.train_x, data.train_y, cfg.batch_size, shuffle=True, info=info,
                       augment=cfg.augment, seed=cfg.seed)
    if cfg.crop_padding is not None or cfg.flip is not None:
        raise UserError(f"{data.info.name}: --crop-padding and --flip apply to in-memory "
                        "datasets only; this one augments as its loader defines")
    return data.train_x.batches(cfg.batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded by `seed` (weight init, dropout masks,
    rate-coded input); the caller's RNG state is restored afterwards, so library functions
    never reseed the caller's RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weights with weight decay; leaks and thresholds in their own group without it, at
    `cfg.neuron_lr` (Adam moves a scalar by about lr per step: at the weights' small lr the
    per-layer leak and threshold barely move, so they get a larger lr of their own)."""
    neuron, weights = [], []
    for name, p in model.named_parameters():
        if name.endswith((".leak", ".threshold")):
            train = cfg.train_leak if name.endswith(".leak") else cfg.train_threshold
            p.requires_grad_(train)
            if train:
                neuron.append(p)
        else:
            weights.append(p)
    groups = [{"params": weights, "weight_decay": cfg.weight_decay}]
    if neuron:
        groups.append({"params": neuron, "weight_decay": 0.0,
                       "lr": cfg.lr if cfg.neuron_lr is None else cfg.neuron_lr})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, amsgrad=cfg.amsgrad)
    raise UserError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * f) for f in (0.5, 0.75)], 0.1)
    if cfg.schedule == "none":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise UserError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def neuron_summary(model: nn.Module) -> list[dict]:
    return [{"name": n, "leak": m.leak.item(), "threshold": m.threshold.item()}
            for n, m in lif_layers(model)]


def _last_good(out: Path) -> str:
    path = out / ckpt.MODEL_FILE
    if not path.is_file():
        return "no checkpoint was kept (no epoch finished)"
    try:
        extra = json.loads(ckpt.read_model_file(path)[1].get("extra", "{}"))
    except (UserError, ValueError):
        extra = {}
    val = extra.get("val_accuracy")
    what = f"epoch {extra.get('epoch', '?')}" + (f", validation accuracy {val:.4f}"
                                                 if isinstance(val, float) else "")
    return f"the last good checkpoint is {path} ({what})"


def _diverged(why: str, step: int, model: nn.Module, out: Path) -> TrainingDiverged:
    th = ", ".join(f"{d['name']}={d['threshold']:.4g}" for d in neuron_summary(model))
    return TrainingDiverged(f"{why} at step {step}; training stopped"
                            + (f" (thresholds: {th})" if th else "")
                            + f"; {_last_good(out)}. Lower --lr or raise --scale")


def _check_finite(loss: Tensor, step: int, model: nn.Module, out: Path) -> None:
    if not torch.isfinite(loss):
        raise _diverged(f"loss became {loss.item()}", step, model, out)


def _check_parameters(model: nn.Module, step: int, out: Path) -> None:
    params = [p for p in model.parameters() if p.is_floating_point()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        raise _diverged(f"parameters became non-finite ({', '.join(bad[:4])})", step, model, out)


def fit(model: Network, data: Splits, cfg: TrainConfig, out: str | Path, resume: bool = False,
        progress: bool = True, log: Callable[[str], None] = logs.info, desc: str = "train",
        device: str | torch.device = "cpu") -> dict:
    """Train `model`, choosing the best epoch on the validation split (without one, `val_size`
    0, the last epoch is kept). Writes into `out`: `model.safetensors` (best on validation),
    `state.pt` (for resume), `history.json`. Returns the history, `best_val_accuracy` (None
    without validation) and `best_state`, the kept epoch's state dict (None when that epoch was
    trained before a resume: then it is only in `model.safetensors`).
    Runs inside `runtime.use_engine()` (the engine in effect, freed memory kept for reuse) with
    torch's RNG seeded from `cfg.seed` (the caller's RNG state is restored afterwards)."""
    with (runtime.use_engine(), seeded(cfg.seed + RANK_SEED * distributed.rank()),
          _energy_term(model, cfg) as energy):
        return _fit(model, data, cfg, out, resume, progress, log, desc, device, energy)


def _energy_term(model: Network, cfg: TrainConfig):
    """The differentiable compute energy of each training forward (`SpikeEnergy`), where the
    loss asks for it (`cfg.spike_penalty`); else a context that observes nothing."""
    if cfg.spike_penalty and lif_layers(model):
        return SpikeEnergy(model)
    return nullcontext()


def _fit(model: Network, data: Splits, cfg: TrainConfig, out: str | Path, resume: bool,
         progress: bool, log, desc: str, device: str | torch.device,
         energy: SpikeEnergy | None) -> dict:
    check_memory(getattr(model, "config", None), max(1, min(cfg.batch_size, len(data.train_y))),
                 getattr(model, "timesteps", None) or 1, "train", device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(cfg.precision, device)
    rank, world = distributed.rank(), distributed.world()
    batches = _train_batches(data, cfg)
    presharded = getattr(batches, "sharded", False)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, cfg.epochs * len(batches))
    history: list[dict] = []
    start, best, step = 0, -1.0, 0
    best_state = None  # the kept epoch's tensors, when trained in this call
    state_path = out / ckpt.STATE_FILE
    if resume and state_path.is_file():
        st = ckpt.load_state(state_path)
        model.load_state_dict(ckpt.model_state(model, st["model"], str(state_path)))
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        batches.generator.set_state(st["batch_rng"])
        torch.set_rng_state(st["torch_rng"])
        if rank:  # the saved RNG is rank 0's; other ranks draw their own dropout masks
            torch.manual_seed(cfg.seed + RANK_SEED * rank + st["epoch"])
        model.to(device)
        start, best, step, history = st["epoch"], st["best"], st["step"], st["history"]
        log(f"resuming {desc} at epoch {start + 1}/{cfg.epochs} from {state_path}")
    if start == 0 and getattr(model, "is_spiking", True) and not (out / ckpt.MODEL_FILE).exists():
        # a converted SNN is a good model before training; an untrained ANN is not kept
        ckpt.save_model(model, out / ckpt.MODEL_FILE, {"epoch": 0})
    validating = len(data.val_y) > 0
    if not validating:
        log(f"{desc}: no validation split (--val-size 0): every epoch is saved and the model "
            "kept is the last epoch's")
    net = distributed.wrap(model, device)
    model.train()
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        seen, correct, loss_sum, cost_sum = 0, 0, 0.0, 0.0
        bar = tqdm(batches, desc=f"{desc} {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for xb, yb in bar:
            if world > 1 and not presharded:
                if len(yb) < world:  # a last batch too small to give every rank a sample
                    continue
                xb, yb = distributed.shard(xb, yb)
            xb, yb = xb.to(device), yb.to(device)
            if energy is not None:
                energy.reset()  # count this step's forward alone
            with _autocast(precision, device):
                logits = net(xb)
            if world == 1:
                loss = F.cross_entropy(logits.float(), yb)
                _check_finite(loss, step, model, out)
                n_b, loss_b = len(yb), loss.item() * len(yb)
                correct_b = (logits.argmax(1) == yb).sum().item()
            else:  # DDP averages gradients over ranks: weight each by its share of the batch
                local = F.cross_entropy(logits.float(), yb, reduction="sum")
                n_b, loss_b, correct_b = distributed.all_reduce_sum(
                    [len(yb), local.item(), (logits.argmax(1) == yb).sum().item()])
                _check_finite(torch.tensor(loss_b / n_b), step, model, out)
                loss = local * (world / n_b)
            if energy is not None:
                cost = energy.cost()
                loss = loss + cfg.spike_penalty * cost
                cost_sum += cost.item() * n_b
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            constrain_(model)
            _check_parameters(model, step, out)
            step += 1
            seen += n_b
            loss_sum += loss_b
            correct += correct_b
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        with energy.paused() if energy is not None else nullcontext():
            val = evaluate(model, data.val_x, data.val_y, max(256, cfg.batch_size),
                           precision, progress, desc="val",
                           device=device) if validating else {"loss": None, "accuracy": None}
        chance = math.log(max(2, logits.shape[-1]))
        if loss_sum / seen > DIVERGED_LOSS_FACTOR * chance:
            raise _diverged(f"training diverged: mean loss {loss_sum / seen:.4g} in epoch "
                            f"{epoch + 1}, over {DIVERGED_LOSS_FACTOR:g}x chance "
                            f"({chance:.3g})", step, model, out)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": val["loss"], "val_accuracy": val["accuracy"],
               "lr": opt.param_groups[0]["lr"], "precision": precision,
               "seconds": time.time() - t0}
        if energy is not None:
            rec["train_energy"] = cost_sum / seen  # SNN/ANN compute energy, per image
        if lif_layers(model):
            rec["neurons"] = neuron_summary(model)
        history.append(rec)
        log(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {rec['train_loss']:.4f} "
            f"train {rec['train_accuracy']:.4f} "
            + (f"val {rec['val_accuracy']:.4f} " if validating else "")
            + f"({rec['seconds']:.0f}s)")
        with files.transaction():  # the epoch's model, state and history: all or none
            if not validating:
                ckpt.save_model(model, out / ckpt.MODEL_FILE, {"epoch": epoch + 1})
            elif val["accuracy"] > best:
                best = val["accuracy"]
                ckpt.save_model(model, out / ckpt.MODEL_FILE,
                                {"epoch": epoch + 1, "val_accuracy": best})
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            ckpt.save_state(state_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "batch_rng": batches.generator.get_state(),
                "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "best": best,
                "step": step, "history": history, "config": asdict(cfg)})
            files.write_json(out / "history.json", history)
    if not validating and start < cfg.epochs:
        best_state = model.state_dict()
    return {"history": history, "best_val_accuracy": best if validating else None,
            "best_state": best_state}
