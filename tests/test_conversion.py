import numpy as np
import pytest
import torch
from helpers import needs_fmnist

from dietsnn import ann_to_snn, build_ann, calibrate_thresholds
from dietsnn.config import TrainConfig
from dietsnn.conversion.currents import percentile
from dietsnn.data import load
from dietsnn.functional import lif_forward
from dietsnn.layers import LIF
from dietsnn.training import evaluate, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    data = load("fashion-mnist", limit_train=4000, limit_test=300, val_size=500, seed=0)
    ann = build_ann("vgg_small", dropout=0.1)
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64, augment=False, seed=0)
    fit(ann, data, cfg, tmp_path_factory.mktemp("ann"), progress=False, log=lambda *a: None)
    return ann.eval(), data


@pytest.mark.slow
@needs_fmnist
def test_converted_snn_agrees_with_ann_at_long_latency(trained):
    ann, data = trained
    acc = evaluate(ann, data.test_x, data.test_y)["accuracy"]
    assert acc > 0.7  # the ANN learned something
    snn = ann_to_snn(ann, 200).eval()
    calibrate_thresholds(snn, data.train_x[:256], percentile=99.7, scale=1.0, timesteps=50)
    with torch.no_grad():
        a = ann(data.test_x).argmax(1)
        s = torch.cat([snn(xb).argmax(1) for xb in data.test_x.split(100)])
    agree = (a == s).float().mean().item()
    assert agree >= 0.95, agree


@pytest.mark.slow
@needs_fmnist
def test_short_latency_untrained_conversion_is_worse(trained):
    ann, data = trained
    snn = ann_to_snn(ann, 2).eval()
    calibrate_thresholds(snn, data.train_x[:256], percentile=99.7, scale=1.0, timesteps=50)
    with torch.no_grad():
        a = ann(data.test_x).argmax(1)
        s = snn(data.test_x).argmax(1)
    assert (a == s).float().mean().item() < 0.95


@pytest.mark.parametrize("n", [7, 1000, 300_000])
@pytest.mark.parametrize("p", [0.5, 50.0, 99.7, 100.0])
def test_percentile_matches_numpy(n, p):
    x = torch.randn(n).relu()
    assert percentile(x, p).item() == pytest.approx(np.percentile(x.numpy(), p), rel=1e-6, abs=1e-7)


@torch.no_grad()
def naive_thresholds(snn, images, p, T):
    """Reference: for each layer, re-run the whole prefix step by step (slow, obviously right)."""
    units = snn.units()
    lif_idx = [i for i, u in enumerate(units) if isinstance(u, LIF)]
    thresholds = []
    for k, li in enumerate(lif_idx):
        states = [None] * k
        best = -1.0
        for _ in range(T):
            h = images
            j = 0
            for u in units[:li]:
                if isinstance(u, LIF):
                    o, _, states[j] = lif_forward(h.unsqueeze(0), u.leak, torch.tensor(thresholds[j]),
                                                  states[j])
                    h = o[0]
                    j += 1
                else:
                    h = u(h)
            best = max(best, np.percentile(h.numpy().ravel(), p))
        thresholds.append(best)
    return thresholds


def test_layer_by_layer_calibration_matches_naive_prefix_rerun():
    torch.manual_seed(1)
    ann = build_ann("vgg_small", image_size=12).eval()
    snn = ann_to_snn(ann, 5).eval()
    images = torch.randn(16, 1, 12, 12)
    got = calibrate_thresholds(snn, images, percentile=99.0, scale=1.0, timesteps=6)
    want = naive_thresholds(snn, images, 99.0, 6)
    assert got == pytest.approx(want, rel=1e-5)
    snn2 = ann_to_snn(ann, 5)
    scaled = calibrate_thresholds(snn2, images, percentile=99.0, scale=0.3, timesteps=6)
    assert scaled == pytest.approx([0.3 * w for w in want], rel=1e-5)
    assert snn2.get_submodule("net.features.1").threshold.item() == pytest.approx(0.3 * want[0], rel=1e-5)


def test_calibration_rejects_bad_options():
    snn = ann_to_snn(build_ann("vgg_small"), 5)
    x = torch.randn(2, 1, 28, 28)
    for kw in ({"percentile": 0.0}, {"percentile": 101.0}, {"scale": 0.0}, {"timesteps": 0}):
        with pytest.raises(ValueError):
            calibrate_thresholds(snn, x, **kw)


def test_time_chunks_and_recompute_path_give_the_same_thresholds(monkeypatch):
    import dietsnn.conversion.currents as cal

    torch.manual_seed(1)
    ann = build_ann("vgg_small", image_size=12).eval()
    x = torch.randn(16, 1, 12, 12)
    want = calibrate_thresholds(ann_to_snn(ann, 5), x, 99.0, 1.0, 6)
    monkeypatch.setattr(cal, "CHUNK_ELEMENTS", 300)  # many small time chunks
    monkeypatch.setattr(cal, "CACHE_BYTES", 10)  # currents recomputed for the firing pass
    assert calibrate_thresholds(ann_to_snn(ann, 5), x, 99.0, 1.0, 6) == want


def test_layer_without_positive_current_gets_a_positive_threshold():
    snn = ann_to_snn(build_ann("vgg_small", image_size=8), 3)
    with torch.no_grad():
        # positive images -> negative current everywhere
        snn.get_submodule("net.features.0").weight.fill_(-1.0)
    th = calibrate_thresholds(snn, torch.rand(4, 1, 8, 8), 99.7, 0.5, 4)
    assert th[0] == 0.5 and all(t > 0 for t in th)


def test_firing_runs_in_bounded_chunks(monkeypatch):
    """The LIF runs over at most CHUNK_ELEMENTS floats at a time (or one step), whatever T."""
    from dietsnn.conversion import currents as calibration

    monkeypatch.setattr(calibration, "CHUNK_ELEMENTS", 5000)
    sizes = []
    real = calibration.lif_forward

    def spy(x, *a, **k):
        sizes.append((x.numel(), x[0].numel()))
        return real(x, *a, **k)

    monkeypatch.setattr(calibration, "lif_forward", spy)
    snn = ann_to_snn(build_ann("vgg_small"), 5)
    calibrate_thresholds(snn, torch.rand(8, 1, 28, 28), timesteps=40)
    assert sizes and all(n <= max(5000, step) for n, step in sizes)


def _exact_sums(model: torch.nn.Module) -> None:
    """Weights on a grid of 2^-10, no biases, batch norm the identity (eps 0): every product
    and sum of the network's layers on inputs on a grid of 2^-4 (and on spikes) is exact in
    float32, whatever the order of the sums."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eps = 0.0  # running mean 0, variance 1, weight 1, bias 0 as built
            elif isinstance(getattr(m, "weight", None), torch.Tensor):
                m.weight.copy_((m.weight * 1024).round() / 1024)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()


def _custom_residual():
    from conversion_models import ResNetLike

    return ResNetLike("max")


@pytest.mark.parametrize("arch,encoding,series", [
    ("vgg_small", "direct", False),
    pytest.param("resnet20", "direct", False, marks=pytest.mark.slow),
    ("vgg_small", "rate", False), ("custom", "direct", False), ("custom", "direct", True)])
def test_sub_batches_give_the_thresholds_of_one_batch(monkeypatch, arch, encoding, series):
    """Calibration over sub-batches of a few images (currents recomputed for the firing pass)
    sets bit for bit the thresholds of calibration over all images at once: each step's
    percentile is over all images (rate coding: one draw for the whole batch). The weights and
    inputs lie on a grid of powers of two (`_exact_sums`), so that no sum of the layers rounds:
    a matrix product may block a batch of another size differently and round in other places
    (on an AVX-512 CPU a linear layer's output differed in the last bit)."""
    import dietsnn.conversion.currents as cal

    torch.manual_seed(0)
    size = 28 if arch == "custom" else 12
    ann = (_custom_residual() if arch == "custom" else build_ann(arch, image_size=size)).eval()
    _exact_sums(ann)
    x = (torch.randn(10, 1, size, size) * 16).round() / 16
    if series:
        x = (torch.rand(6, 10, 1, size, size) * 16).round() / 16

    def thresholds():
        torch.manual_seed(1)
        snn = ann_to_snn(ann, 5, encoding)
        return calibrate_thresholds(snn, x, 99.0, 1.0, 6)

    whole = thresholds()
    monkeypatch.setattr(cal, "CACHE_BYTES", 10)  # currents recomputed for the firing pass
    for b in (2, 4):  # sub-batches of 2 images; of 4, 4 and 2
        monkeypatch.setattr(cal, "sub_batch", lambda B, widest, b=b: b)
        assert thresholds() == whole
