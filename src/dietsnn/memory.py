"""How much memory a command will need, estimated before it allocates, so that a value that
would exhaust memory (timesteps, calibration timesteps, batch size) is refused up front with the
estimate instead of growing until the machine swaps or the process is killed.

The estimate comes from the architecture alone: the ANN is built on PyTorch's `meta` device (no
memory, no initialisation), given zeroed CPU weights and run on one image to count the elements
every layer outputs per image (once per architecture and process; for VGG16 on 224x224 images
it takes half a gigabyte for a moment): their
sum `S` (what training keeps for backward, per image and timestep) and the largest `M`. Then

- training: `batch x T x S` float32 activations, plus the parameters four times (weights,
  gradients and two Adam moments);
- evaluation (no gradients): `batch x T x M` float32, three times (a layer's input, its output
  and a temporary), plus the parameters;
- threshold calibration: the spike trains of two consecutive layers, `images x T x M` bits
  each, plus the currents kept between a layer's two passes (up to `conversion.currents.CACHE_BYTES`),
  a constant current and its membrane and three time chunks (counted here, on the high side,
  as `images x M` float32 each: calibration runs over sub-batches of images); rate-coded input
  adds the encoded images (`images x T x C x H x W`, float32 and int8).

For `vgg_small` on 28x28 images the training estimate (64 x 5 images: 210 MB) is close to the
measured peak of an ANN on the same T x B images (187 MB, docs/BENCHMARKS.md), above the
spiking engine's own (123 MB); the refusal only fires when the estimate exceeds the memory
available now (`available_bytes`), so an estimate on the high side never refuses a run that
fits with room to spare.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch

from .errors import UserError
from .functional import engine

FLOAT = 4  # bytes of a float32
MODES = ("train", "eval", "calibrate")


@functools.lru_cache(maxsize=64)
def _elements(config_json: str) -> tuple[int, int, int]:
    from .models import build_ann

    cfg = json.loads(config_json)
    with torch.device("meta"):  # no memory, no initialisation, no RNG drawn
        model = build_ann(**cfg)
    params = sum(p.numel() for p in model.parameters())
    # one image through zeroed weights on the CPU: exact shapes, without the seconds that
    # importing the meta kernels of every op would take
    model = model.to_empty(device="cpu")
    for t in (*model.parameters(), *model.buffers()):
        t.detach().zero_()
    outs: list[int] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o.numel()))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), engine.scope("eager"):
            model.eval()(torch.zeros(1, cfg["in_channels"], cfg["image_size"], cfg["image_size"]))
    finally:
        for h in hooks:
            h.remove()
    return sum(outs), max(outs, default=0), params


def activation_elements(config: dict) -> tuple[int, int, int]:
    """(sum over layers, largest layer) of the elements each layer outputs for one image, and the
    number of parameters, of the architecture in `config` (a model's `config`: arch,
    num_classes, in_channels, image_size, dropout)."""
    keys = ("arch", "num_classes", "in_channels", "image_size", "dropout")
    return _elements(json.dumps({k: config[k] for k in keys if k in config}, sort_keys=True))


def estimate_bytes(config: dict, batch: int, timesteps: int = 1, mode: str = "train",
                   encoding: str = "direct", cache_bytes: int = 0, chunk_bytes: int = 0) -> int:
    """Bytes that `mode` ("train", "eval" or "calibrate") needs for `batch` images over
    `timesteps` steps on the architecture in `config` (see the module docstring); calibration
    adds up to `cache_bytes` of kept currents and three time chunks of `chunk_bytes`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    S, M, P = activation_elements(config)
    images = batch * timesteps
    if mode == "train":
        return images * S * FLOAT + 4 * P * FLOAT
    if mode == "eval":
        return 3 * images * M * FLOAT + P * FLOAT
    step = batch * M * FLOAT
    need = (2 * (images * M + 7) // 8 + min(cache_bytes, images * M * FLOAT) + 2 * step
            + 3 * max(chunk_bytes, step))
    if encoding == "rate":
        pixels = config["in_channels"] * config["image_size"] ** 2
        need += images * pixels * (FLOAT + 1)
    return need + P * FLOAT


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), if there is one."""
    try:
        base = Path("/sys/fs/cgroup")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((base / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory free for new tensors on `device` now: the GPU's free memory for CUDA, otherwise
    the system's available memory (MemAvailable), lowered by a cgroup limit; None if unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    if dev.type != "cpu":
        return None
    known = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(known) if known else None


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def check_memory(config: dict | None, batch: int, timesteps: int = 1, mode: str = "train",
                 device: str | torch.device = "cpu", encoding: str = "direct",
                 hint: str = "lower the timesteps or the batch size", **sizes: int) -> None:
    """Refuse, with a UserError naming the estimate and the memory available, a computation
    that `estimate_bytes` says would not fit on `device`. Does nothing when the architecture in
    `config` is unknown or the available memory cannot be read."""
    from .models import ARCHS

    if not isinstance(config, dict) or config.get("arch") not in ARCHS:
        return  # a custom architecture: unknown to the estimate
    avail = available_bytes(device)
    if avail is None:
        return
    need = estimate_bytes(config, batch, timesteps, mode, encoding, **sizes)
    if need <= avail:
        return
    what = {"train": "training", "eval": "evaluation", "calibrate": "threshold calibration"}[mode]
    size = f"{config['in_channels']}x{config['image_size']}x{config['image_size']}"
    raise UserError(f"{what} of {config['arch']} on {size} images with {batch} images x "
                    f"{timesteps} timesteps needs about {format_bytes(need)} of memory, but "
                    f"{format_bytes(avail)} is available on {torch.device(device).type}; "
                    f"{hint}")
