import sys, torch, dietsnn
sys.path.insert(0, "examples")
import convert_custom as ex
from dietsnn.data import load
from dietsnn.analysis.energy import SpikeEnergy
import torch.nn.functional as F
data = load("fashion-mnist", limit_train=10000, limit_test=500, val_size=1000)
torch.manual_seed(0)
with dietsnn.use_engine():
    ann = ex.train_ann(ex.vgg_small(), data.train_x, data.train_y, 1)
    snn = dietsnn.convert(ann, timesteps=5)
    dietsnn.calibrate_thresholds(snn, data.train_x[:512], scale=0.5, timesteps=5)
    se = SpikeEnergy(snn)
    print("ann_pj", se.ann_pj, "base", se.base_pj, {k: round(v, 1) for k, v in se.coef.items()})
    snn.train()
    x, y = data.train_x[:64], data.train_y[:64]
    with se:
        out = snn(x)
        ce = F.cross_entropy(out, y)
        cost = se.cost()
    print("ce", ce.item(), "cost", cost.item(), "logit scale", out.abs().mean().item())
    gce = torch.autograd.grad(ce, [m.threshold for _, m in dietsnn.layers.lif_layers(snn)], retain_graph=True)
    gpen = torch.autograd.grad(0.02 * cost, [m.threshold for _, m in dietsnn.layers.lif_layers(snn)])
    print("dCE/dthr", [f"{g.item():.3g}" for g in gce]); print("dpen/dthr", [f"{g.item():.3g}" for g in gpen])
