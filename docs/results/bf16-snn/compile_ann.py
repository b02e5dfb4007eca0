import sys, time, torch, torch.nn.functional as F
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "../../../benchmarks"))
import dietsnn
from bench_steps import time_steps
from dietsnn.config import ANN_TRAIN
from dietsnn.training import make_optimizer
from dietsnn.evaluation import autocast
torch.set_num_threads(2); torch.manual_seed(0)
X, Y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
with dietsnn.use_engine():
    ann = dietsnn.build_ann("vgg_small")
    r = time_steps(ann, make_optimizer(ann, ANN_TRAIN), X, Y, 20, "bf16")
    print("eager", r, flush=True)
    ann = dietsnn.build_ann("vgg_small")
    opt = make_optimizer(ann, ANN_TRAIN)
    cm = torch.compile(ann)
    t = time.time()
    with autocast("bf16"):
        out = cm(X)
    F.cross_entropy(out.float(), Y).backward()
    print("compile first step", time.time() - t, flush=True)
    r = time_steps(cm, opt, X, Y, 20, "bf16")
    print("compiled", r, flush=True)
