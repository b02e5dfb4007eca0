"""Where one training step of the default run's ANN spends its time: torch.profiler's table of
operators (self CPU time) over 5 steps of `vgg_small` at batch 128, after 3 warm-up steps,
under bf16 autocast (`--precision fp32` for float32), as `dietsnn run` trains it.

    python benchmarks/profile_step.py --threads 2
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import dietsnn
from dietsnn.config import ANN_TRAIN
from dietsnn.training import make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--rows", type=int, default=18)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = dietsnn.build_ann("vgg_small").train()
    opt = make_optimizer(model, ANN_TRAIN)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(5):
            step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
