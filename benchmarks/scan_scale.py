"""Threshold scale scan: how the converted SNN's accuracy (no SNN training) depends on the factor
that multiplies the percentile thresholds (docs/RESULTS.md section 2).

Calibrates once at scale 1 exactly as `dietsnn convert` does (same calibration images and seed),
then multiplies the thresholds by each scale and evaluates on the first N validation images
(never on the test set, since the default scale was chosen from this scan): the rule of
`scale="auto"` (`dietsnn.conversion.choose_scale`).

    python benchmarks/scan_scale.py runs/fmnist/ann/model.safetensors --scales 0.2,0.3,0.4,0.5,0.6,0.8,1.0
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from dietsnn import ann_to_snn, calibrate_thresholds, data, load_model  # noqa: E402
from dietsnn.config import SCALES  # noqa: E402
from dietsnn.conversion import choose_scale  # noqa: E402
from dietsnn.training import evaluate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ann", help="ANN model.safetensors")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--scales", default=",".join(map(str, SCALES)))
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--val-images", type=int, default=2000)
    p.add_argument("--calib-size", type=int, default=512)
    p.add_argument("--calib-timesteps", type=int, default=100)
    p.add_argument("--percentile", type=float, default=99.7)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = data.load(args.dataset, seed=args.seed)
    ann = load_model(args.ann)
    vx, vy = splits.val_x[: args.val_images], splits.val_y[: args.val_images]
    print(f"ANN on {len(vy)} validation images: {evaluate(ann, vx, vy)['accuracy']:.4f}")
    snn = ann_to_snn(ann, args.timesteps)
    g = torch.Generator().manual_seed(args.seed)  # as pipeline.calibration_images
    idx = torch.randperm(len(splits.train_x), generator=g)[: args.calib_size]
    torch.manual_seed(args.seed)
    base = calibrate_thresholds(snn, splits.train_x[idx], args.percentile, 1.0,
                                args.calib_timesteps)
    print(f"thresholds at scale 1: {', '.join(f'{v:.3f}' for v in base)}")
    best, accs = choose_scale(snn, vx, vy, [float(v) for v in args.scales.split(",")])
    print("| scale | " + " | ".join(map(str, accs)) + " | chosen |")
    print(f"| converted, T={args.timesteps} | " + " | ".join(f"{a:.2%}" for a in accs.values())
          + f" | {best} |")

if __name__ == "__main__":
    main()
