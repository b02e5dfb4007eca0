"""Multi-process data-parallel training (torchrun + DistributedDataParallel), see docs/DISTRIBUTED.md.

Every rank runs the same program. Under `torchrun` (WORLD_SIZE > 1) `setup` joins the process
group (gloo on CPU, nccl on CUDA) and gives each rank its own GPU. Rank 0 alone writes files
(`is_writer`); `files.atomic_write` waits at a barrier before and after each write, so no rank
reads a file before it is complete and no rank checks a folder while rank 0 is writing into it.
Everything here is a no-op in a single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .environment import env_int
from .errors import UserError


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_writer() -> bool:
    """Only rank 0 writes checkpoints, metrics, logs and reports."""
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite `t` in place with rank `src`'s value."""
    if is_initialized():
        dist.broadcast(t, src)
    return t


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum each number over ranks (float64: exact for counts)."""
    if not is_initialized():
        return list(values)
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    dist.all_reduce(t)
    return t.tolist()


TORCHRUN_VARS = ("RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets beside WORLD_SIZE


def launch_environment() -> tuple[int, int]:
    """(WORLD_SIZE, LOCAL_RANK) from the environment, checked: every torchrun variable that is
    set must be well formed, and WORLD_SIZE > 1 needs the others that torchrun sets. A UserError
    names the variable otherwise."""
    world_size = env_int("WORLD_SIZE", 1, 1)
    local = env_int("LOCAL_RANK", 0, 0)
    env_int("LOCAL_WORLD_SIZE", 1, 1)
    rank_ = env_int("RANK", 0, 0)
    port = env_int("MASTER_PORT", 29500, 1)
    if port > 65535:
        raise UserError(f"environment variable MASTER_PORT={port} is not a port (1-65535)")
    if world_size > 1:
        missing = [v for v in TORCHRUN_VARS if not os.environ.get(v, "").strip()]
        if missing:
            raise UserError(f"WORLD_SIZE={world_size} is set but {', '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not: start several processes "
                            "with torchrun (docs/DISTRIBUTED.md), or unset WORLD_SIZE for one")
        if rank_ >= world_size:
            raise UserError(f"environment variable RANK={rank_} must be < WORLD_SIZE={world_size}")
    return world_size, local


def setup(device: str = "cpu") -> str:
    """Join the process group when started by torchrun with WORLD_SIZE > 1 and return the device
    this rank uses ("cuda" becomes "cuda:<LOCAL_RANK>"). Without torchrun: returns `device`.
    Malformed launch variables are a UserError (`launch_environment`)."""
    world_size, local = launch_environment()
    if world_size <= 1 or is_initialized():
        return device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if torch.device(device).index is None:
            device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group("nccl" if cuda else "gloo")
    return device


def setup_args(args) -> None:
    """CLI hook: under torchrun join the group, pick this rank's device, silence ranks > 0."""
    if hasattr(args, "device"):
        args.device = setup(args.device)
    if rank() > 0:
        args.quiet = True


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """DistributedDataParallel around `model` in a process group, else `model` itself. Build it
    after the optimiser has frozen parameters (leak, threshold): DDP syncs only trainable ones.
    Leaks and thresholds are parameters, so their gradients are averaged like the weights'."""
    if not is_initialized():
        return model
    dev = torch.device(device)
    ids = None
    if dev.type == "cuda":
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """This rank's part of a global batch: contiguous, sizes differing by at most one."""
    if not is_initialized():
        return x, y
    r, n = rank(), world()
    return x.tensor_split(n)[r], y.tensor_split(n)[r]
