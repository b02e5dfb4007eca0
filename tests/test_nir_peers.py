"""snnTorch, SpikingJelly and Norse import dietsnn's NIR export and reproduce its predictions on
Fashion-MNIST test images. Each test runs where its peer is importable (the environment of
benchmarks/setup_peers.sh; `pytest -m peers` there) and is skipped elsewhere."""

import importlib

import pytest
import torch
from helpers import needs_fmnist
from nir_peers import PEERS, agreement

import dietsnn
from dietsnn.config import TrainConfig
from dietsnn.data import load
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
    graph = to_nir(snn, nonleaky="lif", pooling="conv")  # the form every peer imports
    soft = agreement(peer, graph, x, want, soft=True)
    hard = agreement(peer, graph, x, want, soft=False)  # as imported: NIR's reset to v_reset
    print(f"{peer}: agreement {soft:.4f} with soft reset, {hard:.4f} as imported")
    assert soft >= MIN_AGREEMENT[peer], soft
    assert hard < soft  # the soft reset is what makes the difference: the check has teeth


@pytest.mark.parametrize("peer", [p for p in peer_params() if p.values[0] == "spikingjelly"])
def test_spikingjelly_reads_the_default_form(peer, model_and_images):
    """SpikingJelly maps nir.IF and nir.AvgPool2d: the default export needs no option."""
    snn, x, want = model_and_images
    assert agreement(peer, to_nir(snn), x, want) >= MIN_AGREEMENT[peer]
