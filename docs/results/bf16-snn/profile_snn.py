import sys, torch, torch.nn.functional as F
import dietsnn
from dietsnn.config import SNN_TRAIN
from dietsnn.training import make_optimizer
from dietsnn.evaluation import autocast
prec = sys.argv[1]
torch.set_num_threads(int(__import__("os").environ.get("TH", "2"))); torch.manual_seed(0)
X, Y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
with dietsnn.use_engine():
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 3)
    dietsnn.calibrate_thresholds(snn, X, timesteps=10)
    opt = make_optimizer(snn, SNN_TRAIN); snn.train()
    def step():
        with autocast(prec):
            out = snn(X)
        loss = F.cross_entropy(out.float(), Y); opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(3): step()
    from torch.profiler import profile
    with profile() as p:
        for _ in range(5): step()
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=14))
