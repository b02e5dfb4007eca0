"""Scaled against calibrated units over ANN seeds, with the flow of examples/convert_custom.py:
its VGG and ResNet (1 ANN epoch on 9,000 images, seed = the initialisation and shuffling
seed), 1,000 validation images, T=5, the library's calibration defaults (512 images, 25
steps); for each units the scale climbed on validation (`choose_scale(..., units=...)`), the
converted SNN DIET-trained one epoch (config.SNN_TRAIN), test accuracy on all 10,000 test
images. `choose_units` keeps the units of the better validation accuracy. One JSON line per
cell in the output file, skipped when already there (resumable):

    PYTHONPATH=src python docs/results/units/units_seeds.py OUT.jsonl [SEEDS]"""
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
import convert_custom as ex  # noqa: E402

import dietsnn  # noqa: E402
from dietsnn.config import SNN_TRAIN  # noqa: E402
from dietsnn.conversion import choose_scale  # noqa: E402
from dietsnn.data import load  # noqa: E402
from dietsnn.training import evaluate, fit  # noqa: E402

T = 5
out_path = Path(sys.argv[1])
seeds = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "0,1,2,3,4").split(",")]
done = set()
if out_path.exists():
    done = {(r["model"], r["seed"], r["units"]) for r in map(json.loads, out_path.open())}
torch.set_num_threads(2)
data = load("fashion-mnist", limit_train=10000, val_size=1000)
calib = data.train_x[:512]


def train_ann(model, seed):
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for idx in torch.randperm(len(data.train_x), generator=g).split(64):
        loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


with dietsnn.use_engine():
    for seed in seeds:
        for name in ("vgg", "resnet"):
            if all((name, seed, u) in done for u in ("scaled", "calibrated")):
                continue
            torch.manual_seed(seed)
            ann = train_ann({"vgg": ex.vgg_small, "resnet": ex.resnet_small}[name](), seed)
            ann_acc = evaluate(ann, data.test_x, data.test_y)["accuracy"]
            for units in ("scaled", "calibrated"):
                if (name, seed, units) in done:
                    continue
                t0 = time.time()
                snn = dietsnn.convert(ann, timesteps=T)
                dietsnn.calibrate_thresholds(snn, calib, scale=1.0)
                s, scan = choose_scale(snn, data.val_x, data.val_y, units=units)
                conv = evaluate(snn, data.test_x, data.test_y)["accuracy"]
                with tempfile.TemporaryDirectory() as out:
                    fit(snn, data, dataclasses.replace(SNN_TRAIN, epochs=1), out,
                        progress=False, log=lambda *_: None)
                    snn = dietsnn.load_model(f"{out}/model.safetensors")
                diet = evaluate(snn, data.test_x, data.test_y)["accuracy"]
                row = {"model": name, "seed": seed, "units": units, "ann": ann_acc, "scale": s,
                       "scan": {str(k): v for k, v in scan.items()}, "converted": conv,
                       "diet": diet, "seconds": round(time.time() - t0, 1)}
                with out_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
