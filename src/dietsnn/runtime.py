"""Allocator tuning that makes CPU training faster, applied where dietsnn's engine runs.

By default glibc serves every large tensor with a fresh `mmap` and gives it back on free, so the
next tensor of that size pays page faults (the kernel zeroes every page again). Turning mmap off
and never trimming keeps freed memory in the process for the next tensor, as jemalloc/tcmalloc
do for PyTorch on CPU (docs/BENCHMARKS.md measures both ways). Training repeats the same tensor
sizes every step, so the heap is reused as is.

Nothing is switched at import. The tuning is held (1) inside `reusing_freed_memory()` blocks
(`training.fit` runs in one) and (2) by every SNN from its first forward until it is
garbage-collected, so that a plain user loop over an SNN gets it too; an SNN whose
`keep_freed_memory` attribute is False does not hold it. When the last holder goes, glibc's
defaults are restored and the kept memory goes back to the OS. The price while held: the
process's resident memory stays at its peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_TRIM_THRESHOLD = 128 * 1024


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None
    return libc


def _set(mmap_max: int, trim_threshold: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, mmap_max) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold) == 1 and ok


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse from now on (no-op where malloc is not
    glibc's). Returns whether it took effect. Prefer the scoped forms below, which undo it."""
    return _set(0, 2**31 - 1)


# Holders of the tuning: the blocks of `reusing_freed_memory` and the SNNs that `hold_for` was
# given. The tuning is on while there is at least one; the last to go restores glibc's defaults
# and gives the kept memory back to the OS.
_lock = threading.RLock()
_holders: set[int] = set()
_applied = False
_next_id = itertools.count()


def _acquire() -> int:
    global _applied
    with _lock:
        token = next(_next_id)
        if not _holders:
            _applied = keep_freed_memory()
        _holders.add(token)
        return token


def _release(token: int) -> None:
    global _applied
    with _lock:
        if token not in _holders:
            return
        _holders.discard(token)
        if not _holders and _applied:
            _set(_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
            _libc().malloc_trim(0)
            _applied = False


def is_tuned() -> bool:
    """Whether the allocator tuning is in effect now."""
    return _applied


def hold_for(owner: object) -> None:
    """Keep freed memory for reuse while `owner` lives (an SNN calls this at its first
    forward). Idempotent per owner; released when `owner` is garbage-collected or by
    `release_for(owner)`."""
    key = id(owner)
    with _lock:  # reentrant: _acquire takes it too, and a finalizer may run inside
        if key in _owners and _owners[key].alive:
            return
        token = _acquire()
        _owners[key] = weakref.finalize(owner, _drop_owner, key, token)


def release_for(owner: object) -> None:
    """Give up `owner`'s hold now (see `hold_for`)."""
    fin = _owners.get(id(owner))
    if fin is not None:
        fin()


def _drop_owner(key: int, token: int) -> None:
    _owners.pop(key, None)
    _release(token)


_owners: dict[int, weakref.finalize] = {}


@contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """`keep_freed_memory` inside the block; afterwards (once no other holder remains) glibc's
    defaults again, and the free memory kept goes back to the OS."""
    token = _acquire()
    try:
        yield
    finally:
        _release(token)
