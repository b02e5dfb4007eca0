"""Before/after timing of dietsnn's default training step and inference on the CPU, for two
source trees (e.g. two commits checked out with `git archive`), on the same machine.

Each round runs one fresh process per tree, the order alternating, and each process times
`--steps` training steps (vgg_small, T=5, batch 64, Adam, random inputs, after 3 warm-up steps)
and `--infer` inference batches (eval, no_grad, batch 256), each as wall-clock and as the
process's CPU time (less sensitive to other load on a shared machine with one thread).
`--model custom` times a user's model converted by `dietsnn.convert` instead (conv-BatchNorm-
ReLU-pooling twice, linear-ReLU-dropout-linear, thresholds calibrated on random images);
`--model resnet` a narrow ResNet of dietsnn's rules (one block per stage, 16-128 channels).
The step is the library's default path: inside `dietsnn.use_engine()` where the tree has it,
else the plain loop (older trees: the SNN held the allocator tuning itself).

    python benchmarks/ab_step.py OLD/src NEW/src --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time


def custom_snn():
    import torch
    from torch import nn

    import dietsnn

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                nn.ReLU(), nn.AvgPool2d(2)]

    ann = nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(), nn.Linear(64 * 49, 256),
                        nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10)).eval()
    snn = dietsnn.convert(ann, 5)
    dietsnn.calibrate_thresholds(snn, torch.randn(64, 1, 28, 28), 99.7, 0.5, 5)
    return snn.train()


def worker(steps: int, infer: int, threads: int, model: str = "vgg_small") -> dict:
    import torch
    import torch.nn.functional as F

    import dietsnn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if model == "custom":
        snn = custom_snn()
    elif model == "resnet":  # a narrow ResNet (residual adds), one block per stage
        from dietsnn.models import ResNet

        snn = dietsnn.ann_to_snn(ResNet((1, 1, 1, 1), 10, 1, 28, 0.1, widths=(16, 32, 64, 128),
                                        stem_width=16), 5)
    else:
        snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 5)
    opt = torch.optim.Adam(snn.parameters(), 1e-4)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    xi = torch.rand(256, 1, 28, 28)
    use = getattr(dietsnn, "use_engine", None)
    out: dict = {"train_wall": [], "train_cpu": [], "infer_wall": [], "infer_cpu": []}
    with use() if use else contextlib.nullcontext():
        for i in range(3 + steps):
            w, c = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(snn(x), y).backward()
            opt.step()
            if i >= 3:
                out["train_wall"].append(time.perf_counter() - w)
                out["train_cpu"].append(time.process_time() - c)
        snn.eval()
        with torch.no_grad():
            for i in range(1 + infer):
                w, c = time.perf_counter(), time.process_time()
                snn(xi)
                if i >= 1:
                    out["infer_wall"].append(time.perf_counter() - w)
                    out["infer_cpu"].append(time.process_time() - c)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs="*", help="src folders to compare (first: the baseline)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--infer", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", choices=("vgg_small", "custom", "resnet"), default="vgg_small")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.steps, a.infer, a.threads, a.model)))
        return
    runs: dict[str, dict[str, list[float]]] = {t: {} for t in a.trees}
    for r in range(a.rounds):
        for tree in a.trees if r % 2 == 0 else a.trees[::-1]:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
            cmd = [sys.executable, __file__, "--worker", "--steps", str(a.steps), "--infer",
                   str(a.infer), "--threads", str(a.threads), "--model", a.model]
            res = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True,
                                            check=True).stdout.splitlines()[-1])
            for k, v in res.items():
                runs[tree].setdefault(k, []).extend(v)
            print(f"round {r + 1}: {tree}: train {statistics.median(res['train_wall']):.3f} s "
                  f"wall, {statistics.median(res['train_cpu']):.3f} s cpu", flush=True)
    for tree, res in runs.items():
        print(tree, " ".join(f"{k} {statistics.median(v):.3f} s" for k, v in res.items()))


if __name__ == "__main__":
    main()
