"""In-memory splits, normalisation, augmentation and seeded mini-batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import UserError
from .catalog import DatasetInfo


@dataclass
class Splits:
    """Train, validation and test data: images as tensors `[N, C, H, W]` (normalised) or, for
    sets too large for memory, a `BatchSource`; labels as int64 tensors."""

    info: DatasetInfo
    train_x: Tensor | BatchSource
    train_y: Tensor
    val_x: Tensor | BatchSource
    val_y: Tensor
    test_x: Tensor | BatchSource
    test_y: Tensor
    # > 0: `train_x` holds only the first `drawn` images of `draw(train size, seed)` (a command
    # that reads no other training image: conversion), not the whole training split
    drawn: int = 0
    seed: int = 0

    def calibration_images(self, n: int, seed: int) -> Tensor:
        """The `n` training images of the seeded draw that threshold calibration reads."""
        if self.drawn:
            if n > self.drawn or seed != self.seed:
                raise ValueError(f"these splits hold {self.drawn} drawn training images (seed "
                                 f"{self.seed}); {n} asked with seed {seed}")
            return self.train_x[:n]
        return self.train_x[draw(len(self.train_x), n, seed)]


def draw(size: int, n: int, seed: int) -> Tensor:
    """Indices of `n` of `size` training images in a seeded random order."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]


@runtime_checkable
class BatchSource(Protocol):
    """What training and evaluation read from a dataset that is not an in-memory tensor (e.g.
    ImageNet folders): this rank's part of each seeded global batch, as (images, labels)."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                seed: int = 0) -> Iterable[tuple[Tensor, Tensor]]: ...


def validation_size(n: int, val_size: int, limited: bool = False) -> int:
    """How many of the `n` training images become the validation split. `val_size` 0: none (no
    validation; training keeps its last epoch). With `limited` (`--limit-train`, a smoke run) at
    most a fifth of them, and at least one. Otherwise `val_size` itself, which must leave at
    least one training image. A UserError explains a value that leaves no training images."""
    if val_size < 0:
        raise UserError(f"--val-size must be >= 0 (0: no validation), got {val_size}")
    if n < 1:
        raise UserError("the training set is empty; check the dataset files and --limit-train")
    if val_size == 0:
        return 0
    k = min(val_size, max(1, n // 5)) if limited else val_size
    if k >= n:
        fix = f"use at most {n - 1}, or 0 for no validation" if n > 1 else "use 0 (no validation)"
        raise UserError(f"--val-size {val_size} leaves no training images: the training set has "
                        f"{n}; {fix}")
    return k


def normalize(x: Tensor, info: DatasetInfo) -> Tensor:
    """uint8 [N,C,H,W] -> float32, standardised with the dataset's mean and std (ANN and SNN)."""
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    # in place on the one float copy: the same arithmetic, without two more full-size temporaries
    return x.float().div_(255.0).sub_(mean).div_(std)


def augmentation(info: DatasetInfo, crop_padding: int | None = None,
                 flip: bool | None = None) -> DatasetInfo:
    """`info` with its training augmentation replaced where `crop_padding` or `flip` is given
    (None: the dataset's own)."""
    if crop_padding is not None and not 0 <= crop_padding < info.image_size:
        raise UserError(f"--crop-padding must be in [0, {info.image_size - 1}] for "
                        f"{info.name}, got {crop_padding}")
    return replace(info, crop_padding=info.crop_padding if crop_padding is None else crop_padding,
                   flip=info.flip if flip is None else flip)


def augment(x: Tensor, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop after zero padding (in normalised space the pad is the background value) and
    random horizontal flip, per sample, as tensor ops."""
    B, C, H, W = x.shape
    if padding:
        bg = x.amin()
        xp = torch.nn.functional.pad(x, (padding,) * 4, value=float(bg))
        dy = torch.randint(0, 2 * padding + 1, (B,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (B,), generator=generator)
        rows = (torch.arange(H)[None] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(W)[None] + dx[:, None])[:, None, None, :]
        b = torch.arange(B)[:, None, None, None]
        c = torch.arange(C)[None, :, None, None]
        x = xp[b, c, rows, cols]
    if flip:
        m = torch.rand(B, generator=generator) < 0.5
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x


class Batches:
    """Mini-batches over in-memory tensors: a seeded shuffle per epoch, optional augmentation."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False,
                 info: DatasetInfo | None = None, augment: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.info, self.augment = shuffle, info, augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            x = self.x[idx]
            if self.augment and self.info is not None:
                x = augment(x, self.info.crop_padding, self.info.flip, self.generator)
            yield x, self.y[idx]

