"""The one way a command opens the folder (or file) it writes, so that no command destroys what
it did not create (docs/RELIABILITY.md).

`RunDir(path, command, ...)` as a context manager:

1. refuses a path that exists and is not a directory, and an output that is, holds or lies
   beside one of the command's inputs;
2. creates the folder and takes an exclusive lock on `.dietsnn.lock` in it (`fcntl.flock`:
   released when the process exits, so a crash leaves no stale lock); a second process gets
   "in use by PID n";
3. removes temporary files that a killed write left behind;
4. refuses an output of the command (`outputs`, config.json, the marker) that exists and is not
   a regular file, or lies in something that is not a folder (unless `overwrite`);
5. refuses a folder that holds anything but this command's own unfinished, empty run, unless
   `resume` (only a run of the same command) or `overwrite` (only a dietsnn run) is given;
6. `start(config)`, called once the inputs are read and validated, clears the folder on
   `overwrite` and only then writes `config.json`;
7. on leaving, marks the run finished (or, if the folder was created for it and still holds
   nothing, removes the folder again) and releases the lock; a command that did not start
   leaves an earlier lock file as it was (its content too).

`update=True` opens an existing run that a command adds to (sweep, energy): lock and clean-up
only. `check_output_file` is the same refusal for a single output file (export).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import distributed
from .errors import UserError
from .files import TMP_TAG, check_writable, open_regular, transaction, write_json

LOCK_FILE = ".dietsnn.lock"
MARKER_FILE = ".dietsnn-run.json"
CONFIG_FILE = "config.json"
RUN_STEPS = {"ann": "train-ann", "converted": "convert", "snn": "train-snn"}  # `run`'s folders


def _is_tmp(name: str) -> bool:
    return name.startswith(".") and TMP_TAG in name


def _resolved(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None],
                    what: str = "--out") -> None:
    """Refuse an output that is one of the inputs, holds one, or is the folder of an input
    file: writing there would replace what the command reads."""
    o = _resolved(out)
    for i in inputs:
        if i is None or not os.path.exists(i):
            continue
        p = _resolved(i)
        folder = p if p.is_dir() else p.parent
        if _inside(p, o) or o == folder:
            raise UserError(f"{what} {out} would write over the input {i}; inputs are never "
                            f"modified, choose another {what}")


def check_output_file(path: str | os.PathLike, overwrite: bool,
                      inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """A single output file: refuse a non-regular file, an existing one without `overwrite`,
    a missing parent folder and an input."""
    p = Path(path)
    for i in inputs:
        if i is not None and os.path.exists(i) and _resolved(i) == _resolved(p):
            raise UserError(f"{path} is the input; choose another output file")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{path} is a directory; give the output file name, e.g. model.nir")
    check_writable(p)
    if st is not None and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it or choose another name")
    if not p.parent.is_dir():
        raise UserError(f"{p.parent}: no such directory for the output file")


def _read_json(path: Path) -> dict | None:
    try:
        with open_regular(path) as f:  # a FIFO there would block
            d = json.loads(f.read())
    except (UserError, ValueError):
        return None
    return d if isinstance(d, dict) else None


class RunDir:
    """An output folder of one command; see the module docstring."""

    def __init__(self, path: str | os.PathLike, command: str, *, resume: bool = False,
                 overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = (),
                 update: bool = False, outputs: Iterable[str] = ()) -> None:
        if resume and overwrite:
            raise UserError("--resume and --overwrite exclude each other; choose one")
        self.path = Path(path)
        self.command = command
        self.resume, self.overwrite, self.update = resume, overwrite, update
        self.inputs = list(inputs)
        # the files (relative paths) the command may write besides config.json and the marker
        self.outputs = list(outputs) + ([] if update else [CONFIG_FILE, MARKER_FILE])
        self._lock_fd: int | None = None
        self._lock_before: bytes | None = None  # an existing lock file's content, restored
        self._lock_created = False
        self._created = False
        self._started = False
        # under torchrun only rank 0 checks, locks and writes
        self._active = distributed.is_writer()

    # -- opening ----------------------------------------------------------------------------

    def __enter__(self) -> RunDir:
        err = None
        if self._active:
            try:
                self._open()
            except UserError as e:
                err = e
        if distributed.is_initialized():  # every rank stops if rank 0 refused the folder
            if distributed.all_reduce_sum([1.0 if err else 0.0])[0] > 0 and err is None:
                raise UserError(f"{self.path}: refused by rank 0 (see its message)")
        if err is not None:
            raise err
        return self

    def _open(self) -> None:
        p = self.path
        if (p.exists() or p.is_symlink()) and not p.is_dir():
            raise UserError(f"{p} exists and is not a directory; choose another --out")
        if not self.update:
            check_not_input(p, self.inputs)
        self._check_ancestors()
        self._created = not p.exists()
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {p}: {e.strerror or e}") from None
        try:
            self._lock()
            self._remove_tmp()
            if not self.overwrite:  # --overwrite removes them all before writing
                for name in self.outputs:
                    check_writable(self.path / name)
            if not self.update:
                self._check_contents()
        except BaseException:
            self._close(failed=True)
            raise

    def _check_ancestors(self) -> None:
        """A run that holds this folder (`dietsnn run` writes RUN/ann, RUN/snn) is in use too."""
        for a in _resolved(self.path).parents:
            lock = a / LOCK_FILE
            if not lock.is_file():
                continue
            try:
                fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
                raise UserError(f"{self.path} is in use by PID {pid} (through {a}); wait for "
                                "it to finish or choose another --out") from None
            finally:
                os.close(fd)  # a flock of this description only: any lock of ours is kept

    def _lock(self) -> None:
        lock = self.path / LOCK_FILE
        created = not lock.exists()
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as e:
            raise UserError(f"cannot lock {self.path}: {e.strerror or e}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UserError(f"cannot lock {self.path}: {lock} is not a regular file; move it "
                            "away")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise UserError(f"{self.path} is in use by PID {pid}; wait for it to finish or "
                            "choose another --out") from None
        self._lock_fd, self._lock_created = fd, created
        if not created:  # a command that does not start puts the earlier content back
            self._lock_before = os.pread(fd, 4096, 0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _remove_tmp(self) -> None:
        """Temporary files of a write that was killed (here and one folder down)."""
        for d in (self.path, *(c for c in self.path.iterdir() if c.is_dir()
                               and not c.is_symlink())):
            for f in d.iterdir():
                if _is_tmp(f.name) and f.is_file() and not f.is_symlink():
                    f.unlink(missing_ok=True)

    def _entries(self) -> list[str]:
        return sorted(e.name for e in self.path.iterdir()
                      if e.name not in (LOCK_FILE, MARKER_FILE))

    def _owner(self) -> tuple[str | None, bool]:
        """(command that made this run, whether it finished); (None, False) if not dietsnn's."""
        marker = _read_json(self.path / MARKER_FILE)
        if marker is not None:
            return marker.get("command"), bool(marker.get("finished"))
        cfg = _read_json(self.path / CONFIG_FILE)  # runs written before the marker existed
        if cfg is not None and isinstance(cfg.get("command"), str):
            return cfg["command"], True
        step = RUN_STEPS.get(self.path.name)  # a step's folder inside a `dietsnn run` folder
        parent = _read_json(self.path.parent / MARKER_FILE) or _read_json(
            self.path.parent / CONFIG_FILE) or {}
        if step and parent.get("command") == "run":
            return step, bool(parent.get("finished", True))
        return None, False

    def _check_contents(self) -> None:
        entries = self._entries()
        owner, finished = self._owner()
        own_unfinished = owner == self.command and not finished
        if not entries or (own_unfinished and entries == [CONFIG_FILE]):
            return
        p = self.path
        if self.resume:
            if owner != self.command:
                what = f"a run of `dietsnn {owner}`" if owner else "not a dietsnn run"
                raise UserError(f"{p} is {what}; --resume continues only runs of "
                                f"`dietsnn {self.command}`, "
                                "choose another --out")
            return
        if self.overwrite:
            if owner is None:
                raise UserError(f"{p} is not empty and holds no dietsnn run; --overwrite "
                                "replaces only dietsnn runs, choose another --out")
            return
        state = "an unfinished" if not finished else "a"
        kind = f"{state} run of `dietsnn {owner}`" if owner else "files that dietsnn did not write"
        hint = "pass --resume to continue it, " if owner == self.command else ""
        raise UserError(f"{p} is not empty (it holds {kind}); {hint}pass --overwrite to "
                        "replace it or choose another --out")

    # -- writing ----------------------------------------------------------------------------

    def start(self, config: dict[str, Any]) -> None:
        """Once inputs are read and validated: clear on --overwrite, then write config.json."""
        if not self._active:
            return
        if self.overwrite:
            for e in self.path.iterdir():
                if e.name == LOCK_FILE:
                    continue
                if e.is_dir() and not e.is_symlink():
                    shutil.rmtree(e)
                else:
                    e.unlink()
        with transaction(local=True):  # rank 0 alone runs this: no barrier
            write_json(self.path / MARKER_FILE, {"command": self.command, "finished": False,
                                                 "pid": os.getpid()})
            write_json(self.path / CONFIG_FILE, config)
        self._started = True

    # -- closing ----------------------------------------------------------------------------

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._active:
            self._close(failed=exc_type is not None)

    def _close(self, failed: bool) -> None:
        try:
            if self._started and not failed and not self.update:
                write_json(self.path / MARKER_FILE, {"command": self.command, "finished": True},
                           local=True)
            if self._lock_fd is not None and not self._started:  # refused or added to: as it was
                if self._lock_created:
                    (self.path / LOCK_FILE).unlink(missing_ok=True)
                elif self._lock_before is not None:
                    os.ftruncate(self._lock_fd, 0)
                    os.pwrite(self._lock_fd, self._lock_before, 0)
            if self._created and self._lock_fd is not None and not any(self.path.iterdir()):
                self.path.rmdir()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None
