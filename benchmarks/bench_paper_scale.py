"""Per-step time and peak memory of the paper-scale presets' networks on this machine.

    python benchmarks/bench_paper_scale.py --arch vgg16 --image-size 32 --classes 10 --steps 3

ANN step at the preset's ANN batch, SNN BPTT step at T=5, batch 64 (compiled neuron loops).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
import dietsnn  # noqa: E402


def step_time(model, x, y, n):
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    times = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="vgg16")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--ann-batch", type=int, default=128)
    p.add_argument("--snn-batch", type=int, default=64)
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    torch.manual_seed(0)
    ann = dietsnn.build_ann(a.arch, a.classes, 3, a.image_size, 0.2).train()
    s = a.image_size
    t_ann = step_time(ann, torch.randn(a.ann_batch, 3, s, s),
                      torch.randint(0, a.classes, (a.ann_batch,)), a.steps)
    print(f"{a.arch} ANN step, batch {a.ann_batch}: {t_ann * 1000:.0f} ms", flush=True)
    snn = dietsnn.ann_to_snn(ann, a.timesteps).train()
    t_snn = step_time(snn, torch.randn(a.snn_batch, 3, s, s),
                      torch.randint(0, a.classes, (a.snn_batch,)), a.steps)
    print(f"{a.arch} SNN step, T={a.timesteps}, batch {a.snn_batch}: {t_snn * 1000:.0f} ms")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
