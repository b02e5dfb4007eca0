"""Paper-scale recipes (docs/METHOD.md section 7) as `--preset NAME` for `run`, `train-ann`,
`convert` and `train-snn`.

A preset only changes defaults: any option given explicitly on the command line wins. Values
follow the paper and the reference scripts: ANN SGD (momentum 0.9) lr 1e-2, weight decay 5e-4
(1e-4 on ImageNet), cosine schedule, 300 epochs on CIFAR, 90 on ImageNet; SNN Adam lr 1e-4, batch
64, no weight decay, T = 5, dropout 0.2, threshold scale 0.3 (VGG16) or 0.2 (ResNet20).
`dietsnn presets` prints the table.
"""

from __future__ import annotations

ANN_KEYS = ("epochs", "lr", "batch_size", "optimizer", "weight_decay", "schedule")


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
}
COMMANDS = ("run", "train-ann", "convert", "train-snn")


def preset_defaults(name: str, command: str) -> dict:
    """argparse destinations and values that preset `name` sets for `command`."""
    p = PRESETS[name]
    common = {k: p[k] for k in ("dataset", "arch", "dropout", "timesteps", "scale", "val_size")}
    if command == "run":
        return {**common, **{f"ann_{k}": v for k, v in p["ann"].items()},
                **{f"snn_{k}": v for k, v in p["snn"].items()}}
    if command == "train-ann":
        return {**common, **p["ann"]}
    if command == "train-snn":
        return {**common, **p["snn"]}
    return common


def table() -> str:
    head = ("preset", "dataset", "arch", "T", "scale", "ANN epochs/lr/batch/wd",
            "SNN epochs/lr/batch")
    rows = [head]
    for name, p in PRESETS.items():
        a, s = p["ann"], p["snn"]
        rows.append((name, p["dataset"], p["arch"], str(p["timesteps"]), str(p["scale"]),
                     f"{a['epochs']} / {a['lr']:g} / {a['batch_size']} / {a['weight_decay']:g}",
                     f"{s['epochs']} / {s['lr']:g} / {s['batch_size']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
