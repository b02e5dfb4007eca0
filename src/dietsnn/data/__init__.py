"""Datasets: a catalog of known sets and their sources (`catalog`), readers of the IDX, CIFAR
and ImageNet-folder formats, and the splits and mini-batches training reads (`splits`).

Fashion-MNIST and MNIST are read from IDX `.gz` files, looked for in `--data-dir`, then
`$DIETSNN_DATA`, then `/usr/share/datasets/<name>` (Debian), then the user cache; otherwise
downloaded and verified.
"""

from __future__ import annotations

import torch

from .catalog import DATASETS, DatasetInfo, cache_dir, dataset_info, search_dirs
from .cifar import load_cifar
from .idx import load_idx_dataset, read_idx
from .imagenet import load_imagenet
from .splits import (
    Batches,
    BatchSource,
    Splits,
    augment,
    augmentation,
    draw,
    normalize,
    validation_size,
)


def load(name: str, data_dir=None, val_size: int = 5000, seed: int = 0,
         limit_train: int | None = None, limit_test: int | None = None,
         drawn: int = 0, train: bool = True) -> Splits:
    """Load `name`, carve a seeded validation split off the training set (`validation_size`;
    `val_size` 0: none), normalise to float32. `drawn` > 0 keeps of the training split only the
    first `drawn` images of its seeded draw (`Splits.calibration_images`, all that conversion
    reads; the rest is never converted to float); `train` False keeps none of it (commands that
    read only the test split)."""
    info = dataset_info(name)
    if name == "imagenet":  # too large for memory: images stay on disk (dietsnn.imagenet)
        return load_imagenet(data_dir, val_size, seed, limit_train, limit_test, info)
    if name.startswith("cifar"):
        tx, ty, sx, sy = load_cifar(info, data_dir)
    else:
        tx, ty, sx, sy = load_idx_dataset(info, data_dir)
    if limit_train:
        tx, ty = tx[:limit_train], ty[:limit_train]
    if limit_test:
        sx, sy = sx[:limit_test], sy[:limit_test]
    n_val = validation_size(len(tx), val_size, bool(limit_train))
    perm = torch.randperm(len(tx), generator=torch.Generator().manual_seed(seed))
    vi, ti = perm[:n_val], perm[n_val:]
    if drawn:
        ti = ti[draw(len(ti), drawn, seed)]
    if not train:
        ti = ti[:0]
    norm = lambda x: normalize(x, info)  # noqa: E731
    return Splits(info, norm(tx[ti]), ty[ti], norm(tx[vi]), ty[vi], norm(sx), sy, drawn, seed)


__all__ = ["DATASETS", "BatchSource", "Batches", "DatasetInfo", "Splits", "augment", "augmentation",
           "cache_dir", "dataset_info", "draw", "load", "load_cifar", "load_idx_dataset",
           "load_imagenet", "normalize", "read_idx", "search_dirs", "validation_size"]
