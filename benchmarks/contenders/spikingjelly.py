"""SpikingJelly: multi-step ParametricLIFNode, its PyTorch path and (on CUDA) its Triton, CuPy
(< 2.0) and native CUDA (>= 2.0) kernels."""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
from torch import Tensor, nn

from . import Contender, Skip, dist_version


def _sj_implementation(name: str, device: torch.device) -> str | None:
    """The SpikingJelly >= 2.0 CUDA implementation a contender asks for (read from the
    environment when spikingjelly is imported), None for its default."""
    if device.type != "cuda":
        return None
    return {"spikingjelly": "torch", "spikingjelly-triton": "triton",
            "spikingjelly-cuda": "cuda"}.get(name)


def build_spikingjelly(name: str, ann: nn.Module, T: int, device: torch.device) -> Contender:
    """SpikingJelly multi-step: ParametricLIFNode (learned tau), soft reset, ATan surrogate."""
    if name != "spikingjelly" and device.type != "cuda":
        raise Skip("a GPU backend: only with --device cuda")
    impl = _sj_implementation(name, device)
    if impl:  # SpikingJelly 2.x picks its CUDA kernels from this, read at import
        os.environ["SJ_PLIF_CUDA_IMPLEMENTATION"] = impl
    try:
        from spikingjelly.activation_based import functional, layer, surrogate
        from spikingjelly.activation_based import neuron as sjn
    except ImportError as e:
        raise Skip(f"spikingjelly not importable: {e}") from e
    ver = dist_version("spikingjelly")
    has_backend_arg = "backend" in inspect.signature(sjn.ParametricLIFNode.__init__).parameters
    kw: dict[str, Any] = {}
    info: dict[str, Any] = {}
    if has_backend_arg:  # SpikingJelly < 2.0: backend="torch" | "cupy" (| "triton")
        want = {"spikingjelly": "torch", "spikingjelly-cupy": "cupy",
                "spikingjelly-triton": "triton"}.get(name)
        if want is None:
            raise Skip(f"spikingjelly {ver} has no native CUDA kernels (see spikingjelly-cupy)")
        probe = sjn.ParametricLIFNode(init_tau=2.0, step_mode="m")
        if want not in getattr(probe, "supported_backends", ("torch",)):
            raise Skip(f"spikingjelly {ver} has no {want!r} backend")
        if want == "cupy":
            try:
                import cupy  # noqa: F401
            except ImportError as e:
                raise Skip(f"cupy not importable: {e}") from e
        kw["backend"] = want
        info["implementation"] = want
    else:  # SpikingJelly >= 2.0: no backend argument; CuPy replaced by native CUDA / Triton
        if name == "spikingjelly-cupy":
            raise Skip(f"spikingjelly {ver} has no CuPy backend (its native CUDA kernels: "
                       "spikingjelly-cuda)")
        got = "torch-reference"
        if device.type == "cuda":
            try:
                got = str(functional.neuron_implementation("plif", device)["implementation"])
            except (RuntimeError, ValueError, ImportError, AttributeError) as e:
                raise Skip(f"spikingjelly {ver}: {impl} kernels unavailable: {e}") from e
            if impl and impl not in got:
                raise Skip(f"spikingjelly {ver}: asked for {impl}, it would run {got}")
        info["implementation"] = got

    def make(m: nn.Module) -> nn.Module:
        if isinstance(m, nn.ReLU):
            return sjn.ParametricLIFNode(init_tau=2.0, v_reset=None, detach_reset=True,
                                         surrogate_function=surrogate.ATan(), step_mode="m",
                                         **kw)
        if isinstance(m, nn.Conv2d):
            c: nn.Module = layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                        m.padding, bias=False, step_mode="m")
        elif isinstance(m, nn.Linear):
            c = layer.Linear(m.in_features, m.out_features, bias=False, step_mode="m")
        elif isinstance(m, nn.AvgPool2d):
            return layer.AvgPool2d(m.kernel_size, step_mode="m")
        elif isinstance(m, nn.Flatten):
            return layer.Flatten(step_mode="m")
        else:
            return layer.Dropout(m.p, step_mode="m")
        c.weight.data.copy_(m.weight.data)
        return c

    net = nn.Sequential(*[make(m) for m in ann.units()]).to(device)

    def forward(x: Tensor) -> Tensor:
        functional.reset_net(net)
        return net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).sum(0)
    return Contender(net, forward, ver, info=info)
