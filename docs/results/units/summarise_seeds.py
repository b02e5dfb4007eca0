"""The table of docs/RESULTS.md section 1.7 from units_seeds.py's output:
    python docs/results/units/summarise_seeds.py units_seeds-56f4aeb.jsonl"""
import json
import statistics as st
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
cell = {(r["model"], r["seed"], r["units"]): r for r in rows}
for model in ("vgg", "resnet"):
    seeds = sorted({r["seed"] for r in rows if r["model"] == model})
    print(f"{model}: seed | ANN | scaled: scale, converted, DIET | calibrated: scale, converted, "
          "DIET | choose_units picks (validation best) -> DIET")
    picked = {"scaled": [], "calibrated": [], "auto": []}
    for s in seeds:
        a, b = cell[model, s, "scaled"], cell[model, s, "calibrated"]
        va, vb = max(a["scan"].values()), max(b["scan"].values())
        pick = "calibrated" if vb > va else "scaled"
        auto = cell[model, s, pick]
        for k, r in (("scaled", a), ("calibrated", b), ("auto", auto)):
            picked[k].append(r["diet"])
        print(f"| {s} | {a['ann']:.2%} | {a['scale']}, {a['converted']:.2%}, {a['diet']:.2%} | "
              f"{b['scale']}, {b['converted']:.2%}, {b['diet']:.2%} | {pick} ({va:.1%} / "
              f"{vb:.1%}) -> {auto['diet']:.2%} |")
    for k, v in picked.items():
        print(f"  DIET-SNN mean {k}: {st.mean(v):.2%} +- {st.stdev(v):.2%} (n={len(v)})")
    d = [x - y for x, y in zip(picked["calibrated"], picked["scaled"])]
    print(f"  calibrated - scaled, paired: mean {st.mean(d):+.2%}, sd {st.stdev(d):.2%}")
