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

`training.fit`, `training.evaluate` and every CLI command run inside it; blocks nest. The
command line also starts with glibc's cache of small freed blocks off, which no call can change
once a process runs (`environment.tuned_environment`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
    glibc's). Returns whether it took effect. Prefer `use_engine`, which undoes it."""
    return _set(0, 2**31 - 1)


_lock = threading.Lock()
_open = {"blocks": 0, "tuned": False, "undo": []}  # `use_engine` blocks open, in any thread


def is_tuned() -> bool:
    """Whether the allocator tuning is in effect now."""
    return bool(_open["tuned"])


def _settings_on() -> list:
    """Turn the process settings on; returns the calls that undo them."""
    _open["tuned"] = keep_freed_memory()
    undo = [register_optimizer_step_post_hook(clamp_after_step).remove]
    if _open["tuned"]:
        undo.append(_give_back_memory)
    return undo


def _give_back_memory() -> None:
    _set(_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    _libc().malloc_trim(0)
    _open["tuned"] = False


@contextmanager
def use_engine(engine: str | None = None) -> Iterator[None]:
    """Run the block on `engine` ("auto", "native", "eager" or "compile"; None: the one in
    effect) with dietsnn's process settings (see the module docstring). Blocks nest: the
    outermost turns the settings on and, on exit, off again."""
    with _engine.scope(engine):
        with _lock:
            if _open["blocks"] == 0:
                _open["undo"] = _settings_on()
            _open["blocks"] += 1
            if _engine.resolve() == "compile":  # dynamo is imported only for this engine
                cfg = torch._dynamo.config
                if cfg.recompile_limit < 64:
                    _open["undo"].append(lambda limit=cfg.recompile_limit:
                                         setattr(cfg, "recompile_limit", limit))
                    cfg.recompile_limit = 64
        try:
            yield
        finally:
            with _lock:
                _open["blocks"] -= 1
                if _open["blocks"] == 0:
                    for undo in reversed(_open["undo"]):
                        undo()
