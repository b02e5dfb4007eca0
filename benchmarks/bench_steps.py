"""Time one training step of the default run's two phases on this CPU: the ANN (fp32 or bf16
autocast, contiguous or channels-last memory) and the SNN (fp32 or bf16 autocast, T, batch, with
or without the spike penalty), vgg_small on 28x28, as `dietsnn run` trains them. Prints one JSON
line per variant (median wall and CPU seconds per step over `--steps` after warm-up) and the CPU.

    python benchmarks/bench_steps.py --threads 2 --steps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

import dietsnn
from dietsnn.analysis.energy import SpikeEnergy
from dietsnn.config import ANN_TRAIN, SNN_TRAIN
from dietsnn.evaluation import autocast
from dietsnn.training import make_optimizer


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def time_steps(model, opt, x, y, steps: int, precision: str = "fp32", energy=None) -> dict:
    walls, cpus = [], []
    model.train()
    for i in range(steps + 3):
        t, c = time.perf_counter(), time.process_time()
        if energy is not None:
            energy.reset()
        with autocast(precision):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        if energy is not None:
            loss = loss + 0.02 * energy.cost()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--timesteps", type=int, default=3)
    ap.add_argument("--only", default="ann,snn")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(json.dumps({"cpu": cpu_model(), "threads": a.threads, "torch": torch.__version__}))
    x, y = torch.randn(ANN_TRAIN.batch_size, 1, 28, 28), torch.randint(0, 10, (ANN_TRAIN.batch_size,))
    with dietsnn.use_engine():
        if "ann" in a.only:
            for precision in ("fp32", "bf16"):
                for cl in (False, True):
                    ann = dietsnn.build_ann("vgg_small")
                    fmt = torch.channels_last if cl else torch.contiguous_format
                    ann = ann.to(memory_format=fmt)
                    r = time_steps(ann, make_optimizer(ann, ANN_TRAIN), x.to(memory_format=fmt), y,
                                   a.steps, precision)
                    print(json.dumps({"phase": "ann", "precision": precision,
                                      "channels_last": cl, "batch": len(y), **r}))
        if "snn" in a.only:
            xs, ys = x[:SNN_TRAIN.batch_size], y[:SNN_TRAIN.batch_size]
            for precision in ("fp32", "bf16"):
                for penalty in (False, True):
                    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), a.timesteps)
                    dietsnn.calibrate_thresholds(snn, x, timesteps=10)
                    opt = make_optimizer(snn, SNN_TRAIN)
                    if penalty:
                        with SpikeEnergy(snn) as en:
                            r = time_steps(snn, opt, xs, ys, a.steps, precision, energy=en)
                    else:
                        r = time_steps(snn, opt, xs, ys, a.steps, precision)
                    print(json.dumps({"phase": "snn", "precision": precision,
                                      "timesteps": a.timesteps, "penalty": penalty,
                                      "batch": len(ys), **r}))


if __name__ == "__main__":
    main()
