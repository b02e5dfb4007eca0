import sys, torch, dietsnn
from dietsnn import analysis, memory
from dietsnn.data import load
torch.set_num_threads(2)
R = '/work/runs/q2/run-after'
d = load("fashion-mnist")
x, y = d.test_x[:2000], d.test_y[:2000]
print("base", round(memory.peak_rss_mb()))
for name in ("converted", "snn"):
    m = dietsnn.load_model(f"{R}/{name}/model.safetensors")
    rows = analysis.sweep(m, [1, 2, 3, 4, 5, 6, 8, 10], x, y)
    print(name, rows[2]["accuracy"], round(memory.peak_rss_mb()))
