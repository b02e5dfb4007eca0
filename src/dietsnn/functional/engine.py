"""Which implementation runs the neuron operators (`ops.py`): the engine, resolved in one place.

- "native": the C kernels of `native_*.c` (float32 on the CPU) and the Triton kernels of
  `triton_lif.py` (float32 on CUDA, with the `cuda` extra); other dtypes and devices run the
  eager loops;
- "eager": the plain PyTorch loops of `neuron.py` (any device and dtype);
- "compile": the same loops in the form torch.compile fuses, compiled on first use;
- "auto" (`config.ENGINE`): "native" on the CPU where the kernels build and on CUDA where
  Triton is installed, "eager" elsewhere.

The engine in effect is the innermost `scope` block's (entered by `dietsnn.use_engine`), else
`config.ENGINE`. The operators read it when they run; a model holds no engine of its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from .. import config
from . import native

ENGINES = config.ENGINES
_SCOPED: ContextVar[str | None] = ContextVar("dietsnn_engine", default=None)
_COMPILED: dict[Callable, Callable] = {}
_COMPILE_FAILED: list[str] = []  # why compiling failed in this process, once it has


def check(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return engine


def _scoped() -> str | None:
    return _SCOPED.get()


# torch.compile takes the engine in effect when it traces (dynamo cannot read a ContextVar): the
# mark `torch.compiler.assume_constant_result` sets, without importing dynamo with dietsnn
_scoped._dynamo_marked_constant = True  # type: ignore[attr-defined]


def resolve(engine: str | None = None, device_type: str = "cpu") -> str:
    """The engine that runs on `device_type`: `engine`, else the one in effect, with "auto"
    made concrete ("native", "eager" or "compile")."""
    engine = check(engine or _scoped() or config.ENGINE)
    if engine != "auto":
        return engine
    if device_type == "cpu":
        return "native" if native.available() else "eager"
    if device_type == "cuda":  # the Triton kernels, where the `cuda` extra is installed
        return "native" if triton_available() else "eager"
    return "eager"


def native_cpu(device: torch.device | str | None = None) -> bool:
    """Whether the C kernels run on `device` now: a CPU under the "native" engine (in effect),
    where they build."""
    return (torch.device(device or "cpu").type == "cpu" and resolve(None, "cpu") == "native"
            and native.available())


def triton_available() -> bool:
    """Whether Triton (the `cuda` extra) is installed; it is imported only where used."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


@contextmanager
def scope(engine: str | None) -> Iterator[None]:
    """`engine` in effect inside the block (None: leave the one in effect)."""
    token = _SCOPED.set(check(engine) if engine is not None else _SCOPED.get())
    try:
        yield
    finally:
        _SCOPED.reset(token)


def compiled(fn: Callable) -> Callable:
    """`fn` through torch.compile (dynamic shapes). Should compiling fail (no working inductor or
    compiler), `fn` runs uncompiled from then on in this process, with one warning."""
    if fn not in _COMPILED:
        compiled_fn = torch.compile(fn, dynamic=True)

        def call(*args):
            if _COMPILE_FAILED:
                return fn(*args)
            try:
                return compiled_fn(*args)
            except Exception as e:  # noqa: BLE001 -- retried uncompiled below
                out = fn(*args)  # a real error in the arguments raises again here
                _COMPILE_FAILED.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                warnings.warn("dietsnn: torch.compile failed, the neurons run uncompiled from "
                              f"now on ({_COMPILE_FAILED[0]})", RuntimeWarning, stacklevel=2)
                return out
        _COMPILED[fn] = call
    return _COMPILED[fn]
