"""Training-step benchmark: dietsnn vs SpikingJelly vs snnTorch on the same network.

The default Fashion-MNIST net (vgg_small; `--arch` for others), T=5, batch 64, float32, a fixed
thread count. Every contender trains the same weights with Adam; rounds are interleaved so that
machine noise hits all of them alike. Printed: median ms per training step, the ANN's step on a
batch of T*B images (the dense-compute limit of the same layers), the ratios, inference images/s
at T, dietsnn's step at T = 1, 2, 5, 10, 20, and, each contender in a process of its own, the
peak memory of training (RSS above the process's level before the first step) and the memory
held for backward.

    .venv-bench/bin/python benchmarks/bench_train.py --steps 10 --rounds 5 --threads 2

Peers are optional and never dependencies of dietsnn: `bash benchmarks/setup_peers.sh` puts
them in `.venv-bench` beside the same torch. Missing peers are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
import dietsnn  # noqa: E402
from dietsnn import runtime  # noqa: E402
from dietsnn.functional import neuron  # noqa: E402

C = 10


def peer_spikingjelly(ann: nn.Module, T: int):
    """SpikingJelly multi-step: ParametricLIFNode (learned tau), soft reset, ATan surrogate."""
    from spikingjelly.activation_based import functional, layer, surrogate
    from spikingjelly.activation_based import neuron as sjn

    def make(m):
        if isinstance(m, nn.ReLU):
            return sjn.ParametricLIFNode(init_tau=2.0, v_reset=None, detach_reset=True,
                                         surrogate_function=surrogate.ATan(), step_mode="m")
        if isinstance(m, nn.Conv2d):
            c = layer.Conv2d(m.in_channels, m.out_channels, 3, 1, 1, bias=False, step_mode="m")
        elif isinstance(m, nn.Linear):
            c = layer.Linear(m.in_features, m.out_features, bias=False, step_mode="m")
        elif isinstance(m, nn.AvgPool2d):
            return layer.AvgPool2d(2, step_mode="m")
        elif isinstance(m, nn.Flatten):
            return layer.Flatten(step_mode="m")
        else:
            return layer.Dropout(m.p, step_mode="m")
        c.weight.data.copy_(m.weight.data)
        return c

    net = nn.Sequential(*[make(m) for m in ann.units()])

    def step(x):
        functional.reset_net(net)
        return net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).sum(0)
    return net, step


def peer_snntorch(ann: nn.Module, T: int):
    """snnTorch: Leaky with learn_beta and learn_threshold, subtract reset, per-step loop."""
    import snntorch as snn
    from snntorch import utils

    mods = []
    for m in ann.units():
        if isinstance(m, nn.ReLU):
            mods.append(snn.Leaky(beta=0.9, learn_beta=True, learn_threshold=True,
                                  reset_mechanism="subtract", init_hidden=True))
        elif isinstance(m, dietsnn.Dropout):
            mods.append(nn.Dropout(m.p))
        else:
            mods.append(copy.deepcopy(m))
    net = nn.Sequential(*mods)

    def step(x):
        utils.reset(net)
        return torch.stack([net(x) for _ in range(T)]).sum(0)
    return net, step


def make_contenders(arch: str, T: int, B: int, names: list[str]):
    """name -> (module, step function, input batch, labels)."""
    torch.manual_seed(0)
    ann = dietsnn.build_ann(arch)
    x, y = torch.randn(B, 1, 28, 28), torch.randint(0, C, (B,))
    out = {}
    for name in names:
        if name in ("dietsnn", "dietsnn-eager"):
            snn = dietsnn.ann_to_snn(ann, T)
            out[name] = (snn, snn, x, y)
        elif name == "dietsnn-bf16":  # the default engine under bf16 autocast
            snn = dietsnn.ann_to_snn(ann, T)

            def bf16(x, snn=snn):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return snn(x).float()
            out[name] = (snn, bf16, x, y)
        elif name == "ann-TxB":
            a = copy.deepcopy(ann)
            out[name] = (a, a, torch.randn(T * B, 1, 28, 28), torch.randint(0, C, (T * B,)))
        else:
            maker = {"spikingjelly": peer_spikingjelly, "snntorch": peer_snntorch}[name]
            try:
                net, step = maker(ann, T)
            except ImportError as e:
                print(f"skip {name}: {e}", file=sys.stderr)
                continue
            out[name] = (net, step, x, y)
    return out


_BACKEND = contextlib.ExitStack()


def use(name: str) -> None:
    """dietsnn's default engine compiles the neuron loops (torch.compile); eager is its fallback
    where no C compiler is present."""
    _BACKEND.close()
    _BACKEND.enter_context(neuron.use_backend("eager" if name == "dietsnn-eager" else "compile"))


def train_steps(net, step, x, y, n: int) -> list[float]:
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = F.cross_entropy(step(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


@torch.no_grad()
def infer_steps(net, step, x, n: int) -> float:
    net.eval()
    t0 = time.perf_counter()
    for _ in range(n):
        step(x)
    return n * x.shape[0] / (time.perf_counter() - t0)


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


def _malloc_in_use() -> int:
    """Bytes the C allocator has handed out and not taken back (glibc's mallinfo2)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return m.uordblks + m.hblkhd


def measure_memory(name: str, arch: str, T: int, B: int, steps: int) -> dict:
    """In a fresh process: peak RSS of `steps` training steps above the resting level after a
    warm-up on a batch of 2 (compiled graphs built, optimiser state made), and the memory held
    between the end of forward and the start of backward (what autograd keeps, plus the output)."""
    use(name)
    net, step, x, y = make_contenders(arch, T, B, [name])[name]
    if name == "ann-TxB":
        xs, ys = x[: 2 * T], y[: 2 * T]
    else:
        xs, ys = x[:2], y[:2]
    train_steps(net, step, xs, ys, 2)
    gc.collect()
    base = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    train_steps(net, step, x, y, steps)
    peak = _status("VmHWM:") - base
    net.train()
    gc.collect()
    before = _malloc_in_use()
    loss = F.cross_entropy(step(x), y)
    held = _malloc_in_use() - before
    loss.backward()
    return {"peak_mb": peak / 2**20, "held_mb": held / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg_small")
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per contender per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--contenders", default="dietsnn,dietsnn-eager,spikingjelly,snntorch,ann-TxB",
                   help="comma-separated; also dietsnn-bf16 (bf16 autocast)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc as it is (by default the timed process keeps freed "
                        "memory, as the dietsnn command does; it applies to every contender)")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--memory-of", help=argparse.SUPPRESS)  # child process: one contender's memory
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    T, B = args.timesteps, args.batch
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.arch, T, B, args.steps)))
        return

    if not args.default_malloc:
        runtime.keep_freed_memory()
    names = args.contenders.split(",")
    cont = make_contenders(args.arch, T, B, names)
    for name, (net, step, x, y) in cont.items():  # warm-up (compiles, allocator)
        use(name)
        train_steps(net, step, x, y, 2)
    times: dict[str, list[float]] = {k: [] for k in cont}
    for r in range(args.rounds):
        for name, (net, step, x, y) in cont.items():
            use(name)
            times[name] += train_steps(net, step, x, y, args.steps)
            gc.collect()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    inf: dict[str, list[float]] = {k: [] for k in cont if k != "ann-TxB"}
    xi = torch.randn(256, 1, 28, 28)
    for _ in range(args.rounds):
        for name in inf:
            use(name)
            net, step = cont[name][:2]
            inf[name].append(infer_steps(net, step, xi, 3))
    ips = {k: statistics.median(v) for k, v in inf.items()}

    malloc = "glibc default" if args.default_malloc else "freed memory kept (all contenders)"
    print(f"\narch={args.arch} T={T} B={B} float32 threads={args.threads} "
          f"steps={args.steps}x{args.rounds} rounds (interleaved)  torch {torch.__version__}  "
          f"malloc: {malloc}")
    peers = [k for k in ms if k in ("spikingjelly", "snntorch")]
    fastest = min(peers, key=ms.get) if peers else None
    dense = ms.get("ann-TxB")
    print(f"{'contender':<16}{'train ms/step':>14}{'/fastest peer':>14}{'/ANN(TxB)':>11}"
          f"{'infer img/s':>13}")
    for k, v in ms.items():
        r_peer = f"{v / ms[fastest]:.2f}" if fastest else "-"
        r_dense = f"{v / dense:.2f}" if dense else "-"
        i = f"{ips[k]:.0f}" if k in ips else "-"
        print(f"{k:<16}{v:14.1f}{r_peer:>14}{r_dense:>11}{i:>13}")
    if peers:
        best = max(ips[k] for k in peers)
        for k in ("dietsnn", "dietsnn-eager"):
            if k in ips:
                print(f"{k} inference / fastest peer = {ips[k] / best:.2f}")

    if not args.no_memory:
        print("\nmemory (each contender in its own process)")
        print(f"{'contender':<16}{'peak MB above rest':>20}{'held for backward MB':>22}")
        mem = {}
        for name in cont:
            cmd = [sys.executable, __file__, "--memory-of", name, "--arch", args.arch,
                   "--timesteps", str(T), "--batch", str(B), "--threads", str(args.threads),
                   "--steps", "3"]
            # a fixed mmap threshold: glibc returns every freed tensor to the OS at once, so the
            # RSS peak is the peak of live memory, not of the allocator's free lists
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if res.returncode:
                print(f"{name:<16} failed: {res.stderr.strip().splitlines()[-1:]}")
                continue
            mem[name] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{name:<16}{mem[name]['peak_mb']:20.1f}{mem[name]['held_mb']:22.1f}")
        if "spikingjelly" in mem:
            for k in ("dietsnn", "dietsnn-eager"):
                if k in mem:
                    sj = mem["spikingjelly"]
                    print(f"{k} / spikingjelly: peak {mem[k]['peak_mb'] / sj['peak_mb']:.2f}, "
                          f"held for backward {mem[k]['held_mb'] / sj['held_mb']:.2f}")

    if not args.no_scaling and "dietsnn" in cont:
        print("\ndietsnn step time against T (T values interleaved over the rounds)")
        use("dietsnn")
        snn, _, x, y = cont["dietsnn"]
        ts = (1, 2, 5, 10, 20)
        per_t: dict[int, list[float]] = {t: [] for t in ts}
        for r in range(args.rounds + 1):  # round 0 compiles the backward for each T
            for t in ts:
                snn.timesteps = t
                got = train_steps(snn, snn, x, y, 2 if r == 0 else max(2, args.steps // 2))
                if r:
                    per_t[t] += got
        snn.timesteps = T
        med = {t: statistics.median(v) * 1000 for t, v in per_t.items()}
        slope = (med[20] - med[1]) / 19
        for t in ts:
            line = med[1] + slope * (t - 1)
            print(f"T={t:<3d} {med[t]:8.1f} ms/step  {med[t] / t:6.1f} ms per timestep  "
                  f"(line through T=1 and T=20: {line:6.1f})")


if __name__ == "__main__":
    main()
