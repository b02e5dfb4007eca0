"""The engine context: how dietsnn runs, and every process-wide setting it needs, entered and
left in one place (`use_engine`). A model's forward changes nothing in the process.

Inside `use_engine(engine)`:

- the neuron operators run on `engine` (`functional/engine.py`; default `config.ENGINE`);
- glibc's malloc keeps freed memory for reuse: by default it serves every large tensor with a
  fresh `mmap` and gives it back on free, so the next tensor of that size pays page faults (the
  kernel zeroes every page again). Turning mmap off and never trimming keeps freed memory in the
  process for the next tensor, as jemalloc/tcmalloc do for PyTorch on CPU (docs/BENCHMARKS.md
  measures both ways); training repeats the same tensor sizes every step. The price: the
  process's resident memory stays at its peak until the outermost block ends, when glibc's
  defaults come back and the kept memory goes back to the OS. No-op where malloc is not glibc's;
- after every `torch.optim` step the leaks and thresholds the optimiser updates are clamped into
  range (`layers.clamp_after_step`; outside the block call `dietsnn.constrain_(model)`);
- dynamo may recompile the compile engine's backward per T (room for a sweep of lengths).

`training.fit`, `training.evaluate` and every CLI command run inside it; blocks nest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from .functional import engine as _engine
from .layers import clamp_after_step

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


# Holders of the tuning: the blocks of `reusing_freed_memory`. The tuning is on while there is at
# least one; the last to go restores glibc's defaults and gives the kept memory back to the OS.
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


@contextmanager
def reusing_freed_memory() -> Iterator[None]:
    """`keep_freed_memory` inside the block; afterwards (once no other holder remains) glibc's
    defaults again, and the free memory kept goes back to the OS."""
    token = _acquire()
    try:
        yield
    finally:
        _release(token)


@contextmanager
def use_engine(engine: str | None = None) -> Iterator[None]:
    """Run the block on `engine` ("auto", "native", "eager" or "compile"; None: the one in
    effect) with dietsnn's process settings (see the module docstring); all undone on exit."""
    with ExitStack() as stack, _engine.scope(engine):
        stack.enter_context(reusing_freed_memory())
        stack.callback(register_optimizer_step_post_hook(clamp_after_step).remove)
        if _engine.resolve() == "compile":  # dynamo is imported only for this engine
            cfg = torch._dynamo.config
            stack.callback(setattr, cfg, "recompile_limit", cfg.recompile_limit)
            cfg.recompile_limit = max(cfg.recompile_limit, 64)
        yield
