"""Classify image files with a trained ANN or SNN: class, softmax confidence, spike count."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .analysis.spikes import SpikeCounter
from .data import DatasetInfo, normalize
from .errors import UserError
from .files import open_regular
from .memory import check_memory
from .models import Network


def load_image(path: str | os.PathLike, channels: int, size: int) -> Tensor:
    """Read a PNG/JPEG/... file as uint8 [channels, size, size] for a model that takes
    `channels` x `size` x `size` images.

    The conversions, all of them: colour to grey (ITU-R 601 luma) for a 1-channel model, grey to
    RGB (the grey value in every channel) for a 3-channel one, a palette or an alpha channel
    dropped; 16-bit grey ("I;16") scaled to [0, 255] from 65535 (32-bit integer grey from its
    own maximum if above that); then, if the image has another size, a bilinear resize to
    `size` x `size` (the aspect ratio is not kept). Floating-point images are refused."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError("reading images needs Pillow: pip install pillow") from None
    if channels not in (1, 3):
        raise UserError(f"the model takes {channels}-channel images; only 1 or 3 are supported")
    try:
        with open_regular(path, "image file") as f, Image.open(f) as im:  # a FIFO or device: refused
            a = _to_uint8(im, channels)
        if a.shape[:2] != (size, size):
            mode = "L" if a.ndim == 2 else "RGB"
            a = np.asarray(Image.fromarray(a, mode).resize((size, size),
                                                           Image.Resampling.BILINEAR))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    t = torch.from_numpy(np.array(a, dtype=np.uint8))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def _to_uint8(im, channels: int) -> np.ndarray:
    """[H, W] (1 channel) or [H, W, 3] uint8 of a PIL image (see `load_image`)."""
    if im.mode.startswith("I"):  # 16-bit ("I;16", "I;16B", ...) or 32-bit integer grey
        a = np.asarray(im).astype(np.float64)
        top = max(65535.0, float(a.max(initial=0)))
        a = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        return a if channels == 1 else np.repeat(a[:, :, None], 3, axis=2)
    if im.mode == "F":
        raise ValueError("floating-point images are not supported; save it as 8 or 16 bit")
    return np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)


def _class_names(info: DatasetInfo, n: int) -> list[str]:
    return list(info.classes) if len(info.classes) == n else [str(i) for i in range(n)]


@torch.no_grad()
def predict_images(model: Network, paths: Sequence[str | os.PathLike], dataset_info: DatasetInfo,
                   batch_size: int = 64) -> list[dict]:
    """Per image: {"path", "class_index", "class", "confidence", "spikes"}; `spikes` is the total
    number of spikes over all LIF layers and timesteps for that image (0 for an ANN)."""
    c = model.config
    channels, size, classes = c["in_channels"], c["image_size"], c["num_classes"]
    if dataset_info.in_channels != channels:
        raise UserError(f"the model takes {channels}-channel images but {dataset_info.name} has "
                        f"{dataset_info.in_channels}; pass the dataset the model was trained on")
    check_memory(getattr(model, "config", None), max(1, min(batch_size, len(paths))),
                 model.timesteps or 1, "eval", next(model.parameters()).device)
    names = _class_names(dataset_info, classes)
    images = [load_image(p, channels, size) for p in paths]  # read all first: fail before compute
    device = next(model.parameters()).device
    model.eval()
    results: list[dict] = []
    with SpikeCounter(model) as counter:
        for i in range(0, len(images), batch_size):
            chunk = list(paths[i : i + batch_size])
            x = normalize(torch.stack(images[i : i + batch_size]), dataset_info).to(device)
            probs = torch.softmax(model(x).float(), dim=1)
            spikes = counter.take_per_image(len(chunk))
            conf, idx = probs.max(1)
            for j, p in enumerate(chunk):
                k = int(idx[j])
                results.append({"path": str(p), "class_index": k, "class": names[k],
                                "confidence": float(conf[j]), "spikes": int(round(float(spikes[j])))})
    return results
