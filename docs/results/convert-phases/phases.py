"""`dietsnn convert`'s phases for the default ANN, fp32 and under bf16 autocast, twice each:
calibration (512 images, 25 steps), the scale climb on the 5,000 validation images (evaluate
runs in fp32 either way, as `choose_scale` calls it), the fp32 test pass.

    PYTHONPATH=src python docs/results/convert-phases/phases.py RUN/ann
"""
import sys
import time

import torch

from dietsnn import checkpoint as ckpt
from dietsnn import conversion, data
from dietsnn.config import ConversionConfig
from dietsnn.evaluation import evaluate
from dietsnn.training import seeded

d = data.load("fashion-mnist")
ann = ckpt.load_model(sys.argv[1] + "/model.safetensors")  # RUN/ann of a default run
o = ConversionConfig()
res = {}
for prec in ("fp32", "bf16", "fp32", "bf16"):
    snn = conversion.convert(ann, o.timesteps, o.encoding, leak=o.leak, gamma=o.gamma, surrogate=o.surrogate)
    images = d.calibration_images(o.calib_size, 0)
    t = time.perf_counter()
    with seeded(0), torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
        thr = conversion.calibrate_thresholds(snn, images, o.percentile, 1.0, o.calib_timesteps)
    t1 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
        s, scan = conversion.choose_scale(snn, d.val_x, d.val_y)
    t2 = time.perf_counter()
    acc = evaluate(snn, d.test_x, d.test_y)["accuracy"]
    t3 = time.perf_counter()
    print(prec, [f"{x:.5f}" for x in thr], f"calib {t1-t:.2f}s scan {t2-t1:.2f}s test {t3-t2:.2f}s", s, {k: round(v, 4) for k, v in scan.items()}, acc, flush=True)
