"""CIFAR-10 / CIFAR-100 in the official python-pickle batch format.

Looked for in `data_dir`, `$DIETSNN_DATA`, `/usr/share/datasets/<name>`, then the user cache, as the
extracted folder (`cifar-10-batches-py`, `cifar-100-python`) or the official `.tar.gz`; otherwise
the archive is downloaded into the cache and checked by MD5. The tar is read in place (never
extracted to disk), and the pickles go through a restricted unpickler that admits only the numpy
names an array needs, so a tampered batch cannot run code.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from .catalog import DatasetInfo, cache_dir, download, missing_in_data_dir, search_dirs


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    archive: str
    md5: str
    train: tuple[str, ...]
    test: str
    label_key: bytes


LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout("cifar-10-batches-py", "cifar-10-python.tar.gz",
                           "c58f30108f718f92721af3b95e74349a",
                           tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", b"labels"),
    "cifar100": CifarLayout("cifar-100-python", "cifar-100-python.tar.gz",
                            "eb9058c3a382ffc7106e4002c42a8d85", ("train",), "test", b"fine_labels"),
}

# (module, name) pairs a numpy array in a pickle needs: numpy 1 and numpy 2 spellings.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose only globals are numpy's array reconstruction; anything else is refused."""

    def __init__(self, file, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise UserError(f"{self.source}: refusing to unpickle global {module}.{name}; "
                            "this is not a genuine CIFAR batch, delete it and fetch it again")
        if module.endswith("multiarray"):  # numpy 2 moved numpy.core -> numpy._core
            try:
                return importlib.import_module("numpy._core.multiarray")._reconstruct
            except ImportError:
                return importlib.import_module("numpy.core.multiarray")._reconstruct
        return getattr(np, name)


def unpickle_batch(raw: bytes, source: str) -> dict:
    """Decode one batch file safely (numpy arrays, lists, ints and bytes only)."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), source).load()
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure means a corrupt file
        raise UserError(f"{source}: not a readable CIFAR batch ({type(e).__name__}: {e}); "
                        "delete it and fetch it again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{source}: a CIFAR batch must be a dict, found {type(obj).__name__}")
    return obj


def _get(batch: dict, key: bytes):
    return batch[key] if key in batch else batch.get(key.decode())


def parse_batch(batch: dict, label_key: bytes, num_classes: int, source: str) -> tuple[Tensor, Tensor]:
    """Check a decoded batch and return (images uint8 [n,3,32,32], labels int64 [n])."""
    data, labels = _get(batch, b"data"), _get(batch, label_key)
    if data is None or labels is None:
        raise UserError(f"{source}: missing b'data' or {label_key!r}; wrong file or dataset")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{source}: data is {data.dtype} {data.shape}, expected uint8 [n, 3072]")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"{source}: labels are not integers") from None
    if len(y) != len(data):
        raise UserError(f"{source}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"{source}: label {int(y.min() if y.min() < 0 else y.max())} out of range "
                        f"[0, {num_classes}); wrong dataset?")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(y.copy())


def _locate(layout: CifarLayout, name: str, data_dir) -> Path | None:
    for d in search_dirs(name, data_dir):
        folder = d / layout.folder
        if all((folder / f).is_file() for f in (*layout.train, layout.test)):
            return folder
        if (d / layout.archive).is_file():
            return d / layout.archive
    return None


def _read_all(src: Path, layout: CifarLayout) -> dict[str, bytes]:
    names = (*layout.train, layout.test)
    if src.is_dir():
        return {n: (src / n).read_bytes() for n in names}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(src, "r:gz") as tar:
            for n in names:
                member = tar.getmember(f"{layout.folder}/{n}")
                f = tar.extractfile(member) if member.isfile() else None
                if f is None:
                    raise KeyError(n)
                out[n] = f.read()
    except KeyError as e:
        raise UserError(f"{src}: archive lacks {layout.folder}/{e.args[0]}; wrong or "
                        "incomplete archive, delete it and fetch it again") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserError(f"{src}: cannot read the archive ({e}); delete it and fetch it again") from None
    return out


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(info: DatasetInfo, layout: CifarLayout, dest: Path, hint: str) -> Path:
    def check(part: Path) -> str | None:
        digest = md5sum(part)
        return None if digest == layout.md5 else (
            f"MD5 {digest} does not match the known {layout.md5}")

    return download([info.urls[0] + layout.archive], dest / layout.archive, check, info.name,
                    hint)


def load_cifar(info: DatasetInfo, data_dir: str | os.PathLike | None = None,
               download: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (train_x uint8 [N,3,32,32], train_y int64, test_x, test_y) of CIFAR-10/100."""
    if info.name not in LAYOUTS:
        raise UserError(f"{info.name} is not a CIFAR dataset; choose one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[info.name]
    src = _locate(layout, info.name, data_dir)
    if src is None and data_dir is not None and str(data_dir) != "":
        d = Path(data_dir)
        if any((c / layout.folder).is_dir() for c in (d / info.name, d)):  # a partial folder
            need: list = [f"{layout.folder}/{f}" for f in (*layout.train, layout.test)]
        else:
            need = [(layout.archive, f"{layout.folder}/")]
        raise missing_in_data_dir(info.name, data_dir, need)
    if src is None:
        where = ", ".join(str(d) for d in search_dirs(info.name, data_dir))
        hint = (f"put {layout.archive} or the extracted {layout.folder}/ folder in --data-dir, "
                f"$DIETSNN_DATA or {cache_dir() / info.name}")
        if not download:
            raise UserError(f"{info.name} not found (looked in {where}); {hint}")
        src = _download(info, layout, cache_dir() / info.name, hint)
    raw = _read_all(src, layout)
    parts = [parse_batch(unpickle_batch(raw[n], f"{src}:{n}"), layout.label_key, info.num_classes,
                         f"{src}:{n}") for n in (*layout.train, layout.test)]
    train_x = torch.cat([p[0] for p in parts[:-1]])
    train_y = torch.cat([p[1] for p in parts[:-1]])
    return train_x, train_y, parts[-1][0], parts[-1][1]
