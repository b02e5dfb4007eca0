import json, resource, sys, time, torch
from dietsnn import checkpoint as ckpt
from dietsnn.analysis.sweep import prefix_sweep
from dietsnn.data import load
torch.set_num_threads(2)
d = load("fashion-mnist")
out = {}
for name in ("converted", "snn"):
    m = ckpt.load_model(f"/work/runs/s8/new/{name}/model.safetensors")
    t = time.time()
    out[name] = prefix_sweep(m, [1,2,3,4,5,6,8,10], d.test_x[:2000], d.test_y[:2000])
    out[name + "_s"] = round(time.time() - t, 2)
out["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)
json.dump(out, open(sys.argv[1], "w"), indent=1)
print({k: v for k, v in out.items() if not isinstance(v, list)})
