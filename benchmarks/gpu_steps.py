"""GPU training-step timing of the library-default path (`dietsnn.ann_to_snn`, Adam, a plain
loop; on a GPU the neurons run eager by default), float32 against bf16 autocast, beside the same
layers as an ANN on T*B images and on B images T times (the dense limit is the faster of the two).

    python benchmarks/gpu_steps.py cuda

Prints one RESULT line per (arch, batch) with the median ms per step of 20 steps after 3 warm-up
steps. The peers' GPU backends are benchmarked by `benchmarks/bench_train.py --device cuda`.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

import dietsnn


def bench(step, params, x, y, n: int = 20, warm: int = 3, amp: bool = False) -> float:
    opt = torch.optim.Adam(params, lr=1e-4)
    ts = []
    for _ in range(warm + n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = step(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts[warm:]) * 1000


def main() -> None:
    dev = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    T = 5
    for arch, B in (("vgg5", 64), ("vgg9", 64), ("vgg5", 256), ("vgg9", 256)):
        torch.manual_seed(0)
        ann = dietsnn.build_ann(arch)
        snn = dietsnn.ann_to_snn(ann, T).to(dev)
        ann.to(dev)
        x, y = torch.randn(B, 1, 28, 28, device=dev), torch.randint(0, 10, (B,), device=dev)
        xd = torch.randn(T * B, 1, 28, 28, device=dev)
        yd = torch.randint(0, 10, (T * B,), device=dev)
        r = {"snn-fp32": bench(snn, snn.parameters(), x, y),
             "snn-bf16": bench(snn, snn.parameters(), x, y, amp=True),
             "ann-TxB-fp32": bench(ann, ann.parameters(), xd, yd),
             "ann-TxB-bf16": bench(ann, ann.parameters(), xd, yd, amp=True),
             "ann-B-xT-fp32": T * bench(ann, ann.parameters(), x, y)}
        print("RESULT", arch, "T=5 B=", B, "ms/step", {k: round(v, 2) for k, v in r.items()},
              flush=True)


if __name__ == "__main__":
    main()
