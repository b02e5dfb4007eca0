"""IDX files (MNIST, Fashion-MNIST): found in the search folders or downloaded and verified
by the SHA-256 of the decompressed payload (robust to re-gzipping)."""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .catalog import DatasetInfo, cache_dir, download, missing_in_data_dir, search_dirs

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse an IDX payload (unsigned bytes); raise UserError on a bad magic number or size."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] not in (1, 3):
        raise UserError(f"{source}: not an IDX file of unsigned bytes (wrong magic number); "
                        "delete it and fetch it again")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{source}: {len(raw)} bytes, shorter than the IDX header of "
                        f"{4 + 4 * ndim}; the file is truncated or corrupt, delete it and fetch "
                        "it again")
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
    for f in IDX_FILES:
        target = dest / f"{f}.gz"
        if target.is_file():
            continue

        def check(part: Path, f: str = f) -> str | None:
            digest = hashlib.sha256(_read_gz(part)).hexdigest()
            if digest != info.sha256[f]:
                return f"SHA-256 {digest} does not match the known {info.sha256[f]}"
            return None

        download([base + f + ".gz" for base in info.urls], target, check, info.name,
                 "put the four IDX .gz files in --data-dir or $DIETSNN_DATA (Debian: apt-get "
                 "install dataset-fashion-mnist)")
    return dest


def load_idx_dataset(info: DatasetInfo, data_dir=None, download: bool = True):
    """Return (train_x uint8 [N,1,H,W], train_y int64, test_x, test_y)."""
    root = _find(info, data_dir)
    if root is None and data_dir is not None and str(data_dir) != "":
        raise missing_in_data_dir(info.name, data_dir, [(f"{f}.gz", f) for f in IDX_FILES])
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
