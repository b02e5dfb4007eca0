"""ImageNet (or any dataset) in the class-folder layout, read with Pillow through DataLoader workers.

    <root>/train/<class>/*.JPEG     <root>/val/<class>/*.JPEG

`<root>` is looked for as `imagenet/` (or the folder itself) in --data-dir, $DIETSNN_DATA,
/usr/share/datasets and the user cache. Labels are the sorted class folder names of `train/`.
The official validation set is the test split (arrange it in class folders first, e.g. with the
usual `valprep.sh`); the validation split that picks checkpoints is carved from `train/`.
Training: random-resized crop to 224 (scale 0.08-1, aspect 3/4-4/3) and horizontal flip;
evaluation and calibration: resize the short side to 256 and center-crop 224; both normalised
with the ImageNet mean and std. Each sample's augmentation is drawn from its own generator seeded
from the epoch's seed and the sample index, so results do not depend on the number of workers or
processes. Workers: $DIETSNN_WORKERS, else min(8, CPU cores / processes on this node).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import distributed
from ..environment import env_int
from ..errors import UserError
from .catalog import DATASETS, DatasetInfo, missing_in_data_dir, search_dirs
from .splits import Splits, validation_size

EXTENSIONS = (".jpeg", ".jpg", ".png")
INFO = DATASETS["imagenet"]


def default_workers() -> int:
    workers = env_int("DIETSNN_WORKERS", -1, 0)
    if workers >= 0:
        return workers
    per_node = env_int("LOCAL_WORLD_SIZE", 1, 1)
    return min(8, max(1, (os.cpu_count() or 1) // per_node))


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def random_resized_crop_box(w: int, h: int, g: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(left, top, width, height) of a random crop covering `scale` of the area with aspect in
    `ratio` (torchvision's RandomResizedCrop rule: 10 tries, then a center crop)."""
    area = w * h
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, *scale)
        ar = math.exp(_uniform(g, *log_r))
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(torch.randint(0, w - cw + 1, (), generator=g))
            y0 = int(torch.randint(0, h - ch + 1, (), generator=g))
            return x0, y0, cw, ch
    if w / h < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif w / h > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def transform(img, size: int, mean: Sequence[float], std: Sequence[float],
              generator: torch.Generator | None = None) -> Tensor:
    """PIL image -> normalised float32 [3, size, size]; with a generator: random-resized crop and
    flip (training), without: resize the short side to size/0.875 and center-crop (evaluation)."""
    from PIL import Image

    img = img.convert("RGB")
    w, h = img.size
    if generator is not None:
        x0, y0, cw, ch = random_resized_crop_box(w, h, generator)
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        if torch.rand((), generator=generator).item() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    else:
        short = round(size / 0.875)
        nw, nh = (short, max(short, round(short * h / w))) if w <= h else \
            (max(short, round(short * w / h)), short)
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class _Loading(torch.utils.data.Dataset):
    """What the DataLoader workers index: (sample index, augmentation seed or -1)."""

    def __init__(self, data: ImageFolderSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        i, seed = item
        g = torch.Generator().manual_seed(seed) if seed >= 0 else None
        return self.data.load(i, g), self.data.samples[i][1]


class ImageFolderSet:
    """A list of (image path, label). `len()`, slicing gives a subset, indexing with a tensor or
    list of indices loads those images for evaluation as one tensor (calibration batches), and
    `batches()` iterates (x, y) mini-batches through DataLoader workers."""

    def __init__(self, samples: list[tuple[str, int]], info: DatasetInfo,
                 workers: int | None = None) -> None:
        self.samples, self.info = samples, info
        self.workers = default_workers() if workers is None else workers

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> Tensor:
        return torch.tensor([s[1] for s in self.samples], dtype=torch.long)

    def load(self, i: int, generator: torch.Generator | None = None) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.samples[i][0]
        try:
            with Image.open(path) as img:
                return transform(img, self.info.image_size, self.info.mean, self.info.std,
                                 generator)
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"{path}: cannot read the image ({e}); delete or replace it") from None

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ImageFolderSet(self.samples[idx], self.info, self.workers)
        if isinstance(idx, int):
            return self.load(idx)
        plan = [[(int(i), -1) for i in idx]]
        if not plan[0]:
            c, s = self.info.in_channels, self.info.image_size
            return torch.empty(0, c, s, s)
        return next(iter(self._loader(plan)))[0]

    def _loader(self, plan: list[list[tuple[int, int]]]):
        return torch.utils.data.DataLoader(_Loading(self), batch_sampler=plan,
                                           num_workers=self.workers,
                                           pin_memory=torch.cuda.is_available())

    def batches(self, batch_size: int, shuffle: bool = False, augment: bool = False,
                seed: int = 0) -> FolderBatches:
        return FolderBatches(self, batch_size, shuffle, augment, seed)


class FolderBatches:
    """Mini-batches of an `ImageFolderSet`, the counterpart of `data.Batches`: a seeded
    permutation per epoch (`generator`, saved for resume), in a process group only this rank's
    contiguous part of each global batch (`sharded`)."""

    sharded = True

    def __init__(self, data: ImageFolderSet, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0) -> None:
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self.shuffle, self.augment = data, batch_size, shuffle, augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return (len(self.data) + self.batch_size - 1) // self.batch_size

    def plan(self) -> list[list[tuple[int, int]]]:
        """This epoch's batches for this rank: lists of (sample index, augmentation seed)."""
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        base = int(torch.randint(0, 1 << 40, (), generator=self.generator)) if self.augment else -1
        r, w = distributed.rank(), distributed.world()
        out = []
        for i in range(0, n, self.batch_size):
            idx = order[i : i + self.batch_size]
            if w > 1:
                if self.shuffle and len(idx) < w:  # training: every rank needs a sample
                    continue
                idx = idx.tensor_split(w)[r]
            if len(idx):
                out.append([(int(j), base + int(j) if base >= 0 else -1) for j in idx])
        return out

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield from self.data._loader(self.plan())


def _find_root(data_dir) -> Path | None:
    for d in search_dirs("imagenet", data_dir):
        if (d / "train").is_dir() and (d / "val").is_dir():
            return d
    return None


def _scan(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        if c not in index:
            raise UserError(f"{folder / c}: class folder not in train/; the splits must share "
                            "their class folders")
        with os.scandir(folder / c) as it:
            files = sorted(e.path for e in it if e.name.lower().endswith(EXTENSIONS))
        samples += [(f, index[c]) for f in files]
    if not samples:
        raise UserError(f"{folder}: no images ({', '.join(EXTENSIONS)}) in class folders")
    return samples


def _subset(samples: list, n: int | None, seed: int) -> list:
    if not n or n >= len(samples):
        return samples
    keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:n]
    return [samples[i] for i in sorted(keep.tolist())]


def load_imagenet(data_dir=None, val_size: int = 5000, seed: int = 0, limit_train: int | None = None,
                  limit_test: int | None = None, info: DatasetInfo = INFO,
                  workers: int | None = None) -> Splits:
    """Splits of lazily loaded images; `info.num_classes` becomes the number of class folders.
    `limit_train` / `limit_test` keep a seeded random subset (classes stay mixed)."""
    root = _find_root(data_dir)
    if root is None and data_dir is not None and str(data_dir) != "":
        raise missing_in_data_dir("imagenet", data_dir, ["train/", "val/"])
    if root is None:
        where = ", ".join(str(d) for d in search_dirs("imagenet", data_dir))
        raise UserError(f"imagenet not found: no folder with train/ and val/ class folders in "
                        f"{where}")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    train = _subset(_scan(root / "train", classes), limit_train, seed)
    test = _subset(_scan(root / "val", classes), limit_test, seed + 1)
    n_val = validation_size(len(train), val_size, bool(limit_train))
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    vi, ti = sorted(perm[:n_val].tolist()), sorted(perm[n_val:].tolist())
    info = replace(info, num_classes=len(classes), classes=tuple(classes))

    def part(samples):
        s = ImageFolderSet(samples, info, workers)
        return s, s.labels()

    return Splits(info, *part([train[i] for i in ti]), *part([train[i] for i in vi]), *part(test))
