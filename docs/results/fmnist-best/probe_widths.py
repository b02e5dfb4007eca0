"""CPU seconds per training step of candidate VGG widths on this CPU (ANN under the run's precision,
batch 128; SNN at T=3 with the spike penalty's observers, batch 64), and the epoch time they
imply on Fashion-MNIST's 55,000 training images. Candidates not in VGG_FEATURES are added for
the probe only. CPU time of the process, not wall time: on a machine shared with other jobs
the ratios between widths stay meaningful where wall times do not.

    PYTHONPATH=src python docs/results/fmnist-best/probe_widths.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import dietsnn
from dietsnn.analysis.energy import SpikeEnergy
from dietsnn.config import ANN_TRAIN, SNN_TRAIN
from dietsnn.evaluation import autocast, resolve_precision
from dietsnn.models import vgg
from dietsnn.training import make_optimizer

CANDIDATES = {
    "vgg_small": ([32, "A", 64, 64, "A"], [256]),
    "w48": ([48, "A", 96, 96, "A"], [256]),
    "w64": ([64, "A", 128, 128, "A"], [256]),
    "vgg5": ([64, "A", 128, 128, "A"], [1024, 1024]),
}


def steps(model, opt, x, y, n, precision, energy=None) -> float:
    walls = []
    model.train()
    for i in range(n + 2):
        t = time.process_time()
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
        if i >= 2:
            walls.append(time.process_time() - t)
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--only", default=",".join(CANDIDATES))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    prec = resolve_precision("auto", "cpu")
    for name in a.only.split(","):
        feats, hidden = CANDIDATES[name]
        vgg.VGG_FEATURES.setdefault(name, feats)
        vgg.VGG_HIDDEN.setdefault(name, hidden)
        with dietsnn.use_engine():
            ann = dietsnn.build_ann(name)
            ann_s = steps(ann, make_optimizer(ann, ANN_TRAIN), x, y, a.steps, prec)
            snn = dietsnn.ann_to_snn(dietsnn.build_ann(name), 3)
            dietsnn.calibrate_thresholds(snn, x, timesteps=10)
            with SpikeEnergy(snn) as en:
                snn_s = steps(snn, make_optimizer(snn, SNN_TRAIN), x[:64], y[:64], a.steps,
                              "fp32", en)
        print(json.dumps({"arch": name, "features": feats, "hidden": hidden, "threads": a.threads,
                          "ann_precision": prec, "ann_step_s": round(ann_s, 4),
                          "snn_step_s": round(snn_s, 4),
                          "ann_epoch_s": round(ann_s * 55000 / 128, 1),
                          "snn_epoch_s_T3": round(snn_s * 55000 / 64, 1)}), flush=True)


if __name__ == "__main__":
    main()
