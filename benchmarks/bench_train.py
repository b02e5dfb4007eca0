"""Training-step benchmark: dietsnn vs SpikingJelly vs snnTorch on the default Fashion-MNIST net
(vgg_small), T=5, batch 64, float32, fixed threads, interleaved rounds. Also the ANN step on a
batch of T*B images (the dense-compute limit of the same layers) and dietsnn's step time at
several T.

    python benchmarks/bench_train.py --steps 10 --threads 2

Peers are optional: install them into a separate environment with the same torch, e.g.
`pip install --no-deps spikingjelly snntorch loguru`; missing peers are skipped.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
import dietsnn  # noqa: E402
from dietsnn.functional import neuron  # noqa: E402

T, B, C = 5, 64, 10


def peer_spikingjelly(ann: nn.Module):
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
            return layer.Dropout(0.2, step_mode="m")
        c.weight.data.copy_(m.weight.data)
        return c

    net = nn.Sequential(*[make(m) for m in ann.units()])

    def step(x):
        functional.reset_net(net)
        return net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).sum(0)
    return net, step


def peer_snntorch(ann: nn.Module):
    import snntorch as snn

    mods = []
    for m in ann.units():
        if isinstance(m, nn.ReLU):
            mods.append(snn.Leaky(beta=0.9, learn_beta=True, learn_threshold=True,
                                  reset_mechanism="subtract", init_hidden=True))
        elif isinstance(m, dietsnn.Dropout):
            mods.append(nn.Dropout(0.2))
        else:
            import copy
            mods.append(copy.deepcopy(m))
    net = nn.Sequential(*mods)

    def step(x):
        from snntorch import utils
        utils.reset(net)
        return torch.stack([net(x) for _ in range(T)]).sum(0)
    return net, step


def timed(step, params, x, y, n):
    opt = torch.optim.Adam(params, lr=1e-4)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = F.cross_entropy(step(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:] if n > 2 else times)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def throughput(step, x, n=5):
    t0 = time.perf_counter()
    for _ in range(n):
        step(x)
    return n * x.shape[0] / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="dietsnn with the compiled neuron loops")
    p.add_argument("--only", default=None, help="run one contender (for memory: one per process)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ann = dietsnn.build_ann("vgg_small")
    x, y = torch.randn(B, 1, 28, 28), torch.randint(0, C, (B,))
    neuron.set_backend("compile" if args.compile else "eager")
    contenders = {}
    snn = dietsnn.ann_to_snn(ann, T).train()
    contenders["dietsnn"] = (snn, snn)
    big = torch.randn(T * B, 1, 28, 28)
    big_y = torch.randint(0, C, (T * B,))
    for name, make in (("spikingjelly", peer_spikingjelly), ("snntorch", peer_snntorch)):
        try:
            net, step = make(ann)
            contenders[name] = (net, step)
        except ImportError as e:
            print(f"skip {name}: {e}")
    if args.only:
        contenders = {k: v for k, v in contenders.items() if k == args.only}
    res = {k: [] for k in contenders}
    ann_times = []
    for _ in range(args.rounds):
        for name, (net, step) in contenders.items():
            net.train()
            res[name].append(timed(step, net.parameters(), x, y, args.steps))
            gc.collect()
        if not args.only:
            ann_times.append(timed(ann.train(), ann.parameters(), big, big_y, args.steps))
    print(f"threads={args.threads} T={T} B={B} steps={args.steps} rounds={args.rounds}")
    med = {k: statistics.median(v) * 1000 for k, v in res.items()}
    for k, v in med.items():
        print(f"{k:<14} train step {v:8.1f} ms")
    if ann_times:
        dense = statistics.median(ann_times) * 1000
        print(f"{'ANN T*B':<14} train step {dense:8.1f} ms  (dense-compute limit)")
        for k, v in med.items():
            print(f"{k:<14} / ANN(T*B) = {v / dense:.2f}")
    if args.only:
        print(f"peak RSS {peak_rss_mb():.0f} MB")
    for name, (net, step) in contenders.items():
        net.eval()
        print(f"{name:<14} inference {throughput(step, torch.randn(256, 1, 28, 28)):8.0f} images/s")
    if "dietsnn" in contenders and not args.only:
        for t in (1, 2, 5, 10, 20):
            snn.timesteps = t
            snn.train()
            ms = timed(snn, snn.parameters(), x, y, args.steps) * 1000
            print(f"dietsnn T={t:<3d} train step {ms:8.1f} ms")


if __name__ == "__main__":
    main()
