"""Diagnostic: a converted SNN (a model.safetensors) evaluated at T=2, 3, 5 on the first 2,000
test images with every LIF starting at membrane 0 (the method) and at 0.5 x its threshold, by
patching the PyTorch loop of the eager engine. Output: u0.txt."""
import sys, torch, dietsnn
from dietsnn.functional import ops
from dietsnn.data import load
from dietsnn.evaluation import evaluate
torch.set_num_threads(1)
snn = dietsnn.load_model(sys.argv[1])
d = load("fashion-mnist")
x, y = d.test_x[:2000], d.test_y[:2000]
orig = ops._forward_loop
for frac in [0.0, 0.5]:
    def patched(x_, leak, v, u0, keep, step=None, frac=frac):
        if u0 is None:
            u0 = torch.full_like(x_[0], 0.0) + frac * v
        return orig(x_, leak, v, u0, keep, step)
    ops._forward_loop = patched
    for T in (2, 3, 5):
        snn.timesteps = T
        with dietsnn.use_engine("eager"):
            acc = evaluate(snn, x, y)["accuracy"]
        print(f"u0={frac} T={T} acc {acc:.4f}", flush=True)
