"""Time and peak memory of threshold calibration (what `dietsnn convert` spends before its test
pass), per network, each in a fresh process: the ANN built with its initial weights (seed 0),
converted at T=3, calibrated on `--images` random inputs normalised like CIFAR at `--steps`
calibration steps (percentile 99.7, scale 1). Prints one JSON line per network: seconds (wall
and CPU) and the process's peak RSS before and after calibrating, and the CPU.

    python benchmarks/bench_calibrate.py --archs vgg_small:28,vgg9:32,vgg16:32,resnet20:32 \\
        --images 512 --steps 25 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(arch: str, size: int, images: int, steps: int, threads: int) -> dict:
    import torch

    import dietsnn

    torch.set_num_threads(threads)
    channels = 1 if size == 28 else 3
    torch.manual_seed(0)
    ann = dietsnn.build_ann(arch, 10, channels, size)
    snn = dietsnn.convert(ann, 3)
    x = torch.randn(images, channels, size, size, generator=torch.Generator().manual_seed(0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t, c = time.perf_counter(), time.process_time()
    thr = dietsnn.calibrate_thresholds(snn, x, timesteps=steps, scale=1.0, limit=None)
    return {"arch": arch, "image_size": size, "images": images, "steps": steps,
            "threads": threads, "wall_s": round(time.perf_counter() - t, 2),
            "cpu_s": round(time.process_time() - c, 2), "rss_before_mb": round(before),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "thresholds": [round(v, 5) for v in thr]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="vgg_small:28,vgg9:32,vgg16:32,resnet20:32")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        arch, size = a.one.split(":")
        print(json.dumps(one(arch, int(size), a.images, a.steps, a.threads)))
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    print(json.dumps({"cpu": cpu}), flush=True)
    for spec in a.archs.split(","):
        r = subprocess.run([sys.executable, __file__, "--one", spec, "--images", str(a.images),
                            "--steps", str(a.steps), "--threads", str(a.threads)],
                           capture_output=True, text=True)
        print(r.stdout.strip() or json.dumps({"arch": spec, "error": r.stderr[-300:]}),
              flush=True)


if __name__ == "__main__":
    main()
