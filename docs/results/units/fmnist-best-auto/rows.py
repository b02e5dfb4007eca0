"""The rows of docs/RESULTS.md section 1.7's fmnist-best table from the run folders:
    python rows.py RUNS  (RUNS holds conv-auto, snn-auto, conv-sauto, snn-sauto for seed 0 and
    u{S}-{auto,scaled}-{conv,snn} for seeds 1 and 2)"""
import json
import sys
from pathlib import Path

R = Path(sys.argv[1])
dirs = {(0, "auto"): ("conv-auto", "snn-auto"), (0, "scaled"): ("conv-sauto", "snn-sauto")}
for s in (1, 2):
    for u in ("auto", "scaled"):
        dirs[s, u] = (f"u{s}-{u}-conv", f"u{s}-{u}-snn")
for (seed, opt), (c, t) in dirs.items():
    if not (R / t / "metrics.json").exists():
        continue
    conv = json.loads((R / c / "metrics.json").read_text())["converted"]
    snn = json.loads((R / t / "metrics.json").read_text())["snn"]
    hist = json.loads((R / t / "history.json").read_text())
    units = conv.get("units_validation_accuracy",
                     {conv["calibration"]["units"]: conv["scale_validation_accuracy"]})
    best = " / ".join(f"{max(units[u].values()):.2%}" if u in units else "-"
                      for u in ("scaled", "calibrated"))
    vals = ", ".join(f"{h['val_accuracy']:.2%}".rstrip("%") for h in hist)
    spikes = ", ".join(f"{x['spike_rate']:.3f}" for x in snn["layers"])
    print(f"| {seed} | {conv['calibration']['units']}, {conv['calibration']['scale']} "
          f"(`--units {opt}`) | {best} | {conv['test_accuracy']:.2%} | {vals}% | "
          f"{snn['test_accuracy']:.2%} | {spikes} |")
