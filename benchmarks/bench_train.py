r"""Training-step benchmark: dietsnn, as a user calls it, against its peers and the dense limit.

Every contender trains the same network (default `vgg_small`, `--arch vgg5` for the larger
size) from the same initial weights (`torch.manual_seed(0)`, then `dietsnn.build_ann`), T=5,
batch 64, float32 unless named otherwise, Adam(lr=1e-4), random inputs, a fixed thread count.

Contenders (`--contenders`, comma-separated):

- `dietsnn`: the library defaults, the documented user code: `snn =
  dietsnn.ann_to_snn(dietsnn.build_ann(arch), T)`, `torch.optim.Adam(snn.parameters(), 1e-4)`,
  forward / cross_entropy / backward / step inside `with dietsnn.use_engine():` (the default
  engine and dietsnn's process settings, among them glibc's keep-freed-memory tuning).
- `dietsnn-eager`: the same inside `dietsnn.use_engine("eager")` (the fallback without a C
  compiler).
- `dietsnn-compile`: the same inside `dietsnn.use_engine("compile")` (torch.compile's kernels;
  not in the default list).
- `dietsnn-notune`: the same loop without `use_engine` (the default engine, no allocator
  tuning): the allocator tuning measured both ways.
- `dietsnn-bf16`: the library defaults, the forward under `torch.autocast(bfloat16)` (the same
  as `dietsnn+bf16`).
- `dietsnn-triton` (CUDA only): the same with the neurons and the fused "LIF, dropout, pooling"
  blocks run by the Triton kernels (`dietsnn.functional.triton_lif`, the `[cuda]` extra),
  served where dietsnn looks up its native kernels; the record counts the kernel calls
  (`triton_calls`), and a dietsnn whose neurons do not reach them is skipped with a note.
- Any contender `NAME+bf16`: its forward under bf16 autocast (float32 master weights);
  `NAME+graph` (CUDA only): warm-up on a side stream, then the whole training step (forward,
  backward, `Adam(capturable=True)` step) captured once as a CUDA graph and replayed; a
  capture that fails is reported as skipped with the reason.
- `spikingjelly`: multi-step `ParametricLIFNode` (learned tau), soft reset, ATan surrogate, its
  PyTorch path. On CUDA also `spikingjelly-triton` (its Triton kernels), `spikingjelly-cupy`
  (the `backend="cupy"` of SpikingJelly < 2.0) and `spikingjelly-cuda` (the native CUDA kernels
  that replaced CuPy in 2.0, when built); each is skipped with a note where unavailable.
- `snntorch`: `Leaky(learn_beta, learn_threshold, subtract reset)`, the usual per-step loop.
- `norse`: `LIFBoxCell` (learned tau_mem_inv and threshold, subtract reset), per-step loop.
- `ann-TxB`: the same layers as an ANN (ReLU) on the T*B images; `ann-BxT`: the ANN on the B
  images, T times, outputs summed. The "dense limit" is the faster of the two.

Every contender runs in a fresh process of its own (`--worker NAME`, one JSON line) in every
round, and rounds are interleaved with the order rotated each round, so that no library's
allocator setting or compile cache in one process touches another, and machine noise hits all
alike. Each worker: build, 3 training steps (the first builds or loads dietsnn's native kernels,
or compiles) after which the peak memory is
read (VmHWM: the whole process's peak RSS, and its peak above the RSS just before the first
step; on CUDA `torch.cuda.max_memory_allocated`), more warm-up steps, `--steps` timed steps
(median), the memory held between forward and backward, then inference (no_grad, eval, batch
256) in images/s. By default every worker gets an empty inductor cache and an empty dietsnn
kernel cache of its own (`--compile-cache fresh`), so "compile included" is literal in every
round. The workers run
with the environment as it is (no MALLOC_* tuning of the benchmark's own: the allocator is what
each library leaves it); a MALLOC_* variable set by the caller is reported.

Printed: the CPU model and its flags (AVX2, AVX-512, AVX512-BF16, AMX), torch, threads, device,
arch, T, B; a table with, per contender, train ms/step and its ratio to the fastest peer and to
the dense limit (the ANN at the same precision), inference images/s and its ratio to the
fastest peer's, peak RSS (whole process, and above rest; on CUDA the peak GPU memory) and their
ratios to SpikingJelly's, the memory held for backward, the first step's seconds (compile);
each contender's version and engine (dietsnn's backend and whether the allocator tuning was
on; SpikingJelly's implementation); the skipped contenders and why; the library defaults
against the engine's targets (docs/BENCHMARKS.md), and on CUDA dietsnn-triton against the GPU
targets. `--json PATH` writes the same and every raw measurement.

Commands (peers: `bash benchmarks/setup_peers.sh` first; missing peers are skipped):

    # CPU, the published run (quiet machine):
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --steps 10 --rounds 5 \
        --threads 2 --json bench-cpu-vgg_small.json
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --arch vgg5 --steps 10 \
        --rounds 5 --threads 2 --json bench-cpu-vgg5.json
    # step time against T (dietsnn, fresh process per T, interleaved):
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --contenders dietsnn \
        --scaling --steps 10 --rounds 3
    # GPU (peers' GPU kernels as contenders; skipped, with a note, where there is no GPU), with
    # the machine's own CUDA build of torch and the peers beside it (pure Python, no deps; for
    # SpikingJelly < 2.0's CuPy backend also cupy-cuda12x/13x):
    python3 -m pip install --no-deps spikingjelly snntorch norse nir nirtorch loguru
    PYTHONPATH=src python3 benchmarks/bench_train.py --device cuda --steps 20 --rounds 5 \
        --json bench-cuda.json
    # GPU, the whole matrix (vgg5/vgg9/vgg16, batch 64 and 256, T = 2, 5, 10, fp32 and bf16,
    # every contender) time-boxed to about 8 minutes, raw output under docs/results/:
    bash benchmarks/gpu_bench.sh
    # a quick check that everything runs:
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --steps 2 --rounds 1 \
        --batch 8 --infer-batch 16 --infer-batches 1
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = os.path.dirname(os.path.abspath(__file__))
if not any(os.path.isdir(os.path.join(p, "dietsnn"))  # this checkout's dietsnn, unless
           for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p):  # PYTHONPATH has one
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
import dietsnn  # noqa: E402
from dietsnn.functional import native  # noqa: E402
from dietsnn.functional.engine import resolve as resolve_engine  # noqa: E402

C = 10
DIETSNN = ("dietsnn", "dietsnn-eager", "dietsnn-notune", "dietsnn-bf16", "dietsnn-compile",
           "dietsnn-triton")
SJ = ("spikingjelly", "spikingjelly-triton", "spikingjelly-cupy", "spikingjelly-cuda")
PEERS = (*SJ, "snntorch", "norse")
DENSE = ("ann-TxB", "ann-BxT")
KNOWN = (*DIETSNN, *PEERS, *DENSE)
MODIFIERS = ("bf16", "graph")  # NAME+bf16: forward under bf16 autocast; NAME+graph: CUDA graph
DEFAULT_CPU = ("dietsnn,dietsnn-eager,dietsnn-notune,dietsnn-bf16,spikingjelly,snntorch,norse,"
               "ann-TxB,ann-BxT")
DEFAULT_CUDA = ("dietsnn,dietsnn-triton,dietsnn-triton+bf16,dietsnn-triton+graph,dietsnn-eager,"
                "dietsnn-eager+bf16,spikingjelly,spikingjelly-triton,spikingjelly-cupy,"
                "spikingjelly-cuda,snntorch,norse,ann-TxB,ann-TxB+bf16,ann-BxT,ann-BxT+bf16")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
WARMUP_MEMORY_STEPS = 3  # peak memory is read after the first 3 training steps (compile included)


class Skip(Exception):
    """A contender that cannot run here (library missing, backend unavailable)."""


@dataclass
class Contender:
    """A network and how to run it: `forward` maps the prepared input to [B, C] logits."""

    net: nn.Module
    forward: Callable[[Tensor], Tensor]
    version: str
    prepare: Callable[[Tensor], Tensor] = lambda x: x  # outside the timing (ann-TxB: repeat)
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# contenders


def split_name(name: str) -> tuple[str, bool, bool]:
    """`BASE[+bf16][+graph]` -> (BASE, bf16, graph); `dietsnn-bf16` is `dietsnn+bf16`.
    Raises ValueError for an unknown base or modifier."""
    base, *mods = name.split("+")
    if base == "dietsnn-bf16":
        base, mods = "dietsnn", [*mods, "bf16"]
    bad = [m for m in mods if m not in MODIFIERS]
    if base not in KNOWN or bad or len(set(mods)) != len(mods):
        raise ValueError(f"unknown contender {name!r}")
    return base, "bf16" in mods, "graph" in mods


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


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


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
    ver = _version("spikingjelly")
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


def build_snntorch(ann: nn.Module, T: int, device: torch.device) -> Contender:
    """snnTorch: Leaky with learn_beta and learn_threshold, subtract reset, per-step loop."""
    try:
        import snntorch as snn
        from snntorch import utils
    except ImportError as e:
        raise Skip(f"snntorch not importable: {e}") from e
    mods: list[nn.Module] = []
    for m in ann.units():
        if isinstance(m, nn.ReLU):
            mods.append(snn.Leaky(beta=0.9, learn_beta=True, learn_threshold=True,
                                  reset_mechanism="subtract", init_hidden=True))
        elif isinstance(m, dietsnn.Dropout):
            mods.append(nn.Dropout(m.p))
        else:
            mods.append(copy.deepcopy(m))
    net = nn.Sequential(*mods).to(device)

    def forward(x: Tensor) -> Tensor:
        utils.reset(net)
        return torch.stack([net(x) for _ in range(T)]).sum(0)
    return Contender(net, forward, _version("snntorch"))


def build_norse(ann: nn.Module, T: int, device: torch.device) -> Contender:
    """Norse: LIFBoxCell (no synaptic current) with learned tau_mem_inv (dt=1, 0.5 at first:
    SpikingJelly's tau=2) and threshold, subtract reset, SuperSpike surrogate, per-step loop."""
    try:
        from norse.torch import LIFBoxCell, LIFBoxParameters
        from norse.torch.functional.reset import reset_subtract
    except ImportError as e:
        raise Skip(f"norse not importable: {e} (setup_peers.sh installs it with nir, nirtorch)"
                   ) from e

    class NorseLIF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tau_mem_inv = nn.Parameter(torch.tensor(0.5))
            self.v_th = nn.Parameter(torch.tensor(1.0))
            p = LIFBoxParameters(tau_mem_inv=self.tau_mem_inv, v_th=self.v_th,
                                 reset_method=reset_subtract)
            self.cell = LIFBoxCell(p, dt=1.0)
            self.state: Any = None

        def forward(self, x: Tensor) -> Tensor:
            z, self.state = self.cell(x, self.state)
            return z

    mods: list[nn.Module] = []
    for m in ann.units():
        if isinstance(m, nn.ReLU):
            mods.append(NorseLIF())
        elif isinstance(m, dietsnn.Dropout):
            mods.append(nn.Dropout(m.p))
        else:
            mods.append(copy.deepcopy(m))
    net = nn.Sequential(*mods).to(device)
    lifs = [m for m in net if isinstance(m, NorseLIF)]

    def forward(x: Tensor) -> Tensor:
        for m in lifs:
            m.state = None
        out = net(x)
        for _ in range(T - 1):
            out = out + net(x)
        return out
    return Contender(net, forward, _version("norse"))


def build_ann_form(name: str, ann: nn.Module, T: int, device: torch.device) -> Contender:
    net = copy.deepcopy(ann).to(device)
    if name == "ann-TxB":
        def forward(xt: Tensor) -> Tensor:
            return net(xt).view(T, -1, C).sum(0)
        return Contender(net, forward, torch.__version__,
                         prepare=lambda x: x.repeat(T, *([1] * (x.dim() - 1))))

    def forward_bt(x: Tensor) -> Tensor:
        out = net(x)
        for _ in range(T - 1):
            out = out + net(x)
        return out
    return Contender(net, forward_bt, torch.__version__)


def build(name: str, arch: str, T: int, device: torch.device,
          stack: contextlib.ExitStack) -> Contender:
    """The contender `name` with the initial weights of `torch.manual_seed(0); build_ann(arch)`."""
    if name in DIETSNN:
        return build_dietsnn(name, arch, T, device, stack)
    torch.manual_seed(0)
    ann = dietsnn.build_ann(arch)
    if name in SJ:
        return build_spikingjelly(name, ann, T, device)
    if name == "snntorch":
        return build_snntorch(ann, T, device)
    if name == "norse":
        return build_norse(ann, T, device)
    if name in DENSE:
        return build_ann_form(name, ann, T, device)
    raise Skip(f"unknown contender (known: {', '.join(KNOWN)})")


# --------------------------------------------------------------------------------------------
# measurements inside a worker


def _proc_status(key: str) -> int | None:
    """A /proc/self/status field in bytes (VmRSS, VmHWM), None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def _malloc_in_use() -> int | None:
    """Bytes glibc's malloc has handed out and not taken back (mallinfo2), None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    m = libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


def _is_tuned() -> bool | None:
    """dietsnn.runtime.is_tuned() where this dietsnn has it."""
    is_tuned = getattr(importlib.import_module("dietsnn.runtime"), "is_tuned", None)
    return bool(is_tuned()) if is_tuned is not None else None


MB = 2**20


def _autocast(forward: Callable[[Tensor], Tensor], device: torch.device
              ) -> Callable[[Tensor], Tensor]:
    """`forward` under bf16 autocast (float32 master weights), logits back in float32."""
    def run(x: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = forward(x)
        return out.float()
    return run


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """One contender in this (fresh) process; the measurements as a dict."""
    name, T, B = args.worker, args.timesteps, args.batch
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device")
    torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    base, bf16, graph = split_name(name)
    if graph and not cuda:
        raise Skip("CUDA graphs: only with --device cuda")
    rec: dict[str, Any] = {"worker": name, "timesteps": T}
    with contextlib.ExitStack() as stack:
        c = build(base, args.arch, T, device, stack)
        rec["version"] = c.version
        rec.update(c.info)
        if bf16:
            c.forward = _autocast(c.forward, device)
        cfg = dietsnn.build_ann(args.arch).config
        ch, size = cfg.get("in_channels", 1), cfg.get("image_size", 28)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(B, ch, size, size, generator=g).to(device)
        y = torch.randint(0, C, (B,), generator=g).to(device)
        xin = c.prepare(x)
        # capturable: the optimiser's step stays on the GPU (a CUDA graph replays it)
        opt = torch.optim.Adam(c.net.parameters(), lr=1e-4, **({"capturable": True} if graph
                                                                else {}))
        c.net.train()

        def body() -> None:
            loss = F.cross_entropy(c.forward(xin).float(), y)
            opt.zero_grad(set_to_none=not graph)
            loss.backward()
            opt.step()

        def step() -> float:
            sync()
            t0 = time.perf_counter()
            body()
            sync()
            return time.perf_counter() - t0

        # memory of the first training steps, compile included
        gc.collect()
        rss_rest, hwm_before = _proc_status("VmRSS:"), _proc_status("VmHWM:")
        rec["hwm_reset"] = _reset_peak_rss()
        if cuda:
            sync()
            cuda_rest = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        if graph:  # warm-up on a side stream, then the whole step captured and replayed
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                first = [step() for _ in range(WARMUP_MEMORY_STEPS)]
            torch.cuda.current_stream().wait_stream(side)
            cuda_graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(cuda_graph):
                    body()
            except RuntimeError as e:
                raise Skip(f"CUDA graph capture failed: {str(e).splitlines()[0][:200]}") from e
            body = cuda_graph.replay  # noqa: F811 -- the timed steps replay the graph
        else:
            first = [step() for _ in range(WARMUP_MEMORY_STEPS)]
        if "triton_calls" in c.info:  # counted during the warm-up steps, after rec was filled
            rec["triton_calls"] = c.info["triton_calls"]
        if rec.get("triton_calls") == 0:
            raise Skip("the neurons did not reach the Triton kernels (this dietsnn routes CUDA "
                       "tensors elsewhere)")
        hwm = _proc_status("VmHWM:")
        rec["first_steps_s"] = first
        rec["rss_rest_mb"] = rss_rest / MB if rss_rest is not None else None
        if hwm is not None and rss_rest is not None:  # whole process; above the rest level
            rec["peak_rss_mb"] = max(hwm, hwm_before or 0) / MB
            rec["peak_above_rest_mb"] = (hwm - rss_rest) / MB if rec["hwm_reset"] else None
        if cuda:
            rec["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / MB
            rec["cuda_peak_above_rest_mb"] = rec["cuda_peak_mb"] - cuda_rest / MB

        for _ in range(max(0, args.warmup - WARMUP_MEMORY_STEPS)):
            step()
        times = [step() for _ in range(args.steps)]
        rec["step_s"] = times
        rec["train_ms"] = statistics.median(times) * 1000
        if base in DIETSNN:  # the allocator tuning as it stands while the SNN trains
            rec["allocator_tuned"] = _is_tuned()

        if not args.no_held:  # memory kept from the end of forward to the start of backward
            gc.collect()
            sync()
            before = torch.cuda.memory_allocated(device) if cuda else _malloc_in_use()
            loss = F.cross_entropy(c.forward(xin).float(), y)
            sync()
            after = torch.cuda.memory_allocated(device) if cuda else _malloc_in_use()
            loss.backward()
            opt.zero_grad(set_to_none=True)
            del loss
            rec["held_mb"] = ((after - before) / MB if before is not None and after is not None
                              else None)

        if not args.no_infer:
            c.net.eval()
            xi = c.prepare(torch.randn(args.infer_batch, *x.shape[1:], generator=g).to(device))
            per: list[float] = []
            with torch.no_grad():
                for i in range(1 + args.infer_batches):  # the first compiles the eval path
                    sync()
                    t0 = time.perf_counter()
                    c.forward(xi)
                    sync()
                    if i:
                        per.append(time.perf_counter() - t0)
            rec["infer_ips"] = args.infer_batch / statistics.median(per)
    rec["threads"] = torch.get_num_threads()
    return rec


# --------------------------------------------------------------------------------------------
# the parent: machine, rounds of fresh processes, summary


def machine_info(device: str, threads: int) -> dict[str, Any]:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and model in ("?", "", "x86_64"):
                    model = v.strip()
                elif k in ("flags", "Features") and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model, "cpus": os.cpu_count(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "torch": torch.__version__, "python": platform.python_version(),
        "libc": " ".join(platform.libc_ver()), "threads": threads, "device": device,
        "c_compiler": native.compiler(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "dietsnn": os.path.dirname(os.path.abspath(dietsnn.__file__)),
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # dietsnn's checkout
        git = ["git", "-C", info["dietsnn"]]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True).stdout.strip()
        info["commit"] = (head + ("+uncommitted changes" if dirty else "")) or None
    return info


def spawn(name: str, args: argparse.Namespace, timesteps: int, infer: bool = True,
          held: bool = True) -> dict[str, Any]:
    """Run one contender in a fresh process; its record, or {"skipped"/"failed": why}."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--device", args.device,
           "--arch", args.arch, "--timesteps", str(timesteps), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--infer-batch", str(args.infer_batch),
           "--infer-batches", str(args.infer_batches)]
    if not infer:
        cmd.append("--no-infer")
    if not held or args.no_held:
        cmd.append("--no-held")
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if args.compile_cache == "fresh":  # empty inductor, Triton and dietsnn caches of its own
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-inductor-"))
            env["TORCHINDUCTOR_CACHE_DIR"] = tmp
            env["TRITON_CACHE_DIR"] = os.path.join(tmp, "triton")
            env["DIETSNN_CACHE_DIR"] = os.path.join(tmp, "dietsnn")
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                 timeout=args.worker_timeout)
        except subprocess.TimeoutExpired:
            return {"worker": name, "failed": f"timed out after {args.worker_timeout} s"}
    for line in reversed(res.stdout.strip().splitlines()):
        if line.startswith('{"worker"'):
            return json.loads(line)
    tail = " | ".join(res.stderr.strip().splitlines()[-3:])
    return {"worker": name, "failed": f"exit {res.returncode}: {tail}"}


def _median(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's rounds: step times pooled (median), the rest median over rounds."""
    steps = [t for r in records for t in r.get("step_s", [])]
    out: dict[str, Any] = {
        "version": records[0].get("version"),
        "train_ms": statistics.median(steps) * 1000 if steps else None,
        "train_ms_rounds": [r.get("train_ms") for r in records],
        "first_step_s_rounds": [r.get("first_steps_s", [None])[0] for r in records],
    }
    for k in ("infer_ips", "peak_rss_mb", "peak_above_rest_mb", "rss_rest_mb", "held_mb",
              "cuda_peak_mb", "cuda_peak_above_rest_mb"):
        out[k] = _median([r.get(k) for r in records])
    for k in ("backend", "implementation", "allocator_tuned", "note", "triton_calls"):
        if k in records[0]:
            out[k] = records[0][k]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(results: dict[str, dict[str, Any]], device: str) -> dict[str, Any]:
    """Reference points (fastest peer, dense limit, SpikingJelly's peak) and per-row ratios."""
    ran = {k: v for k, v in results.items() if v.get("train_ms") is not None}

    def fastest_of(names: list[str]) -> str | None:
        return min(names, key=lambda k: ran[k]["train_ms"]) if names else None

    peers = [k for k in ran if split_name(k)[0] in PEERS]
    fastest = fastest_of(peers)
    fastest_sj = fastest_of([k for k in peers if split_name(k)[0] in SJ])
    inf_peers = [k for k in peers if ran[k].get("infer_ips")]
    fastest_inf = max(inf_peers, key=lambda k: ran[k]["infer_ips"]) if inf_peers else None
    # the dense limit of each precision: the faster ANN form at that precision
    dense = {bf: fastest_of([k for k in ran if split_name(k)[0] in DENSE
                             and split_name(k)[1] == bf]) for bf in (False, True)}
    dense_name = dense[False]
    mem_key = "cuda_peak_mb" if device == "cuda" else "peak_rss_mb"
    above_key = "cuda_peak_above_rest_mb" if device == "cuda" else "peak_above_rest_mb"
    sj = [k for k in SJ if k in ran and ran[k].get(mem_key)]
    sj_ref = sj[0] if sj else None
    ref = {
        "fastest_peer": fastest, "fastest_peer_inference": fastest_inf,
        "dense_limit": dense_name, "dense_limit_bf16": dense[True],
        "fastest_spikingjelly": fastest_sj, "memory_reference": sj_ref, "memory_key": mem_key,
        "memory_above_key": above_key,
        "peers_ran": peers,
    }
    rows = []
    for k, v in ran.items():
        dn = dense[split_name(k)[1]] or dense_name  # the same precision's, where it ran
        rows.append({
            "contender": k, **v,
            "train_vs_fastest_peer": _ratio(v["train_ms"], fastest and ran[fastest]["train_ms"]),
            "train_vs_fastest_spikingjelly": _ratio(v["train_ms"],
                                                    fastest_sj and ran[fastest_sj]["train_ms"]),
            "train_vs_dense_limit": _ratio(v["train_ms"], dn and ran[dn]["train_ms"]),
            "infer_vs_fastest_peer": _ratio(v.get("infer_ips"),
                                            fastest_inf and ran[fastest_inf]["infer_ips"]),
            "peak_vs_spikingjelly": _ratio(v.get(mem_key), sj_ref and ran[sj_ref][mem_key]),
            "peak_above_rest_vs_spikingjelly": _ratio(v.get(above_key),
                                                      sj_ref and ran[sj_ref].get(above_key)),
        })
    return {"reference": ref, "rows": rows}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(meta: dict[str, Any], summary: dict[str, Any],
                 skipped: dict[str, str], out: Any = sys.stdout) -> None:
    m, ref = meta["machine"], summary["reference"]
    flags = ", ".join(f"{f} {'yes' if ok else 'no'}" for f, ok in m["cpu_flags"].items())
    p = print
    p(f"\nCPU: {m['cpu']} ({m['cpus']} CPUs; {flags}; torch sees {m['torch_cpu_capability']})",
      file=out)
    dev = m["device"] + (f" ({m['gpu']}, CUDA {m['cuda']})" if m.get("gpu") else "")
    s = meta["settings"]
    p(f"torch {m['torch']}  threads={m['threads']}  device={dev}  arch={s['arch']}  "
      f"T={s['timesteps']}  B={s['batch']}  float32 (+bf16: autocast)  {s['steps']} timed steps "
      f"x {s['rounds']} rounds, fresh process per contender per round, interleaved  compile cache: "
      f"{s['compile_cache']}", file=out)
    p(f"dietsnn {m['dietsnn']} at commit {m.get('commit') or '? (not a git checkout)'}",
      file=out)
    if m["malloc_env"]:
        p(f"note: MALLOC_* set in the environment: {m['malloc_env']}", file=out)
    cuda = m["device"] == "cuda"
    mem = "GPU peak MB" if cuda else "peak RSS MB"
    head = (f"{'contender':<20}{'train ms':>10}{'/peer':>7}{'/dense':>8}{'infer img/s':>13}"
            f"{'/peer':>7}{mem:>13}{'/SJ':>6}{'above rest':>12}{'/SJ':>6}{'held MB':>9}"
            f"{'1st step s':>12}")
    p(head, file=out)
    for r in summary["rows"]:
        p(f"{r['contender']:<20}{_fmt(r['train_ms'], '.1f'):>10}"
          f"{_fmt(r['train_vs_fastest_peer'], '.2f'):>7}{_fmt(r['train_vs_dense_limit'], '.2f'):>8}"
          f"{_fmt(r.get('infer_ips'), '.0f'):>13}{_fmt(r['infer_vs_fastest_peer'], '.2f'):>7}"
          f"{_fmt(r.get(ref['memory_key']), '.0f'):>13}{_fmt(r['peak_vs_spikingjelly'], '.2f'):>6}"
          f"{_fmt(r.get(ref['memory_above_key']), '.0f'):>12}"
          f"{_fmt(r['peak_above_rest_vs_spikingjelly'], '.2f'):>6}"
          f"{_fmt(r.get('held_mb'), '.1f'):>9}"
          f"{_fmt(_median(r['first_step_s_rounds']), '.1f'):>12}", file=out)
    p(f"fastest peer (training): {ref['fastest_peer']}; fastest peer (inference): "
      f"{ref['fastest_peer_inference']}; dense limit: {ref['dense_limit']}"
      + (f" (bf16: {ref['dense_limit_bf16']})" if ref.get("dense_limit_bf16") else "")
      + "; memory ratio "
      f"against: {ref['memory_reference']}; peers that ran: {', '.join(ref['peers_ran']) or '-'}",
      file=out)
    for r in summary["rows"]:
        extra = [f"{k}={r[k]}" for k in ("version", "backend", "implementation", "triton_calls",
                                         "allocator_tuned", "note") if r.get(k) is not None]
        p(f"  {r['contender']}: {', '.join(extra)}", file=out)
    for k, why in skipped.items():
        p(f"  {k}: skipped: {why}", file=out)
    rows = {r["contender"]: r for r in summary["rows"]}
    if "dietsnn" in rows:
        d = rows["dietsnn"]
        p("library defaults (dietsnn) against the engine's targets:", file=out)
        for label, v, op, target in (
                ("train / fastest peer", d["train_vs_fastest_peer"], "<=", 0.8),
                ("train / dense limit", d["train_vs_dense_limit"], "<=", 1.0),
                ("peak memory / SpikingJelly", d["peak_vs_spikingjelly"], "<=", 0.5),
                ("  the same, above rest", d["peak_above_rest_vs_spikingjelly"], "<=", 0.5),
                ("inference / fastest peer", d["infer_vs_fastest_peer"], ">=", 2.0)):
            ok = "n/a" if v is None else ("met" if (v <= target if op == "<=" else v >= target)
                                          else "NOT met")
            p(f"  {label:<28}{_fmt(v, '.2f'):>6} {op} {target:.2f}  {ok}", file=out)
    for name in ("dietsnn-triton", "dietsnn-triton+bf16", "dietsnn-triton+graph"):
        if name not in rows:
            continue
        d = rows[name]
        p(f"{name} against the GPU engine's targets (dense limit of the same precision):",
          file=out)
        for label, v, target in (
                ("train / dense limit", d["train_vs_dense_limit"], 1.5),
                ("train / fastest SpikingJelly", d["train_vs_fastest_spikingjelly"], 0.5)):
            ok = "n/a" if v is None else ("met" if v <= target else "NOT met")
            p(f"  {label:<28}{_fmt(v, '.2f'):>6} <= {target:.2f}  {ok}", file=out)


def run_scaling(args: argparse.Namespace, ts: list[int]) -> dict[int, dict[str, Any]]:
    """dietsnn's step time against T: a fresh process per T, the T values interleaved."""
    recs: dict[int, list[dict[str, Any]]] = {t: [] for t in ts}
    for r in range(args.rounds):
        k = r % len(ts)
        for t in ts[k:] + ts[:k]:
            rec = spawn("dietsnn", args, t, infer=False, held=False)
            if "step_s" in rec:
                recs[t].append(rec)
            print(f"scaling round {r + 1}/{args.rounds}: T={t} "
                  f"{_fmt(rec.get('train_ms'), '.1f')} ms/step {rec.get('failed', '')}",
                  file=sys.stderr)
    return {t: aggregate(v) for t, v in recs.items() if v}


def print_scaling(scal: dict[int, dict[str, Any]], out: Any = sys.stdout) -> None:
    ts = sorted(scal)
    print("\ndietsnn step time against T (fresh process per T, interleaved)", file=out)
    lo, hi = ts[0], ts[-1]
    slope = ((scal[hi]["train_ms"] - scal[lo]["train_ms"]) / (hi - lo)) if hi > lo else 0.0
    for t in ts:
        ms = scal[t]["train_ms"]
        line = scal[lo]["train_ms"] + slope * (t - lo)
        print(f"T={t:<3d} {ms:8.1f} ms/step  {ms / t:6.1f} ms per timestep  "
              f"(line through T={lo} and T={hi}: {line:6.1f})", file=out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg_small", help="vgg_small (default) or vgg5, ...")
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per worker")
    p.add_argument("--warmup", type=int, default=WARMUP_MEMORY_STEPS,
                   help=f"warm-up steps before timing (at least {WARMUP_MEMORY_STEPS}: the "
                        "memory is read after those; the first compiles)")
    p.add_argument("--rounds", type=int, default=5,
                   help="each contender once per round, in a fresh process, order rotated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated from {', '.join(KNOWN)}; default on CPU: "
                        f"{DEFAULT_CPU}; on CUDA: {DEFAULT_CUDA}")
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--infer-batches", type=int, default=3, help="timed inference batches")
    p.add_argument("--compile-cache", choices=("fresh", "shared"), default="fresh",
                   help="fresh: every worker starts with empty inductor and dietsnn caches (compile "
                        "included in every round); shared: the user's cache (warm starts)")
    p.add_argument("--scaling", action="store_true",
                   help="also dietsnn's step time against T (see --scaling-timesteps)")
    p.add_argument("--scaling-timesteps", default="1,2,5,10,20")
    p.add_argument("--json", help="write the machine, settings, raw and summarised results here")
    p.add_argument("--worker-timeout", type=int, default=3600, help="seconds per worker")
    p.add_argument("--no-held", action="store_true", help="skip the held-for-backward measure")
    p.add_argument("--no-infer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)  # child mode: one contender, one JSON line
    args = p.parse_args(argv)
    if args.warmup < WARMUP_MEMORY_STEPS:
        p.error(f"--warmup must be at least {WARMUP_MEMORY_STEPS}")
    if args.steps < 1 or args.rounds < 1 or args.infer_batches < 1:
        p.error("--steps, --rounds and --infer-batches must be at least 1")
    return args


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Libraries' prints go to stderr, so the worker's stdout is its one JSON line."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def _valid(name: str) -> bool:
    try:
        split_name(name)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        try:
            with _stdout_to_stderr():
                rec = run_worker(args)
        except Skip as e:
            rec = {"worker": args.worker, "skipped": str(e)}
        print(json.dumps(rec))
        return 0

    names = (args.contenders or (DEFAULT_CUDA if args.device == "cuda" else DEFAULT_CPU))
    names_l = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names_l if not _valid(n)]
    if unknown:
        print(f"unknown contenders: {', '.join(unknown)} (known: {', '.join(KNOWN)}, each "
              f"optionally +{' +'.join(MODIFIERS)})", file=sys.stderr)
        return 2
    meta: dict[str, Any] = {"machine": machine_info(args.device, args.threads),
                            "settings": {k: v for k, v in vars(args).items()
                                         if k not in ("worker", "no_infer", "json")}}
    meta["settings"]["contenders"] = names_l
    if args.device == "cuda" and not torch.cuda.is_available():
        why = (f"--device cuda: no CUDA device here (torch {torch.__version__}, built with CUDA "
               f"{torch.version.cuda}); nothing run")
        print(why)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**meta, "skipped_run": why}, f, indent=1)
        return 0

    raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names_l}
    skipped: dict[str, str] = {}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        k = r % len(names_l)
        for name in names_l[k:] + names_l[:k]:
            if name in skipped:
                continue
            rec = spawn(name, args, args.timesteps)
            if "skipped" in rec or "failed" in rec:
                skipped[name] = rec.get("skipped") or f"failed: {rec['failed']}"
                print(f"round {r + 1}/{args.rounds}: {name}: {skipped[name]}", file=sys.stderr)
                continue
            raw[name].append(rec)
            print(f"round {r + 1}/{args.rounds}: {name:<20} {rec['train_ms']:8.1f} ms/step  "
                  f"first step {rec['first_steps_s'][0]:.1f} s  "
                  f"({time.perf_counter() - t_start:.0f} s so far)", file=sys.stderr)
    results = {n: aggregate(v) for n, v in raw.items() if v and n not in skipped}
    summary = summarise(results, args.device)
    print_report(meta, summary, skipped)
    scal = None
    if args.scaling:
        ts = [int(t) for t in args.scaling_timesteps.split(",")]
        scal = run_scaling(args, ts)
        if scal:
            print_scaling(scal)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, **summary, "skipped": skipped, "raw": raw,
                       "scaling": scal}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
