"""Datasets as in-memory tensors, a seeded validation split, normalisation and augmentation.

Fashion-MNIST and MNIST are read from IDX `.gz` files, looked for in `--data-dir`, then
`$DIETSNN_DATA`, then `/usr/share/datasets/<name>` (Debian), then the user cache; otherwise
downloaded and verified by the SHA-256 of the decompressed IDX payload (robust to re-gzipping).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import UserError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's shape and statistics, and its training augmentation (crop after padding,
    horizontal flip): none for the 28x28 sets, whose short default runs fit faster without it."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    urls: tuple[str, ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)  # of the decompressed payloads
    classes: tuple[str, ...] = ()


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), crop_padding=0, flip=False,
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": DatasetInfo(
        "mnist", 10, 1, 28, (0.1307,), (0.3081,), crop_padding=0, flip=False,
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        classes=tuple(str(i) for i in range(10)),
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), crop_padding=4,
        flip=True, urls=("https://www.cs.toronto.edu/~kriz/",),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4,
        flip=True, urls=("https://www.cs.toronto.edu/~kriz/",),
    ),
    # class folders read lazily by dietsnn.imagenet; num_classes is set from the folders found
    "imagenet": DatasetInfo(
        "imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), flip=True,
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dietsnn"


def search_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    for d in (data_dir, os.environ.get("DIETSNN_DATA")):
        if d:
            dirs += [Path(d) / name, Path(d)]
    dirs += [Path("/usr/share/datasets") / name, cache_dir() / name]
    return dirs


def read_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse an IDX payload (unsigned bytes); raise UserError on a bad magic number or size."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise UserError(f"{source}: not an IDX file of unsigned bytes (wrong magic number); "
                        "delete it and fetch it again")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise UserError(f"{source}: holds {len(raw)} bytes but its header promises {expected}; "
                        "the file is truncated or corrupt, delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot be decompressed ({e}); the file is truncated or corrupt, "
                        "delete it and fetch it again") from None


def _find(info: DatasetInfo, data_dir) -> Path | None:
    for d in search_dirs(info.name, data_dir):
        if all((d / f"{f}.gz").is_file() or (d / f).is_file() for f in IDX_FILES):
            return d
    return None


def _download(info: DatasetInfo, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        target = dest / f"{f}.gz"
        if target.is_file():
            continue
        err = None
        for base in info.urls:
            try:
                tmp = target.with_suffix(".gz.part")
                with urllib.request.urlopen(base + f + ".gz", timeout=30) as r, open(tmp, "wb") as o:
                    o.write(r.read())
                payload = _read_gz(tmp)
                digest = hashlib.sha256(payload).hexdigest()
                if digest != info.sha256[f]:
                    tmp.unlink()
                    raise UserError(f"{base}{f}.gz: SHA-256 {digest} does not match the known "
                                    f"{info.sha256[f]}; refusing the download")
                os.replace(tmp, target)
                err = None
                break
            except UserError:
                raise
            except OSError as e:
                err = e
        if err is not None:
            raise UserError(
                f"{info.name} not found locally and the download failed ({err}); put the four IDX "
                f".gz files in --data-dir or $DIETSNN_DATA (Debian: apt-get install "
                f"dataset-fashion-mnist)"
            )
    return dest


def load_idx_dataset(info: DatasetInfo, data_dir=None, download: bool = True):
    """Return (train_x uint8 [N,1,H,W], train_y int64, test_x, test_y)."""
    root = _find(info, data_dir)
    if root is None:
        if not download:
            where = ", ".join(map(str, search_dirs(info.name, data_dir)))
            raise UserError(f"{info.name} not found in {where}")
        root = _download(info, cache_dir() / info.name)
    arrays = []
    for f in IDX_FILES:
        path = root / f"{f}.gz"
        raw = _read_gz(path) if path.is_file() else (root / f).read_bytes()
        arrays.append(read_idx(raw, str(path if path.is_file() else root / f)))
    tx, ty, vx, vy = arrays
    for x, y, split in ((tx, ty, "train"), (vx, vy, "test")):
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise UserError(f"{root}: {split} images {x.shape} and labels {y.shape} do not match; "
                            "the files are corrupt or from different datasets")
        if y.size and int(y.max()) >= info.num_classes:
            raise UserError(f"{root}: {split} label {int(y.max())} out of range for {info.name}")
    def t(a):
        return torch.from_numpy(a.copy())
    return t(tx).unsqueeze(1), t(ty).long(), t(vx).unsqueeze(1), t(vy).long()


@dataclass
class Splits:
    info: DatasetInfo
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor


def load(name: str, data_dir=None, val_size: int = 5000, seed: int = 0,
         limit_train: int | None = None, limit_test: int | None = None) -> Splits:
    """Load `name`, carve a seeded validation split off the training set, normalise to float32."""
    info = dataset_info(name)
    if name == "imagenet":  # too large for memory: images stay on disk (dietsnn.imagenet)
        from .imagenet import load_imagenet

        return load_imagenet(data_dir, val_size, seed, limit_train, limit_test, info)
    if name.startswith("cifar"):
        from .cifar import load_cifar

        tx, ty, sx, sy = load_cifar(info, data_dir)
    else:
        tx, ty, sx, sy = load_idx_dataset(info, data_dir)
    if limit_train:
        tx, ty = tx[:limit_train], ty[:limit_train]
    if limit_test:
        sx, sy = sx[:limit_test], sy[:limit_test]
    n_val = min(val_size, len(tx) // 5) if limit_train else min(val_size, len(tx) - 1)
    perm = torch.randperm(len(tx), generator=torch.Generator().manual_seed(seed))
    vi, ti = perm[:n_val], perm[n_val:]
    norm = lambda x: normalize(x, info)  # noqa: E731
    return Splits(info, norm(tx[ti]), ty[ti], norm(tx[vi]), ty[vi], norm(sx), sy)


def normalize(x: Tensor, info: DatasetInfo) -> Tensor:
    """uint8 [N,C,H,W] -> float32, standardised with the dataset's mean and std (ANN and SNN)."""
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - mean) / std


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
