"""Process-wide settings that make CPU training faster.

By default glibc serves every large tensor with a fresh `mmap` and gives it back on free, so the
next tensor of that size pays page faults (the kernel zeroes every page again). Turning mmap off
and never trimming keeps freed memory in the process for the next tensor, as jemalloc/tcmalloc
do for PyTorch on CPU. Measured on the SNN training step (docs/BENCHMARKS.md, step time against
T): 1226 against 1816 ms at T=20. Training repeats the same tensor sizes every step, so the heap
is reused as is; for phases with ever new sizes (calibration) the defaults are better, hence the
context manager that training runs in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
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
    glibc's). Returns whether it took effect."""
    return _set(0, 2**31 - 1)


@contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """`keep_freed_memory` inside the block; afterwards glibc's defaults again, and the free
    memory kept goes back to the OS."""
    done = keep_freed_memory()
    try:
        yield
    finally:
        if done:
            _set(_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
            _libc().malloc_trim(0)
