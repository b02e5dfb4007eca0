"""`dietsnn convert --from-module MODULE:NAME`: a user's own model through the command line,
then `train-snn` and `evaluate` on the converted checkpoint."""

import json

from helpers import write_idx

from dietsnn import load_model
from dietsnn.cli import main

USER_MODULE = '''
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 14 * 14, 10)).eval()
'''


def test_convert_a_model_from_a_module_then_train_and_evaluate(tmp_path, monkeypatch, capsys):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    data = ["--data-dir", str(tmp_path / "data"), "--quiet", "--val-size", "10"]
    assert main(["convert", "--from-module", "usermodels:make", "-T", "4", "--calib-size", "16",
                 "--calib-timesteps", "4", "--out", "conv", *data]) == 0
    m = json.loads((tmp_path / "conv" / "metrics.json").read_text())["converted"]
    assert m["source"] == "usermodels:make" and 0 <= m["test_accuracy"] <= 1
    assert len(m["layers"]) == 1
    snn = load_model(tmp_path / "conv")
    assert snn.timesteps == 4 and snn.config["input_shape"] == [1, 28, 28]
    assert main(["train-snn", "conv", "--epochs", "1", "--out", "snn", *data]) == 0
    assert main(["evaluate", "snn", *data]) == 0
    assert "SNN T=4 test accuracy" in capsys.readouterr().out


def test_convert_needs_exactly_one_source(tmp_path, capsys):
    assert main(["convert", "--out", str(tmp_path / "o")]) == 2
    assert "one of the two" in capsys.readouterr().err
    assert main(["convert", "x", "--from-module", "a:b", "--out", str(tmp_path / "o")]) == 2


def test_a_module_that_cannot_be_imported_is_one_line(tmp_path, capsys):
    assert main(["convert", "--from-module", "no_such_module_here:make", "--out",
                 str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no_such_module_here" in err and err.count("\n") == 1
