"""Rate coding in two forms, side by side on Fashion-MNIST (docs/RESULTS.md):

- standardised (the library's `encoding="rate"`, as in the authors' code): the network's inputs
  are the standardised images, and a pixel spikes sign(x) with probability |x| (clipped to 1),
  so the background (x = -0.81) spikes negatively with probability 0.81;
- [0, 1] -> Bernoulli: the network is trained on the unstandardised images in [0, 1], and a
  pixel spikes +1 with probability equal to its intensity (the same encoder: x >= 0).

Each form gets its own ANN (the default recipe, seed 0; the standardised one can be given), then
the ablation's variant (a) (`dietsnn.analysis.ablation`: conversion, the scale chosen per T on
validation, one epoch of BPTT on 10,000 images, the full test set) at each T and seed. Cells are
written as they finish and skipped when present, so the script resumes where it stopped.

    PYTHONPATH=src python3 benchmarks/rate_coding.py OUT [--ann STANDARDISED_ANN] \
        [--forms standardised,unit] [--timesteps 5,10] [--seeds 0,1,2] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

import dietsnn
from dietsnn.analysis.ablation import Ablation, AblationConfig
from dietsnn.checkpoint import load_model
from dietsnn.config import TrainConfig
from dietsnn.data import load
from dietsnn.training import fit


def unit(data):
    """The same splits in [0, 1]: the standardisation undone."""
    mean = torch.tensor(data.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.info.std).view(1, -1, 1, 1)
    f = lambda x: (x * std + mean).clamp_(0.0, 1.0)  # noqa: E731
    return dataclasses.replace(data, train_x=f(data.train_x), val_x=f(data.val_x),
                               test_x=f(data.test_x))


def ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(",") if v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--ann", type=Path, help="ANN of the standardised form (default: trained)")
    ap.add_argument("--forms", default="standardised,unit")
    ap.add_argument("--timesteps", type=ints, default=(5, 10))
    ap.add_argument("--seeds", type=ints, default=(0, 1, 2))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, help="first N training and test images (smoke runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    std_data = load(dietsnn.config.DATASET, limit_train=args.limit, limit_test=args.limit)
    for form in args.forms.split(","):
        data = std_data if form == "standardised" else unit(std_data)
        out = args.out / form
        ann_file = args.ann if form == "standardised" and args.ann else out / "ann" / \
            "model.safetensors"
        if not ann_file.is_file():
            torch.manual_seed(0)
            net = dietsnn.build_ann(dietsnn.config.ARCH)
            fit(net, data, TrainConfig(), out / "ann", resume=(out / "ann" / "state.pt").is_file(),
                progress=False, desc=f"ANN ({form})")
        cfg = AblationConfig(timesteps=args.timesteps, rate_timesteps=(), seeds=args.seeds,
                             variants="a")
        Ablation(load_model(ann_file), data, cfg, out / "ablation").run_grid()


if __name__ == "__main__":
    main()
