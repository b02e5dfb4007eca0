import json, sys, time, statistics, torch, torch.nn.functional as F
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "../../../benchmarks"))
import dietsnn
from bench_steps import time_steps
from dietsnn.analysis.energy import SpikeEnergy
from dietsnn.config import ANN_TRAIN, SNN_TRAIN
from dietsnn.training import make_optimizer
torch.set_num_threads(2); torch.manual_seed(0)
X, Y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
with dietsnn.use_engine():
    for b in (128, 256):
        ann = dietsnn.build_ann("vgg_small")
        r = time_steps(ann, make_optimizer(ann, ANN_TRAIN), X[:b], Y[:b], 15, "bf16")
        print("ann", b, r["wall_s"], "per img ms", 1000 * r["wall_s"] / b, flush=True)
    for b in (64, 128):
        for prec in ("fp32", "bf16"):
            snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 3)
            dietsnn.calibrate_thresholds(snn, X, timesteps=10)
            opt = make_optimizer(snn, SNN_TRAIN)
            try:
                with SpikeEnergy(snn) as en:
                    r = time_steps(snn, opt, X[:b], Y[:b], 15, prec, energy=en)
                print("snn", b, prec, r["wall_s"], "per img ms", 1000 * r["wall_s"] / b, flush=True)
            except Exception as e:
                print("snn", b, prec, "ERR", repr(e)[:200])
