# Ad-hoc: the ReLU + dropout kernels one by one against the fused op, 2 threads, [128, 64, 28, 28] float32 (median of 30 calls, ms)
import torch, time
import dietsnn.functional.ops
from dietsnn.functional import engine, native
from dietsnn.functional.dropout import draw_seed
torch.set_num_threads(2)
x = torch.randn(128, 64, 28, 28)
s = draw_seed()
def t(f, n=30):
    f(); ts=[]
    for _ in range(n):
        a=time.perf_counter(); f(); ts.append(time.perf_counter()-a)
    ts.sort(); return ts[n//2]*1e3
with engine.scope("native"):
    y = torch.ops.dietsnn.dropout(x, 0.2, s, True)
    g = torch.randn_like(x)
    print("fused fwd", t(lambda: torch.ops.dietsnn.dropout(x, 0.2, s, True)))
    print("relu", t(lambda: torch.relu(x)))
    print("drop", t(lambda: torch.ops.dietsnn.dropout(x, 0.2, s)))
    print("fused bwd", t(lambda: torch.ops.dietsnn.relu_dropout_backward(g, y, 0.2)))
    print("drop bwd(=drop)", t(lambda: torch.ops.dietsnn.dropout(g, 0.2, s)))
    print("relu bwd", t(lambda: torch.ops.aten.threshold_backward(g, y, 0)))
    print("native bwd direct", t(lambda: native.relu_dropout_backward(g, y, 1.25)))
    import dietsnn.functional.ops as o
    print(o._native(g))
