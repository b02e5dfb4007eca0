"""snnTorch, SpikingJelly and Norse import dietsnn's NIR export and reproduce its predictions on
Fashion-MNIST test images, and `dietsnn.from_nir` imports the graphs each of them exports and
reproduces the exporting network's predictions. Each test runs where its peer is importable
(the environment of benchmarks/setup_peers.sh; `pytest -m peers` there), else is skipped."""

import importlib

import pytest
import torch
from helpers import needs_fmnist
from nir_peers import (
    NORSE_DT,
    PEERS,
    agreement,
    fix_norse,
    native_norse,
    native_snntorch,
    native_spikingjelly,
)

import dietsnn
from dietsnn.config import TrainConfig
from dietsnn.data import load
from dietsnn.errors import UserError
from dietsnn.layers import lif_layers
from dietsnn.training import fit

nir = pytest.importorskip("nir")
from dietsnn.export import to_nir  # noqa: E402

IMPORTERS = {"snntorch": "snntorch.import_nir", "spikingjelly":
             "spikingjelly.activation_based.nir_exchange", "norse": "norse.torch"}
LEAKS = [1.0, 0.9, 0.95, 0.85]  # both NIR neuron kinds, leaks as DIET training leaves them
T = 5
# the least agreement with dietsnn's predictions, per peer, with the soft reset switched on:
# exact dynamics (SpikingJelly, Norse) up to float rounding; snnTorch's `Leaky` never fires in a
# step that starts with its membrane above the threshold (docs/NIR.md)
MIN_AGREEMENT = {"snntorch": 0.97, "spikingjelly": 0.995, "norse": 0.995}


def importable(peer: str) -> bool:
    try:
        importlib.import_module(IMPORTERS[peer])
    except Exception:  # not installed, or broken beside this torch: nothing to test
        return False
    return True


def peer_params():
    return [pytest.param(p, marks=pytest.mark.skipif(not importable(p), reason=f"{p} not importable"))
            for p in PEERS]


pytestmark = [pytest.mark.peers, pytest.mark.slow, needs_fmnist]


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    """A briefly trained vgg_small, converted and calibrated, with a mix of leaks; its
    predictions on 400 test images."""
    torch.manual_seed(0)
    data = load("fashion-mnist", limit_train=2000, limit_test=400, val_size=200, seed=0)
    ann = dietsnn.build_ann("vgg_small", dropout=0.0)
    cfg = TrainConfig(epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="none",
                      batch_size=32, augment=False, seed=0)
    fit(ann, data, cfg, tmp_path_factory.mktemp("ann"), progress=False, log=lambda *a: None)
    snn = dietsnn.ann_to_snn(ann.eval(), T).eval()
    dietsnn.calibrate_thresholds(snn, data.train_x[:128], timesteps=20)
    with torch.no_grad():
        for (_, m), lam in zip(lif_layers(snn), LEAKS):
            m.leak.fill_(lam)
        want = torch.cat([snn(xb).argmax(1) for xb in data.test_x.split(100)])
    acc = (want == data.test_y).float().mean().item()
    assert acc > 0.6, acc  # a network that classifies, so agreement means something
    return snn, data.test_x, want


@pytest.mark.parametrize("peer", peer_params())
def test_peer_reproduces_dietsnn_predictions(peer, model_and_images):
    snn, x, want = model_and_images
    graph = to_nir(snn)  # the default form: every peer imports it
    soft = agreement(peer, graph, x, want, soft=True)
    hard = agreement(peer, graph, x, want, soft=False)  # as imported: NIR's reset to v_reset
    print(f"{peer}: agreement {soft:.4f} with soft reset, {hard:.4f} as imported")
    assert soft >= MIN_AGREEMENT[peer], soft
    assert hard < soft  # the soft reset is what makes the difference: the check has teeth


@pytest.mark.parametrize("peer", [p for p in peer_params() if p.values[0] == "spikingjelly"])
def test_spikingjelly_reads_the_exact_form(peer, model_and_images):
    """SpikingJelly maps nir.IF and nir.AvgPool2d: it also reads the exact form."""
    snn, x, want = model_and_images
    graph = to_nir(snn, nonleaky="if", pooling="avg")
    assert agreement(peer, graph, x, want) >= MIN_AGREEMENT[peer]


@pytest.fixture(scope="module")
def mlp_and_images():
    """A small trained MLP converted and calibrated (an IF and a LIF layer), for the peers whose
    exporters take linear networks only (snnTorch: not Conv2d; Norse: not Flatten or pooling)."""
    torch.manual_seed(0)
    data = load("fashion-mnist", limit_train=2000, limit_test=400, val_size=200, seed=0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 256, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(256, 128, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(128, 10, bias=False))
    opt = torch.optim.Adam(mlp.parameters(), 1e-3)
    for _ in range(3):
        for xb, yb in zip(data.train_x.split(64), data.train_y.split(64)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(mlp(xb), yb).backward()
            opt.step()
    snn = dietsnn.convert(mlp.eval(), T).eval()
    dietsnn.calibrate_thresholds(snn, data.train_x[:128], timesteps=20)
    with torch.no_grad():
        for (_, m), lam in zip(lif_layers(snn), [1.0, 0.9]):
            m.leak.fill_(lam)
    return snn.units(), data.test_x, data.test_y


def imported_agreement(graph, want_logits, x, **kw) -> float:
    model = dietsnn.from_nir(graph, timesteps=T, **kw)
    with torch.no_grad():
        got = torch.cat([model(xb).argmax(1) for xb in x.split(100)])
    return (got == want_logits.argmax(1)).float().mean().item()


def _only(name):
    return [p for p in peer_params() if p.values[0] == name]


@pytest.mark.parametrize("peer", _only("spikingjelly"))
def test_dietsnn_reproduces_a_spikingjelly_export(peer, model_and_images):
    """A conv network (IF and LIF nodes, average pooling, flatten) in SpikingJelly, exported by
    SpikingJelly (hard reset to 0: its exporter refuses the soft reset)."""
    snn, x, _ = model_and_images
    graph, want = native_spikingjelly(snn.units(), x, T)
    acc = (want.argmax(1) == model_and_images[2]).float().mean().item()
    got = imported_agreement(graph, want, x)
    soft = imported_agreement(graph, want, x, reset="subtract")
    print(f"spikingjelly -> dietsnn: agreement {got:.4f} (reset zero), {soft:.4f} with "
          f"reset='subtract'; spikingjelly agrees with dietsnn's SNN on {acc:.4f}")
    assert got >= 0.995 and soft < got


@pytest.mark.parametrize("peer", _only("snntorch"))
def test_dietsnn_reproduces_a_snntorch_export(peer, mlp_and_images):
    """snnTorch's `Leaky` with reset to zero is NIR's neuron: the import reproduces it. With its
    default subtraction, `reset='subtract'` is dietsnn's soft reset, the same where the leak is
    1 (snnTorch subtracts the threshold after the leak, dietsnn before it)."""
    units, x, y = mlp_and_images
    units, x = units[1:], x.flatten(1)  # snnTorch's exporter takes no Flatten before a Linear
    graph, want = native_snntorch(units, x, T, reset="zero")
    assert (want.argmax(1) == y).float().mean() > 0.6
    zero = imported_agreement(graph, want, x)
    graph, want = native_snntorch(units, x, T, reset="subtract")
    sub = imported_agreement(graph, want, x, reset="subtract")
    print(f"snntorch -> dietsnn: agreement {zero:.4f} (reset zero), {sub:.4f} (subtract)")
    assert zero >= 0.995 and sub >= 0.9


@pytest.mark.parametrize("peer", _only("norse"))
def test_dietsnn_reproduces_a_norse_export(peer, mlp_and_images):
    """Norse's graph, once its time constants are corrected (`fix_norse`), imported at Norse's
    dt; as written, its LIF time constants are below the step and the import refuses them."""
    units, x, y = mlp_and_images
    graph, want = native_norse(units[1:], x.flatten(1), T)  # Norse exports no Flatten
    with pytest.raises(UserError, match="below the step dt"):
        dietsnn.from_nir(graph, timesteps=T, dt=NORSE_DT)
    got = imported_agreement(fix_norse(graph), want, x.flatten(1), dt=NORSE_DT)
    print(f"norse -> dietsnn: agreement {got:.4f}")
    assert got >= 0.995
