"""Choose the learning rate of the leaks and thresholds on the validation split.

Trains DIET-SNN (variant (d) of the ablation: weights, thresholds and leaks) from one converted
ANN at one T, once per (neuron lr, AMSGrad) pair, with the ablation's budget, and prints the best
validation accuracy of each with the test accuracy and the learned leaks. Cells are saved as they
finish (rerunning skips them). Example:

    python benchmarks/scan_neuron_lr.py runs/ann --out runs/scan-neuron-lr -T 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from dietsnn.ablation import Ablation, AblationConfig  # noqa: E402

from dietsnn import checkpoint, data  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ann", help="trained ANN run directory or model.safetensors")
    p.add_argument("--out", default="runs/scan-neuron-lr")
    p.add_argument("-T", "--timesteps", type=int, default=3)
    p.add_argument("--lrs", default="1e-4,1e-3,3e-3,1e-2,3e-2,1e-1")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--amsgrad", default="no,yes", help="AMSGrad settings to scan")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    splits = data.load("fashion-mnist")
    ann = checkpoint.load_model(a.ann)
    root = Path(a.out)
    rows = []
    for amsgrad in [v.strip() == "yes" for v in a.amsgrad.split(",")]:
        for lr in [float(v) for v in a.lrs.split(",")]:
            cfg = AblationConfig(timesteps=(a.timesteps,), seeds=(a.seed,), variants="d",
                                 neuron_lr=lr, amsgrad=amsgrad, epochs=a.epochs,
                                 train_subset=a.train_subset)
            out = root / f"lr{lr:g}{'-amsgrad' if amsgrad else ''}"
            first = root / "setup-direct.json"
            out.mkdir(parents=True, exist_ok=True)
            if first.is_file() and not (out / "setup-direct.json").is_file():
                shutil.copy(first, out / "setup-direct.json")  # one conversion serves all
            abl = Ablation(ann, splits, cfg, out)
            cell = abl.run_cell("d", a.timesteps, a.seed)
            if not first.is_file():
                shutil.copy(out / "setup-direct.json", first)
            rows.append({"neuron_lr": lr, "amsgrad": amsgrad, **{k: cell[k] for k in (
                "val_accuracy", "accuracy", "mean_spike_rate", "leaks", "thresholds",
                "thresholds_init", "seconds")}})
            (root / "scan.json").write_text(json.dumps(rows, indent=1))
    print("| neuron lr | AMSGrad | val accuracy | test accuracy | spikes/neuron | leaks |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['neuron_lr']:g} | {'yes' if r['amsgrad'] else 'no'} | "
              f"{100 * r['val_accuracy']:.2f} | {100 * r['accuracy']:.2f} | "
              f"{r['mean_spike_rate']:.3f} | {', '.join(f'{v:.2f}' for v in r['leaks'])} |")
    best = max(rows, key=lambda r: r["val_accuracy"])
    print(f"best on validation: neuron lr {best['neuron_lr']:g}, AMSGrad {best['amsgrad']}")


if __name__ == "__main__":
    main()
