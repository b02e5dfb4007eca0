"""Diagnostic: the threshold scale of a converted SNN (a model.safetensors and the scale it was
saved with) chosen again on 1,000 validation images with every LIF starting at 0.5 x its
threshold (eager engine, patched PyTorch loop). Output: u0.txt."""
import sys, torch, dietsnn
from dietsnn.functional import ops
from dietsnn.data import load
from dietsnn.conversion import choose_scale
from dietsnn.layers import lif_layers
torch.set_num_threads(2)
snn = dietsnn.load_model(sys.argv[1])
with torch.no_grad():
    for _, m in lif_layers(snn): m.threshold.div_(float(sys.argv[2]))
d = load("fashion-mnist")
x, y = d.val_x[:1000], d.val_y[:1000]
orig = ops._forward_loop
def patched(x_, leak, v, u0, keep, step=None):
    if u0 is None:
        u0 = torch.zeros_like(x_[0]) + 0.5 * v
    return orig(x_, leak, v, u0, keep, step)
ops._forward_loop = patched
with dietsnn.use_engine("eager"):
    print(choose_scale(snn, x, y, scales=(0.3, 0.4, 0.6, 0.8, 1.0, 1.3), climb=False))
