"""Converted accuracy of an fmnist-best ANN (argv[1], a run's ann folder) at T=3 on the
validation split at every scale of config.SCALES (calibrated once at scale 1, the preset's
calibration settings), with the units of the tree on PYTHONPATH."""
import sys

from dietsnn import checkpoint, conversion, data
from dietsnn.config import SCALES, ConversionConfig
from dietsnn.presets import PRESETS
from dietsnn.training import evaluate, seeded

p = PRESETS["fmnist-best"]
d = data.load("fashion-mnist", val_size=p["val_size"])
ann = checkpoint.load_model(sys.argv[1] + "/model.safetensors")
o = ConversionConfig(timesteps=p["timesteps"])
snn = conversion.convert(ann, o.timesteps, o.encoding)
with seeded(0):
    conversion.calibrate_thresholds(snn, d.calibration_images(o.calib_size, 0), o.percentile,
                                    1.0, o.calib_timesteps)
best, scan = conversion.choose_scale(snn, d.val_x, d.val_y, SCALES, climb=False)
print("validation accuracy by scale:", {s: round(a, 4) for s, a in scan.items()}, "best", best)
print("test accuracy at", best, evaluate(snn, d.test_x, d.test_y)["accuracy"])
