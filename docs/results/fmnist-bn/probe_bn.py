"""Probe: the fmnist-best recipe (docs/RESULTS.md section 1.3) with BATCH NORM in the ANN.

vgg_small's layout (3x3 convs 32, avg pool, 64, 64, avg pool, linear 256, linear 10; no bias,
ReLU and dropout after each hidden layer) with BatchNorm2d after every conv and BatchNorm1d
after the hidden linear (conv/linear -> BN -> ReLU -> dropout: the BN folds into the layer
before it, conversion/build.py). Then the fmnist-best preset's stages through the library's own
functions, as the CLI calls them:

  1. ANN: `training.fit` with the preset's ANN TrainConfig (SGD momentum 0.9, lr 0.05,
     wd 5e-4, cosine, batch 128, crop after 2 px padding + flip, 30 epochs, precision auto),
     best epoch on the 5000-image validation split, as `pipeline.train_ann` does;
  2. convert: `pipeline.convert_module` (the CLI's `convert --from-module` path: traced graph,
     BN folded, thresholds calibrated on 512 training images, percentile 99.7, 25 calibration
     steps, scale "auto" chosen on validation) at T=3; test accuracy at T=3 and at T=2 (the
     same thresholds, run for 2 steps, as the latency sweep does);
  3. DIET: `pipeline.train_snn` with the preset's SNN TrainConfig (Adam lr 1e-4, neuron lr
     0.03, batch 64, spike penalty 0.02, cosine, same augmentation, 4 epochs) at T=3; test
     accuracy at T=3 and T=2.

One JSON line per stage is appended to --jsonl as it completes.

    PYTHONPATH=src python docs/results/fmnist-bn/probe_bn.py --threads 1 --out runs-bn/probe
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

import dietsnn
from dietsnn import checkpoint as ckpt
from dietsnn import memory, pipeline
from dietsnn.config import ANN_TRAIN, DROPOUT, SNN_TRAIN, VAL_SIZE, ConversionConfig
from dietsnn.data import load
from dietsnn.models import Network, init_weights
from dietsnn.presets import PRESETS
from dietsnn.training import evaluate, fit, seeded

HERE = Path(__file__).resolve().parent


class VGGSmallBN(nn.Module):
    """vgg_small (models/vgg.py) with BatchNorm after each conv and the hidden linear."""

    def __init__(self, dropout: float = DROPOUT, in_channels: int = 1, image_size: int = 28,
                 num_classes: int = 10, features=(32, "A", 64, 64, "A"), hidden=(256,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, image_size
        for v in features:
            if v == "A":
                layers.append(nn.AvgPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, v, 3, 1, 1, bias=False), nn.BatchNorm2d(v), nn.ReLU(),
                           nn.Dropout(dropout)]
                c = v
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        f = c * size * size
        for h in hidden:
            head += [nn.Linear(f, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            f = h
        head.append(nn.Linear(f, num_classes, bias=False))
        self.classifier = nn.Sequential(*head)
        init_weights(self)  # vgg_small's: He-normal convs, N(0, 0.01) linears; BN (1, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class Trainable(Network):
    """The plain module as a dietsnn ANN `Network`, so `training.fit` can checkpoint it
    (`checkpoint.save_model` takes `Network`s only). Its state dict is `net.` + the module's."""

    def __init__(self, net: nn.Module, config: dict) -> None:
        super().__init__()
        self.net = net
        self.config = config  # arch unknown to memory.check_memory: no estimate, no refusal

    def body(self, x: Tensor) -> Tensor:
        return self.net(x)

    def units(self) -> list[nn.Module]:
        return [*self.net.features, *self.net.classifier]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="run directory (checkpoints)")
    p.add_argument("--jsonl", default=str(HERE / "probe_bn.jsonl"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ann-epochs", type=int, default=PRESETS["fmnist-best"]["ann"]["epochs"])
    p.add_argument("--snn-epochs", type=int, default=PRESETS["fmnist-best"]["snn"]["epochs"])
    p.add_argument("--timesteps", type=int, default=PRESETS["fmnist-best"]["timesteps"])
    p.add_argument("--dropout", type=float, default=PRESETS["fmnist-best"]["dropout"])
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--val-size", type=int, default=VAL_SIZE)
    p.add_argument("--tag", default="full")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    preset = PRESETS["fmnist-best"]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = Path(a.jsonl)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    def record(stage: str, **d) -> None:
        row = {"tag": a.tag, "stage": stage, **d}
        with jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(f"RESULT {json.dumps(row)}")

    t_start = time.time()
    log(f"argv {sys.argv}; torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}")
    data = load(preset["dataset"], None, a.val_size, 0, a.limit_train, a.limit_test)
    ctx = pipeline.Context(data, "cpu", False, log)
    log(f"data: train {len(data.train_y)}, val {len(data.val_y)}, test {len(data.test_y)}")

    # the preset's phases, as cli/options.train_config builds them (seed 0; augmentation of
    # the preset applies to the ANN and the SNN phase alike)
    aug = {k: preset[k] for k in ("crop_padding", "flip")}
    ann_cfg = dataclasses.replace(ANN_TRAIN, **{**preset["ann"], "epochs": a.ann_epochs}, **aug,
                                  seed=0)
    snn_cfg = dataclasses.replace(SNN_TRAIN, **{**preset["snn"], "epochs": a.snn_epochs}, **aug,
                                  seed=0)
    opts = ConversionConfig(timesteps=a.timesteps, scale="auto")  # CLI_SCALE with a val split
    log(f"ANN config {dataclasses.asdict(ann_cfg)}")
    log(f"SNN config {dataclasses.asdict(snn_cfg)}")
    log(f"conversion config {dataclasses.asdict(opts)}; dropout {a.dropout}")

    # 1. ANN, as pipeline.train_ann (model built under seeded(cfg.seed))
    t0 = time.time()
    with seeded(ann_cfg.seed):
        net = VGGSmallBN(a.dropout, data.info.in_channels, data.info.image_size,
                         data.info.num_classes)
    model = Trainable(net, {"arch": "vgg_small_bn", "num_classes": data.info.num_classes,
                            "in_channels": data.info.in_channels,
                            "image_size": data.info.image_size, "dropout": a.dropout})
    log(f"model:\n{net}")
    res = fit(model, data, ann_cfg, out / "ann", False, False, log, "ann", "cpu")
    state = load_file(str(out / "ann" / ckpt.MODEL_FILE))  # the best epoch on validation
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    net.eval()
    test = evaluate(net, data.test_x, data.test_y)
    hist = [{k: r[k] for k in ("epoch", "train_loss", "train_accuracy", "val_accuracy", "lr",
                               "precision", "seconds")} for r in res["history"]]
    record("ann", test_accuracy=test["accuracy"], test_loss=test["loss"],
           val_accuracy=res["best_val_accuracy"],
           best_epoch=max(hist, key=lambda r: r["val_accuracy"])["epoch"] if hist else None,
           epochs=a.ann_epochs, seconds=time.time() - t0, peak_rss_mb=memory.peak_rss_mb(),
           history=hist)

    # 2. conversion, as `dietsnn convert --from-module` (pipeline.convert_module)
    t0 = time.time()
    m = pipeline.convert_module(net, "probe_bn.VGGSmallBN", opts, ctx, out / "converted", seed=0)
    conv_seconds = time.time() - t0
    snn = dietsnn.load_model(out / "converted" / ckpt.MODEL_FILE)
    accs = {}
    for T in (2, 3):
        snn.timesteps = T
        accs[T] = evaluate(snn, data.test_x, data.test_y)["accuracy"]
        log(f"converted SNN T={T}: test accuracy {accs[T]:.4f}")
    folded = [n for n, mod in snn.named_modules() if isinstance(mod, nn.BatchNorm2d | nn.BatchNorm1d)]
    record("converted", test_accuracy_T3=accs[3], test_accuracy_T2=accs[2],
           test_accuracy_T3_pipeline=m["test_accuracy"], ann_test_accuracy=m["ann_test_accuracy"],
           scale=m["calibration"]["scale"],
           scale_validation_accuracy=m.get("scale_validation_accuracy"),
           calibration=m["calibration"], calibration_seconds=m["calibration_seconds"],
           bn_modules_left=folded, layers=m["layers"], seconds=conv_seconds,
           seconds_with_T2_eval=time.time() - t0, peak_rss_mb=memory.peak_rss_mb())

    # 3. DIET-SNN training at T, as `dietsnn train-snn` (pipeline.train_snn)
    t0 = time.time()
    s = pipeline.train_snn(out / "converted" / ckpt.MODEL_FILE, snn_cfg, ctx, out / "snn")
    train_seconds = time.time() - t0
    best = dietsnn.load_model(out / "snn" / ckpt.MODEL_FILE)
    accs = {}
    for T in (2, 3):
        best.timesteps = T
        accs[T] = evaluate(best, data.test_x, data.test_y)["accuracy"]
        log(f"DIET-SNN T={T}: test accuracy {accs[T]:.4f}")
    hist = json.loads((out / "snn" / "history.json").read_text())
    record("diet", test_accuracy_T3=accs[3], test_accuracy_T2=accs[2],
           test_accuracy_T3_pipeline=s["test_accuracy"], val_accuracy=s["val_accuracy"],
           epochs=a.snn_epochs, timesteps=a.timesteps, seconds=train_seconds,
           seconds_with_T2_eval=time.time() - t0, peak_rss_mb=memory.peak_rss_mb(),
           layers=s["layers"],
           history=[{k: r.get(k) for k in ("epoch", "train_loss", "train_accuracy",
                                            "val_accuracy", "train_energy", "seconds")}
                    for r in hist])
    log(f"total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
