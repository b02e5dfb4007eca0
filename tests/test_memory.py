"""Values that would exhaust memory are refused up front, with the estimate, by the library's
entry points and by the command line before any work."""

import pytest
import torch

from dietsnn import ann_to_snn, build_ann, calibrate_thresholds, memory
from dietsnn.cli import main
from dietsnn.config import TrainConfig
from dietsnn.data import Splits, dataset_info
from dietsnn.errors import UserError
from dietsnn.predict import predict_images
from dietsnn.training import evaluate, fit

CFG = build_ann("vgg_small").config


def test_estimate_grows_with_batch_and_timesteps():
    e = memory.estimate_bytes
    for mode in memory.MODES:
        assert e(CFG, 2, 3, mode) > e(CFG, 1, 3, mode) and e(CFG, 2, 3, mode) > e(CFG, 2, 1, mode)
    S, M, P = memory.activation_elements(CFG)
    assert M == 32 * 28 * 28 and S > M and P == sum(p.numel() for p in build_ann("vgg_small").parameters())
    assert e(CFG, 64, 5, "train") == 64 * 5 * S * 4 + 4 * P * 4
    assert e(CFG, 1, 1, "calibrate", "rate") > e(CFG, 1, 1, "calibrate", "direct")


def test_estimate_draws_no_random_numbers():
    before = torch.random.get_rng_state()
    memory.activation_elements({**CFG, "image_size": 32})
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.fixture
def small_memory(monkeypatch):
    """A machine with 100 MB available."""
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 100_000_000)


def test_refusal_names_the_estimate_and_the_available_memory(small_memory):
    with pytest.raises(UserError) as e:
        memory.check_memory(CFG, 64, 1000, "train")
    msg = str(e.value)
    assert "64 images x 1000 timesteps needs about 42.0 GB" in msg and "100.0 MB is available" in msg
    memory.check_memory(CFG, 8, 1, "train")  # fits: no error
    memory.check_memory({"arch": "resnet-custom"}, 10**9, 10**9)  # unknown: not estimated


def _splits(n=8):
    x, y = torch.zeros(n, 1, 28, 28), torch.zeros(n, dtype=torch.long)
    return Splits(dataset_info("fashion-mnist"), x, y, x[:2], y[:2], x, y)


def test_library_entry_points_refuse_before_allocating(small_memory, tmp_path):
    snn = ann_to_snn(build_ann("vgg_small"), 10**5)
    with pytest.raises(UserError, match="threshold calibration"):
        calibrate_thresholds(snn, torch.zeros(4, 1, 28, 28), timesteps=10**5)
    with pytest.raises(UserError, match="evaluation of vgg_small"):
        evaluate(snn, torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(UserError, match="training of vgg_small"):
        fit(snn, _splits(), TrainConfig(epochs=1, batch_size=8), tmp_path / "run",
            progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(UserError, match="evaluation of vgg_small"):
        predict_images(snn, ["never-read.png"], dataset_info("fashion-mnist"))


@pytest.mark.parametrize("argv,match", [
    (["train-ann", "--batch-size", str(2**20)], "with 1048576 images x 1 timesteps"),
    (["run", "--timesteps", "100000"], "x 100000 timesteps needs about"),
    (["run", "--calib-timesteps", str(10**5)], "threshold calibration of vgg_small"),
    (["run", "--sweep-timesteps", "1,90000"], "lower --timesteps or --sweep-timesteps"),
])
def test_cli_refuses_before_loading_data(capsys, tmp_path, argv, match):
    assert main([*argv, "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err  # the data folder does not exist: nothing was loaded yet
    assert match in err and err.count("\n") == 1 and "is available on cpu" in err
    assert not (tmp_path / "o").exists()


def test_limit_train_caps_the_batch_of_the_estimate(small_memory, capsys, tmp_path):
    argv = ["train-ann", "--batch-size", "100000", "--out", str(tmp_path / "o")]
    assert main([*argv, "--limit-train", "50", "--val-size", "5"], validate_only=True) == 0
    assert main(argv, validate_only=True) == 2
    assert "with 100000 images" in capsys.readouterr().err
