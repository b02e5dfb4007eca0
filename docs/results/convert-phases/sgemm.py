"""This CPU's float32 matrix-multiply rate on 2 threads (4096^3, mean of 5 after one warm-up)."""
import time

import torch

a = torch.randn(4096, 4096)
b = torch.randn(4096, 4096)
torch.mm(a, b)
t = time.perf_counter()
for _ in range(5):
    torch.mm(a, b)
dt = (time.perf_counter() - t) / 5
print("sgemm GFLOP/s", 2 * 4096**3 / dt / 1e9, torch.get_num_threads())
