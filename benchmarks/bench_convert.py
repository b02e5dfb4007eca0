"""Conversion quality of custom ANNs: dietsnn.convert vs SpikingJelly's ann2snn converter.

Trains the small Fashion-MNIST ANNs of tests/conversion_models.py (the ones the tests check),
each once with a fixed seed, then converts the same trained ANN with
  - dietsnn: `dietsnn.convert` + `calibrate_thresholds` (percentile 99.9 as SpikingJelly's
    mode, calibrated at the T it runs, thresholds times each `--scales` value: 1.0 is no
    scaling, 0.7 the authors' value at long latency), biases and merge gains in spike units;
  - dietsnn without that rescaling (biases kept as in the ANN), to measure what it does;
  - for max pooling, dietsnn with `maxpool="avg"` as well;
  - SpikingJelly 2.0 `FXConverter(RateCodingRecipe(loader, mode="99.9%"))` (its robust
    normalisation, BatchNorm fused by it), run T steps and the outputs summed;
and prints test accuracy at each T and the agreement with the ANN's argmax.

    .venv-bench/bin/python benchmarks/bench_convert.py --threads 2

Peers are optional and never dependencies of dietsnn: `bash benchmarks/setup_peers.sh` puts
SpikingJelly in `.venv-bench` beside the same torch; without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import types
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from conversion_models import build_and_train, predict  # noqa: E402

import dietsnn  # noqa: E402
from dietsnn.conversion import calibrate as graph_calibrate  # noqa: E402
from dietsnn.data import load  # noqa: E402


def spikingjelly_snn(ann, calib: torch.Tensor):
    sys.modules.setdefault("requests", types.ModuleType("requests"))  # only its downloads use it
    from spikingjelly.activation_based import ann2snn, functional

    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(calib, torch.zeros(len(calib), dtype=torch.long)),
        batch_size=128)
    snn = ann2snn.FXConverter(ann2snn.RateCodingRecipe(loader, mode="99.9%")).convert(
        copy.deepcopy(ann))
    return snn.eval(), functional.reset_net


@torch.no_grad()
def run_spikingjelly(snn, reset, x: torch.Tensor, T: int, batch: int = 100) -> torch.Tensor:
    preds = []
    for xb in x.split(batch):
        reset(snn)
        out = sum(snn(xb) for _ in range(T))
        preds.append(out.argmax(1))
    return torch.cat(preds)


def dietsnn_snn(ann, calib: torch.Tensor, T: int, scale: float, rescale: bool = True,
                maxpool: str = "spiking"):
    real = graph_calibrate.apply_scales
    if not rescale:  # biases as in the ANN, merge gains 1: what conversion did before
        graph_calibrate.apply_scales = lambda *_a, **_k: {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snn = dietsnn.convert(ann, timesteps=T, maxpool=maxpool)
        dietsnn.calibrate_thresholds(snn, calib, percentile=99.9, scale=scale, timesteps=T)
    finally:
        graph_calibrate.apply_scales = real
    return snn.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="bn,bias,maxpool,residual")
    p.add_argument("--timesteps", default="32,128", help="T values, comma-separated")
    p.add_argument("--scales", default="1.0,0.7", help="calibration scales of dietsnn's rows "
                   "(the first also for the ablation rows)")
    p.add_argument("--train", type=int, default=10000, help="training images")
    p.add_argument("--test", type=int, default=1000, help="test images")
    p.add_argument("--calib", type=int, default=512, help="calibration images (training set)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    d = load("fashion-mnist", limit_train=a.train, limit_test=a.test, val_size=500, seed=a.seed)
    g = torch.Generator().manual_seed(a.seed)
    calib = d.train_x[torch.randperm(len(d.train_x), generator=g)[: a.calib]]
    Ts = [int(t) for t in a.timesteps.split(",")]
    scales = [float(s) for s in a.scales.split(",")]
    results: dict = {"args": vars(a), "cases": {}}
    for case in a.cases.split(","):
        t0 = time.time()
        ann = build_and_train(case, d.train_x, d.train_y, a.epochs, a.seed)
        a_pred = predict(ann, d.test_x)
        row = {"ann": (a_pred == d.test_y).float().mean().item(), "train_s": time.time() - t0}
        print(f"{case}: ANN {row['ann']:.4f} ({len(d.test_y)} test images, trained in "
              f"{row['train_s']:.0f}s)", flush=True)
        variants = {f"dietsnn scale={s:g}": {"scale": s} for s in scales}
        variants["dietsnn, biases not rescaled"] = {"scale": scales[0], "rescale": False}
        if "max" in case:
            variants["dietsnn, maxpool='avg'"] = {"scale": scales[0], "maxpool": "avg"}
        for T in Ts:
            for name, kw in variants.items():
                s = predict(dietsnn_snn(ann, calib, T, **kw), d.test_x, 50)
                _report(row, case, name, T, s, a_pred, d.test_y)
            try:
                snn, reset = spikingjelly_snn(ann, calib)
            except ImportError:
                continue
            except Exception as e:  # noqa: BLE001 - a peer that cannot convert this model
                print(f"  spikingjelly: cannot convert ({type(e).__name__}: {e})")
                continue
            _report(row, case, "spikingjelly", T, run_spikingjelly(snn, reset, d.test_x, T),
                    a_pred, d.test_y)
        results["cases"][case] = row
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def _report(row, case, name, T, pred, a_pred, y) -> None:
    acc = (pred == y).float().mean().item()
    agree = (pred == a_pred).float().mean().item()
    row[f"{name} T={T}"] = {"accuracy": acc, "agreement": agree}
    print(f"  {name:<32} T={T:<4} accuracy {acc:.4f}  agreement with the ANN {agree:.4f}",
          flush=True)


if __name__ == "__main__":
    main()
