"""How dietsnn writes and reads its files (docs/RELIABILITY.md): every write goes to a
temporary file that is renamed into place (a crash keeps the previous file), several writes
can form one transaction (all or none), outputs are regular files only, inputs are opened
only if they are regular files, and JSON is strict (NaN and infinities as null)."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from . import distributed
from .errors import UserError

TMP_TAG = ".tmp-"  # in the name of every temporary file: `.NAME.tmp-XXXX`


def file_mode() -> int:
    """The mode of a new file under the process umask (0644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path: str | os.PathLike) -> None:
    """An output path dietsnn may write: absent or a regular file (not a link, directory, FIFO
    or device), whose folder, if it exists, is a folder. A UserError otherwise."""
    path = Path(path)
    for parent in path.parents:  # the nearest existing one must be a folder
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise UserError(f"{parent} is not a folder; cannot write {path} there, move it "
                                "away or choose another output")
            break
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path} exists and is not a regular file; dietsnn writes over regular "
                        "files only, move it away or choose another output")


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """`path` opened for reading as a binary file object, refused (UserError) unless it is a
    regular file: a FIFO or device would block or never end. Opened without blocking and
    checked on the open descriptor, so a file swapped after the check is refused too."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file (a folder, FIFO or device); give a "
                        f"regular {what}")
    return os.fdopen(fd, "rb")


_pending: list[tuple[Path, bytes]] | None = None  # writes collected by an open `transaction`


@contextmanager
def transaction(local: bool = False) -> Iterator[None]:
    """Every `atomic_write` inside the block is checked at once and written at its end, all or
    none: every temporary file is written and synced first, then all are renamed into place.
    A failure before the renames (in the block, a full disk) leaves every file as it was.
    `local` as in `atomic_write`."""
    global _pending
    if _pending is not None:  # nested: part of the enclosing transaction
        yield
        return
    _pending = []
    try:
        yield
        files = dict(_pending)
    finally:
        _pending = None
    if files:
        atomic_write_all(files, local)


def atomic_write(path: str | os.PathLike, data: bytes, local: bool = False) -> None:
    """Write `data` to `path` through a temporary file renamed into place (inside a
    `transaction`: checked now, written at its end). Under torchrun rank 0 writes, between two
    barriers that every rank reaches; `local=True`: only the calling process writes, with no
    barrier (for code that runs on rank 0 alone)."""
    if _pending is not None:
        check_writable(path)
        _pending.append((Path(path), data))
        return
    atomic_write_all({Path(path): data}, local)


def atomic_write_all(files: dict[Path, bytes], local: bool = False) -> None:
    """Write several files as one (see `transaction`); torchrun as in `atomic_write`."""
    if distributed.is_initialized() and not local:
        distributed.barrier()
        try:
            if distributed.is_writer():
                _write_all(files)
        finally:
            distributed.barrier()
        return
    _write_all(files)


def _write_all(files: dict[Path, bytes]) -> None:
    for path in files:
        check_writable(path)
    tmps: list[tuple[str, Path]] = []
    path = next(iter(files))
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_TAG}", dir=path.parent)
            tmps.append((tmp, path))
            os.fchmod(fd, file_mode())  # mkstemp makes 0600; outputs get the usual mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        while tmps:
            tmp, path = tmps[0]
            os.replace(tmp, path)
            tmps.pop(0)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}; the previous file is intact. "
                        "Free some space or choose another --out") from None
    finally:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)


def json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities as None, so that it prints as valid JSON (null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON of `obj` (NaN and infinities as null)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any, local: bool = False) -> None:
    atomic_write(path, (dumps(obj) + "\n").encode(), local)
