"""Threshold calibration with the streamed percentile as the package has it (`currents.TopK`)
against a `topk` merge per part (the form before it, kept here), in one process, interleaved
run by run (so that drift of a shared machine hits both alike): a trained ANN (a run directory
or model.safetensors) converted at T=3, calibrated on the training images `dietsnn convert`
takes (512, 25 steps, percentile 99.7). Both must set the same thresholds, bit for bit.

    python benchmarks/ab_calibrate.py runs/default/ann --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import dietsnn
from dietsnn import checkpoint
from dietsnn.config import DATASET, ConversionConfig
from dietsnn.conversion import currents
from dietsnn.data import load


class MergeEveryPart(currents.TopK):
    """The streamed percentile with one `topk` per part."""

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1).float()
        if self.top.numel() >= self.k:
            x = x[x >= self.top[self.k - 1]]
        pool = torch.cat([self.top.to(x.device), x])
        self.top = pool.topk(min(self.k, pool.numel()), sorted=True).values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("ann", help="ANN run directory or model.safetensors")
    ap.add_argument("--dataset", default=DATASET, help="the ANN's dataset (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ann = checkpoint.load_model(checkpoint.resolve_model_path(a.ann))
    cfg = ConversionConfig()
    images = load(a.dataset).calibration_images(cfg.calib_size, 0)
    kinds = {"merge when k wait": currents.TopK, "merge every part": MergeEveryPart}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    thresholds: dict[str, list[float]] = {}
    for i in range(a.rounds + 1):  # round 0 warms up
        for name, cls in kinds.items():
            snn = dietsnn.convert(ann, cfg.timesteps)
            currents.TopK = cls
            try:
                t = time.perf_counter()
                thr = dietsnn.calibrate_thresholds(snn, images, timesteps=cfg.calib_timesteps,
                                                   scale=1.0, limit=None)
                if i:
                    times[name].append(time.perf_counter() - t)
            finally:
                currents.TopK = kinds["merge when k wait"]
            thresholds.setdefault(name, thr)
            assert thr == thresholds[name]
    same = len({tuple(v) for v in thresholds.values()}) == 1
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    print(json.dumps({"cpu": cpu, "threads": a.threads, "rounds": a.rounds,
                      "seconds": {k: [round(v, 3) for v in ts] for k, ts in times.items()},
                      "median_s": {k: round(statistics.median(ts), 3) for k, ts in times.items()},
                      "same_thresholds": same, "thresholds": thresholds["merge when k wait"]}))
    if not same:
        raise SystemExit("the two forms set different thresholds")


if __name__ == "__main__":
    main()
