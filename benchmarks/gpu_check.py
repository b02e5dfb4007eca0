"""The GPU engine on a real GPU: the neuron operators on CUDA tensors (served by the Triton
kernels) against the C kernels on the CPU and the PyTorch loops on the GPU, opcheck on CUDA,
torch.compile of a converted SNN on CUDA, and bf16 autocast. One line per check, exit status 1
if any check fails.

    PYTHONPATH=src python3 benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

import dietsnn
from dietsnn.functional import engine, ops

FAILED: list[str] = []


def report(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}  {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def snn(T: int, arch: str = "vgg_small", shape: tuple[int, ...] = (1, 28, 28)) -> torch.nn.Module:
    """A converted network with leaks and thresholds that make every layer fire (no dropout, so
    CPU and GPU see the same network)."""
    torch.manual_seed(0)
    net = dietsnn.ann_to_snn(dietsnn.build_ann(arch, in_channels=shape[0], image_size=shape[1],
                                                dropout=0.0), T, threshold=0.05)
    with torch.no_grad():
        for i, (_, m) in enumerate(dietsnn.layers.lif_layers(net)):
            m.leak.fill_(0.9)
            m.threshold.fill_(0.05 * (1 + i % 3))
    return net


def step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str):
    net.zero_grad()
    with dietsnn.use_engine(name):
        out = net(x)
        loss = F.cross_entropy(out, y)
        loss.backward()
    return out.detach(), loss.detach(), [p.grad.detach().clone() for p in net.parameters()]


def check_step(arch: str, T: int, B: int, shape: tuple[int, ...]) -> None:
    """A training step on the GPU through the Triton kernels against the PyTorch loops on the
    GPU (the same convolutions: a strict comparison), and against the C kernels on the CPU,
    where it holds only for shallow networks: cuDNN sums the convolutions in another order, and
    in a deep network with low thresholds one flipped spike changes everything after it (on the
    CPU, a 1e-7 relative change of vgg9's input moves its output by 7%)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, *shape, generator=g)
    y = torch.randint(0, 10, (B,), generator=g)
    res = {"cpu": step(snn(T, arch, shape).train(), x, y, "native")}
    served: list[str] = []
    for name in ("native", "eager"):
        net = snn(T, arch, shape).cuda().train()
        orig = ops.kernels

        def traced(t, orig=orig):
            k = orig(t)
            served.append(f"{name}:{getattr(k, '__name__', 'loops').rsplit('.', 1)[-1]}")
            return k
        ops.kernels = traced
        try:
            res[name] = step(net, x.cuda(), y.cuda(), name)
        finally:
            ops.kernels = orig

    def diff(a, b) -> tuple[float, float]:
        return rel(a[0], b[0]), max(rel(u, v) for u, v in zip(a[2], b[2]))

    do, dg = diff(res["native"], res["eager"])
    routes = sorted(set(served))
    report(f"{arch} T={T} B={B} train step cuda: triton vs loops", do < 1e-5 and dg < 1e-3
           and routes == ["eager:loops", "native:triton_lif"],
           f"out {do:.1e} grads {dg:.1e} loss {float(res['native'][1]):.6f}/"
           f"{float(res['eager'][1]):.6f} routes {routes}")
    co, cg = diff(res["native"], res["cpu"])
    print(f"     {arch} T={T} B={B} cuda/triton vs cpu/native: out {co:.1e} grads {cg:.1e} "
          f"loss {float(res['native'][1]):.6f}/{float(res['cpu'][1]):.6f}", flush=True)


def check_opcheck() -> None:
    dev = "cuda"
    g = torch.Generator().manual_seed(0)
    for steps in (0, 3):
        x = (torch.randn((40,) if steps else (5, 40), generator=g) * 1.5).to(dev).requires_grad_()
        leak = torch.tensor(0.9, device=dev, requires_grad=True)
        v = torch.tensor(0.5, device=dev, requires_grad=True)
        try:
            with engine.scope("native"):
                torch.library.opcheck(torch.ops.dietsnn.lif_forward.default,
                                      (x, leak, v, None, steps, not steps, 0.3, "atan"))
            report(f"opcheck lif_forward cuda steps={steps}", True)
        except Exception as e:  # noqa: BLE001 -- reported, not raised
            report(f"opcheck lif_forward cuda steps={steps}", False, repr(e)[:300])
    for static in (False, True):
        T, B = 3, 2
        x = (torch.randn((B if static else T * B, 3, 7, 6), generator=g) * 2).to(dev)
        keep = (torch.rand(B, 3, 7, 6, generator=g) < 0.8).to(dev)
        leak = torch.tensor(0.85, device=dev, requires_grad=True)
        v = torch.tensor(0.6, device=dev, requires_grad=True)
        try:
            with engine.scope("native"):
                torch.library.opcheck(torch.ops.dietsnn.lif_pool_forward.default,
                                      (x.requires_grad_(), leak, v, keep, 1.25, 2, T, static,
                                       not static, 0.3, "sigmoid"))
            report(f"opcheck lif_pool_forward cuda static={static}", True)
        except Exception as e:  # noqa: BLE001
            report(f"opcheck lif_pool_forward cuda static={static}", False, repr(e)[:300])


def check_pool_keep() -> None:
    """The fused block with a dropout mask: the same mask on both devices."""
    g = torch.Generator().manual_seed(2)
    T, B = 5, 16
    x = torch.randn(T * B, 32, 14, 14, generator=g) * 2
    keep = torch.rand(B, 32, 14, 14, generator=g) < 0.8
    w = torch.randn(T * B, 32, 7, 7, generator=g)
    res = []
    for dev in ("cpu", "cuda"):
        xi = x.detach().to(dev).requires_grad_()
        lk = torch.tensor(0.8, device=dev, requires_grad=True)
        th = torch.tensor(0.5, device=dev, requires_grad=True)
        with engine.scope("native"):
            out = torch.ops.dietsnn.lif_pool_forward(xi, lk, th, keep.to(dev), 1.25, 2, T, False,
                                                     True, 0.3, "linear")[0]
            (out * w.to(dev)).sum().backward()
        res.append((out, xi.grad, lk.grad, th.grad))
    (a, b) = res
    d = [rel(u, v) for u, v in zip(b, a)]
    report("fused lif->dropout->pool cuda vs cpu (mask given)", d[0] == 0 and max(d[1:]) < 1e-4,
           f"out {d[0]:.1e} dx {d[1]:.1e} dleak {d[2]:.1e} dthr {d[3]:.1e}")


def check_compile() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 28, 28, generator=g).cuda()
    y = torch.randint(0, 10, (8,), generator=g).cuda()
    net = snn(3).cuda().train()
    ref = step(net, x, y, "native")
    try:
        comp = torch.compile(net)
        t0 = time.perf_counter()
        out, loss, grads = step(comp, x, y, "native")
        net.zero_grad()
        out, loss, grads = step(comp, x, y, "native")
        d = max(rel(a, b) for a, b in zip(grads, ref[2]))
        report("torch.compile(snn) cuda forward+backward vs eager", rel(out, ref[0]) < 1e-5
               and d < 1e-4, f"out {rel(out, ref[0]):.1e} grads {d:.1e} "
               f"({time.perf_counter() - t0:.1f} s)")
    except Exception as e:  # noqa: BLE001
        report("torch.compile(snn) cuda forward+backward vs eager", False, repr(e)[:400])


def check_autocast() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(16, 1, 28, 28, generator=g).cuda()
    net = snn(3).cuda().eval()
    with torch.no_grad(), dietsnn.use_engine("native"):
        ref = net(x)
        with torch.autocast("cuda", torch.bfloat16):
            out = net(x)
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    report("bf16 autocast forward cuda", bool(torch.isfinite(out).all()),
           f"dtype {out.dtype} argmax agreement {agree:.3f} rel {rel(out.float(), ref):.2e}")


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    # TF32 convolutions (cuDNN's default) round the currents to 10 bits: spikes near the
    # threshold flip and the comparisons with the CPU measure that, not the neuron kernels
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "(TF32 off)", flush=True)
    check_opcheck()
    check_pool_keep()
    check_step("vgg_small", 3, 32, (1, 28, 28))
    check_step("vgg9", 5, 16, (3, 32, 32))
    check_compile()
    check_autocast()
    print(f"{len(FAILED)} failed: {FAILED}" if FAILED else "all checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
