"""IDX files (MNIST, Fashion-MNIST): found in the search folders or downloaded and verified
by the SHA-256 of the decompressed payload (robust to re-gzipping)."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from ..errors import UserError
from .catalog import DatasetInfo, cache_dir, download, missing_in_data_dir, search_dirs

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse an IDX payload (unsigned bytes); raise UserError on a bad magic number or size."""
    return _read_stream(io.BytesIO(raw), len(raw), source)


def _read_stream(f: BinaryIO, limit: int, source: str) -> np.ndarray:
    """The IDX payload read from `f`, straight into the array it fills (no second copy in
    memory); `limit` bounds the bytes `f` can yield, so a header that promises more is refused
    before anything of that size is allocated."""
    head = f.read(4)
    if len(head) < 4 or head[:3] != b"\0\0\x08" or head[3] not in (1, 3):
        raise UserError(f"{source}: not an IDX file of unsigned bytes (wrong magic number); "
                        "delete it and fetch it again")
    ndim = head[3]
    shape = f.read(4 * ndim)
    if len(shape) < 4 * ndim:
        raise UserError(f"{source}: {4 + len(shape)} bytes, shorter than the IDX header of "
                        f"{4 + 4 * ndim}; the file is truncated or corrupt, delete it and fetch "
                        "it again")
    dims = struct.unpack(f">{ndim}I", shape)
    size = math.prod(dims)
    expected = 4 + 4 * ndim + size

    def wrong(got: int) -> UserError:
        return UserError(f"{source}: holds {got} bytes but its header promises {expected}; the "
                         "file is truncated or corrupt, delete it and fetch it again")

    if expected > limit:
        raise wrong(limit)
    out = np.empty(dims, dtype=np.uint8)
    view = memoryview(out.reshape(-1))
    got = 0
    while got < size:
        n = f.readinto(view[got : got + _CHUNK])
        if not n:
            raise wrong(4 + 4 * ndim + got)
        got += n
    extra = 0
    while chunk := f.read(_CHUNK):
        extra += len(chunk)
    if extra:
        raise wrong(expected + extra)
    return out


_CHUNK = 1 << 20
# deflate expands at most 1032:1, so a .gz file of n bytes holds at most this many times n
_GZIP_RATIO = 1032


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    """`path` opened for reading, decompressed if it ends in .gz; a file that cannot be read
    or decompressed is a UserError."""
    gz = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as f:
            yield f
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: cannot be {'decompressed' if gz else 'read'} ({e}); the file "
                        "is truncated or corrupt, delete it and fetch it again") from None


def _read_file(path: Path) -> np.ndarray:
    bound = path.stat().st_size * (_GZIP_RATIO if path.suffix == ".gz" else 1)
    with _opened(path) as f:
        return _read_stream(f, bound, str(path))


def _payload_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with _opened(path) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


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
            digest = _payload_sha256(part)
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
    tx, ty, vx, vy = (_read_file(root / f"{f}.gz" if (root / f"{f}.gz").is_file() else root / f)
                      for f in IDX_FILES)
    for x, y, split in ((tx, ty, "train"), (vx, vy, "test")):
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise UserError(f"{root}: {split} images {x.shape} and labels {y.shape} do not match; "
                            "the files are corrupt or from different datasets")
        if y.size and int(y.max()) >= info.num_classes:
            raise UserError(f"{root}: {split} label {int(y.max())} out of range for {info.name}")
    t = torch.from_numpy  # the arrays are the reader's own: no copy
    return t(tx).unsqueeze(1), t(ty).long(), t(vx).unsqueeze(1), t(vy).long()
