"""The ANN training step with each ReLU -> Dropout as one operation against the two layers one
by one, in one process, interleaved step by step (so that drift of a shared machine hits both
alike): vgg_small, the default run's batch, Adam, random inputs. A no-op forward hook on every
ReLU is what turns the fusion off (`layers.Sequential` runs hooked layers one by one).

    python benchmarks/ab_relu_dropout.py --threads 2 --steps 60 --precision fp32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import dietsnn
from dietsnn.config import ANN_TRAIN
from dietsnn.evaluation import autocast
from dietsnn.training import make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(ANN_TRAIN.batch_size, 1, 28, 28)
    y = torch.randint(0, 10, (ANN_TRAIN.batch_size,))
    ann = dietsnn.build_ann("vgg_small").train()
    opt = make_optimizer(ann, ANN_TRAIN)
    relus = [m for m in ann.modules() if isinstance(m, torch.nn.ReLU)]
    times: dict[str, list[float]] = {"fused": [], "one by one": []}
    with dietsnn.use_engine():
        for i in range(2 * (a.steps + 3)):
            kind = "fused" if i % 2 == 0 else "one by one"
            hooks = [r.register_forward_hook(lambda *_: None) for r in relus] if i % 2 else []
            t = time.perf_counter()
            with autocast(a.precision):
                out = ann(x)
            loss = F.cross_entropy(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 6:
                times[kind].append(time.perf_counter() - t)
            for h in hooks:
                h.remove()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({"precision": a.precision, "threads": a.threads, "steps": a.steps,
                      "median_s": med, "ratio": med["fused"] / med["one by one"]}))


if __name__ == "__main__":
    main()
