import sys, time, copy, functools, json, torch
import dietsnn
import dietsnn.conversion as conv
from dietsnn import checkpoint
from dietsnn.data import load
torch.set_num_threads(2)
out = {}
for run in sys.argv[1:]:
    ann = checkpoint.load_model(checkpoint.resolve_model_path(run + "/ann"))
    d = load("fashion-mnist")
    snn = dietsnn.convert(ann, 3)
    with dietsnn.use_engine():
        dietsnn.calibrate_thresholds(snn, d.calibration_images(512, 0), timesteps=25, scale=1.0, limit=None)
    state = copy.deepcopy(snn.state_dict())
    res = {}
    orig = conv.evaluate
    for prec in ("fp32", "bf16"):
        snn.load_state_dict(state)
        conv.evaluate = functools.partial(orig, precision=prec)
        t = time.perf_counter()
        s, scan = conv.choose_scale(snn, d.val_x, d.val_y)
        res[prec] = {"scale": s, "scan": scan, "seconds": round(time.perf_counter() - t, 2)}
    conv.evaluate = orig
    out[run] = res
    print(run, json.dumps(res), flush=True)
