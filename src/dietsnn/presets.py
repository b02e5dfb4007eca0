"""Recipes as `--preset NAME` for `run`, `train-ann`, `convert` and `train-snn`.

A preset only changes defaults: any option given explicitly on the command line wins. The
paper-scale presets (docs/METHOD.md section 7) follow the paper and the reference scripts: ANN
SGD (momentum 0.9) lr 1e-2, weight decay 5e-4 (1e-4 on ImageNet), cosine schedule, 300 epochs on
CIFAR, 90 on ImageNet; SNN Adam lr 1e-4, batch 64, no weight decay, T = 5, dropout 0.2,
threshold scale 0.3 (VGG16) or 0.2 (ResNet20). `fmnist-best` is the best Fashion-MNIST recipe
whose whole `dietsnn run` fits in 30 minutes on 2 CPU cores (docs/RESULTS.md section 1.3).
`dietsnn presets` prints the table.
"""

from __future__ import annotations

from .config import ANN_TRAIN, DROPOUT, SNN_TRAIN, VAL_SIZE

ANN_KEYS = ("epochs", "lr", "batch_size", "optimizer", "weight_decay", "schedule")
# what a preset may set besides the common keys and the two phases: the training augmentation
# (None: the dataset's) and, for `run`, the latency sweep of the report
AUGMENT_KEYS = ("crop_padding", "flip")
RUN_KEYS = ("sweep_timesteps", "sweep_limit")


def _phase(cfg, epochs: int) -> dict:
    return {k: (epochs if k == "epochs" else getattr(cfg, k)) for k in ANN_KEYS}


def _preset(dataset: str, arch: str, scale: float, ann_epochs: int, ann_batch: int, ann_wd: float,
            snn_epochs: int, val_size: int = 5000) -> dict:
    return {
        "dataset": dataset, "arch": arch, "dropout": 0.2, "timesteps": 5, "scale": scale,
        "val_size": val_size,
        "ann": dict(zip(ANN_KEYS, (ann_epochs, 1e-2, ann_batch, "sgd", ann_wd, "cosine"))),
        "snn": dict(zip(ANN_KEYS, (snn_epochs, 1e-4, 64, "adam", 0.0, "cosine"))),
    }


PRESETS: dict[str, dict] = {
    "cifar10-vgg16": _preset("cifar10", "vgg16", 0.3, 300, 128, 5e-4, 60),
    "cifar10-resnet20": _preset("cifar10", "resnet20", 0.2, 300, 128, 5e-4, 60),
    "cifar100-vgg16": _preset("cifar100", "vgg16", 0.3, 300, 128, 5e-4, 60),
    "cifar100-resnet20": _preset("cifar100", "resnet20", 0.2, 300, 128, 5e-4, 60),
    "imagenet-vgg16": _preset("imagenet", "vgg16", 0.3, 90, 256, 1e-4, 10, val_size=10000),
    # docs/RESULTS.md section 1.3: the library's ANN and SNN optimisers (config.py) with more
    # epochs and augmentation, batch norm (folded at conversion) and the threshold scale that
    # trained best on the validation split (the converted accuracy cannot choose it here)
    "fmnist-best": {
        "dataset": "fashion-mnist", "arch": "vgg_small_bn", "dropout": DROPOUT, "timesteps": 3,
        "scale": 0.7, "val_size": VAL_SIZE, "crop_padding": 2, "flip": True,
        "ann": _phase(ANN_TRAIN, 30), "snn": _phase(SNN_TRAIN, 8),
        "sweep_timesteps": [1, 2, 3, 4, 5], "sweep_limit": 10000,
    },
}
COMMANDS = ("run", "train-ann", "convert", "train-snn")


def preset_defaults(name: str, command: str) -> dict:
    """argparse destinations and values that preset `name` sets for `command`."""
    p = PRESETS[name]
    common = {k: p[k] for k in ("dataset", "arch", "dropout", "timesteps", "scale", "val_size")}
    if command != "convert":
        common.update({k: p[k] for k in AUGMENT_KEYS if k in p})
    if command == "run":
        return {**common, **{f"ann_{k}": v for k, v in p["ann"].items()},
                **{f"snn_{k}": v for k, v in p["snn"].items()},
                **{k: p[k] for k in RUN_KEYS if k in p}}
    if command == "train-ann":
        return {**common, **p["ann"]}
    if command == "train-snn":
        return {**common, **p["snn"]}
    return common


def table() -> str:
    head = ("preset", "dataset", "arch", "T", "scale", "augmentation", "ANN epochs/lr/batch/wd",
            "SNN epochs/lr/batch")
    rows = [head]
    for name, p in PRESETS.items():
        a, s = p["ann"], p["snn"]
        aug = "dataset's"
        if "crop_padding" in p or "flip" in p:
            aug = " + ".join([f"crop {p['crop_padding']}"] * bool(p.get("crop_padding"))
                             + ["flip"] * bool(p.get("flip"))) or "none"
        rows.append((name, p["dataset"], p["arch"], str(p["timesteps"]),
                     "auto" if p["scale"] is None else str(p["scale"]), aug,
                     f"{a['epochs']} / {a['lr']:g} / {a['batch_size']} / {a['weight_decay']:g}",
                     f"{s['epochs']} / {s['lr']:g} / {s['batch_size']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
