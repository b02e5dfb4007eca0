"""The worker of `benchmarks/bench_train.py`: one contender, in a fresh process of its own,
trained and timed; the timing and memory measurements (`run_worker`)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from contenders import DIETSNN, C, Skip, build, split_name
from torch import Tensor

import dietsnn

WARMUP_MEMORY_STEPS = 3  # peak memory is read after the first 3 training steps (compile included)


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
