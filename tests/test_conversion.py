import pytest
import torch
from conftest import needs_fmnist

from dietsnn import ann_to_snn, build_ann, calibrate_thresholds
from dietsnn.config import TrainConfig
from dietsnn.data import load
from dietsnn.training import evaluate, fit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    data = load("fashion-mnist", limit_train=4000, limit_test=300, val_size=500, seed=0)
    ann = build_ann("vgg_small", dropout=0.1)
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=64, augment=False, seed=0)
    fit(ann, data, cfg, tmp_path_factory.mktemp("ann"), progress=False, log=lambda *a: None)
    return ann.eval(), data


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


@needs_fmnist
def test_short_latency_untrained_conversion_is_worse(trained):
    ann, data = trained
    snn = ann_to_snn(ann, 2).eval()
    calibrate_thresholds(snn, data.train_x[:256], percentile=99.7, scale=1.0, timesteps=50)
    with torch.no_grad():
        a = ann(data.test_x).argmax(1)
        s = snn(data.test_x).argmax(1)
    assert (a == s).float().mean().item() < 0.95
