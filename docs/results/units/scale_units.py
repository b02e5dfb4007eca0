"""Converted accuracy of the VGG and ResNet of examples/convert_custom.py (1 ANN epoch on 9,000
images, 2,000 test images) at T steps (argv[1], default 5) over threshold scales: biases, residual
gains and output gain in the units of the lowered thresholds (the library at 7d35797) against the
units of the calibrated thresholds (calibrated at scale 1, then the thresholds alone lowered).
Run at 7d35797: PYTHONPATH=src python docs/results/units/scale_units.py 5"""
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
import convert_custom as ex  # noqa: E402

import dietsnn  # noqa: E402
from dietsnn.data import load  # noqa: E402
from dietsnn.layers import lif_layers  # noqa: E402
from dietsnn.training import evaluate  # noqa: E402

torch.set_num_threads(2)
T = int(sys.argv[1]) if len(sys.argv) > 1 else 5
data = load("fashion-mnist", limit_train=10000, limit_test=2000, val_size=1000)
calib = data.train_x[:512]
with dietsnn.use_engine():
    for name in ("vgg", "resnet"):
        torch.manual_seed(0)
        ann = ex.train_ann({"vgg": ex.vgg_small, "resnet": ex.resnet_small}[name](),
                           data.train_x, data.train_y, 1)
        print(name, "ANN", evaluate(ann, data.test_x, data.test_y)["accuracy"], flush=True)
        base = dietsnn.convert(ann, timesteps=T)
        dietsnn.calibrate_thresholds(base, calib, scale=1.0, timesteps=T)  # the calibrated units
        for s in (0.2, 0.3, 0.5, 0.7, 1.0):
            a = copy.deepcopy(base)
            for _, m in lif_layers(a):
                m.threshold.data.mul_(s)  # thresholds lowered, the rest in the calibrated units
            lib = dietsnn.convert(ann, timesteps=T)
            dietsnn.calibrate_thresholds(lib, calib, scale=s, timesteps=T)
            ra = evaluate(a, data.test_x, data.test_y)["accuracy"]
            rl = evaluate(lib, data.test_x, data.test_y)["accuracy"]
            print(f"{name} T={T} scale {s}: compounding (library) {rl:.4f} | raw units {ra:.4f}",
                  flush=True)
