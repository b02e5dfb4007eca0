"""The flow of examples/convert_custom.py (its VGG and ResNet, 1 ANN epoch on 9,000 images, 1,000
for validation, 2,000 test images, T=5, calibration at 5 steps on 512 images), converted at the
example's former fixed scales (VGG 0.5, ResNet 0.2) and at the scale chosen on validation,
then DIET-trained one epoch with config.SNN_TRAIN (spike penalty 0.02). Run it with the tree to
measure first on PYTHONPATH (e.g. PYTHONPATH=src python docs/results/units/example_diet.py)."""
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
import convert_custom as ex  # noqa: E402

import dietsnn  # noqa: E402
from dietsnn.config import SNN_TRAIN  # noqa: E402
from dietsnn.conversion import choose_scale  # noqa: E402
from dietsnn.data import load  # noqa: E402
from dietsnn.training import evaluate, fit  # noqa: E402

torch.set_num_threads(2)
T = 5
FIXED = {"vgg": 0.5, "resnet": 0.2}
data = load("fashion-mnist", limit_train=10000, limit_test=2000, val_size=1000)
calib = data.train_x[:512]
with dietsnn.use_engine():
    for name in ("vgg", "resnet"):
        torch.manual_seed(0)
        ann = ex.train_ann({"vgg": ex.vgg_small, "resnet": ex.resnet_small}[name](),
                           data.train_x, data.train_y, 1)
        ann_acc = evaluate(ann, data.test_x, data.test_y)["accuracy"]
        for mode in ("fixed", "auto"):
            snn = dietsnn.convert(ann, timesteps=T)
            if mode == "fixed":
                s = FIXED[name]
                dietsnn.calibrate_thresholds(snn, calib, scale=s, timesteps=T)
            else:
                dietsnn.calibrate_thresholds(snn, calib, scale=1.0, timesteps=T)
                s, _ = choose_scale(snn, data.val_x, data.val_y)
            conv = evaluate(snn, data.test_x, data.test_y)["accuracy"]
            gain = snn.output_gain.item()
            with tempfile.TemporaryDirectory() as out:
                fit(snn, data, dataclasses.replace(SNN_TRAIN, epochs=1), out, progress=False,
                    log=lambda *_: None)
                snn = dietsnn.load_model(f"{out}/model.safetensors")
            diet = evaluate(snn, data.test_x, data.test_y)["accuracy"]
            print(f"{name} ANN {ann_acc:.4f} | scale {s} ({mode}) | converted {conv:.4f} | "
                  f"DIET-SNN {diet:.4f} | output gain {gain:.3g}", flush=True)
