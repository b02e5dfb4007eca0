"""dietsnn as a user calls it: the library defaults, its engines, and the Triton routing of
`dietsnn-triton` (`_triton_engine`, also used by tests/functional/test_triton.py)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import torch
from torch import Tensor

import dietsnn
from dietsnn.functional.engine import resolve as resolve_engine

from . import Contender, Skip


def _triton_engine(stack: contextlib.ExitStack, info: dict[str, Any]) -> None:
    """Run dietsnn's neurons on CUDA tensors through the Triton kernels
    (`dietsnn.functional.triton_lif`), the kernels `ops.kernels` gives float32 CUDA tensors under
    the native engine (and, for the tests, any float32 tensor under Triton's interpreter);
    `info["triton_calls"]` counts the calls, so that a dietsnn whose neuron no longer goes that
    way is reported, not timed as this."""
    from unittest import mock

    from dietsnn.functional import ops
    try:
        from dietsnn.functional import triton_lif
    except ImportError as e:
        raise Skip(f"triton not importable: {e}") from e
    info["triton_calls"] = 0
    orig = ops.kernels

    def kernels(x: Tensor) -> Any:
        if (x.is_cuda or triton_lif.interpreting()) and x.dtype == torch.float32:
            info["triton_calls"] += 1
            return triton_lif
        return orig(x)

    stack.enter_context(mock.patch.object(ops, "kernels", kernels))
    stack.enter_context(dietsnn.use_engine("native"))
    info["implementation"] = f"triton {importlib.import_module('triton').__version__}"


def build_dietsnn(name: str, arch: str, T: int, device: torch.device,
                  stack: contextlib.ExitStack) -> Contender:
    info: dict[str, Any] = {}
    if name == "dietsnn-triton":
        if device.type != "cuda":
            raise Skip("a GPU engine: only with --device cuda")
        _triton_engine(stack, info)
    elif name != "dietsnn-notune":  # entered before anything runs, left when the worker ends
        engine = {"dietsnn-eager": "eager", "dietsnn-compile": "compile"}.get(name)
        stack.enter_context(dietsnn.use_engine(engine))
    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann(arch), T).to(device)  # the library defaults
    info["backend"] = resolve_engine(None, device.type)
    return Contender(snn, snn, dietsnn.__version__, info=info)
