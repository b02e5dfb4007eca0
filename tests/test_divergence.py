"""Training that diverges says so: exit code 3, one line naming the step and the last good
checkpoint; non-finite checkpoints are refused at load; --json output is always valid JSON."""

import json

import pytest
import torch
from helpers import one_line_error, write_idx

from dietsnn import ann_to_snn, build_ann, save_model, training
from dietsnn.checkpoint import load_model
from dietsnn.cli import main
from dietsnn.config import TrainConfig
from dietsnn.data import load
from dietsnn.errors import TrainingDiverged, UserError
from dietsnn.files import dumps
from dietsnn.layers import lif_layers


@pytest.fixture
def tiny(tmp_path):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    ann = build_ann("vgg_small")
    save_model(ann, tmp_path / "ann" / "model.safetensors")
    save_model(ann_to_snn(ann, 2), tmp_path / "conv" / "model.safetensors")
    return tmp_path


def _opts(d):
    return ["--data-dir", str(d / "data"), "--quiet", "--val-size", "10", "--epochs", "1",
            "--no-augment"]


@pytest.fixture
def blow_up(monkeypatch):
    """The first optimiser step makes a weight infinite (as an overflowing update does; the
    command line refuses learning rates that torch cannot apply)."""
    real = training.constrain_

    def constrain_(model):
        real(model)
        next(model.parameters()).data.fill_(float("inf"))

    monkeypatch.setattr(training, "constrain_", constrain_)


def test_snn_with_non_finite_parameters_stops_and_names_the_last_good_checkpoint(tiny, capsys,
                                                                                  blow_up):
    out = tiny / "snn"
    err = one_line_error(capsys, ["train-snn", str(tiny / "conv"), "--out", str(out),
                                  "--no-compile", *_opts(tiny)], "parameters became non-finite",
                         code=3)
    assert f"the last good checkpoint is {out / 'model.safetensors'} (epoch 0)" in err
    kept = load_model(out / "model.safetensors")  # the converted model, finite
    assert kept.is_spiking
    assert not (out / "metrics.json").exists()


def test_ann_stopped_at_its_first_step_keeps_no_untrained_model(tiny, capsys, blow_up):
    out = tiny / "ann2"
    one_line_error(capsys, ["train-ann", "--arch", "vgg_small", "--out", str(out),
                            *_opts(tiny)], "no checkpoint was kept (no epoch finished)", code=3)
    assert not (out / "model.safetensors").exists()
    assert main(["evaluate", str(out), "--data-dir", str(tiny / "data")]) == 2
    assert "no model.safetensors" in capsys.readouterr().err


def test_a_loss_far_above_chance_is_divergence(tiny, monkeypatch):
    data = load("fashion-mnist", tiny / "data", val_size=10)
    monkeypatch.setattr(training, "DIVERGED_LOSS_FACTOR", 1e-3)  # any loss counts as diverged
    snn = ann_to_snn(build_ann("vgg_small"), 2)
    with pytest.raises(TrainingDiverged, match=r"mean loss .* in epoch 1, over 0\.001x chance"):
        training.fit(snn, data, TrainConfig(epochs=2, batch_size=32), tiny / "div",
                     progress=False, log=lambda *a: None)
    # the diverged epoch is not saved as "best": the checkpoint is the one before it
    assert json.loads(load_model_extra(tiny / "div" / "model.safetensors"))["epoch"] == 0
    assert not (tiny / "div" / "state.pt").exists()


def load_model_extra(path):
    from dietsnn.checkpoint import read_model_file

    return read_model_file(path)[1]["extra"]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_checkpoints_with_non_finite_values_are_refused(tmp_path, value):
    snn = ann_to_snn(build_ann("vgg_small"), 2)
    name, lif = lif_layers(snn)[0]
    with torch.no_grad():
        lif.threshold.fill_(value)
    save_model(snn, tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match=f"non-finite values in {name}.threshold"):
        load_model(tmp_path / "bad.safetensors")


def test_evaluate_json_is_valid_when_the_loss_is_not_finite(tiny, capsys):
    ann = build_ann("vgg_small")
    with torch.no_grad():
        ann.classifier[-1].weight.mul_(1e38)  # finite weights, infinite logits
        ann.features[0].weight.mul_(1e10)
    save_model(ann, tiny / "huge" / "model.safetensors")
    assert main(["evaluate", str(tiny / "huge"), "--data-dir", str(tiny / "data"),
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # strict: NaN would not parse as null
    assert res["test_loss"] is None


def test_dumps_writes_null_for_nan_and_infinity():
    assert json.loads(dumps({"a": float("nan"), "b": [1.0, float("-inf")], "c": 2})) == \
        {"a": None, "b": [1.0, None], "c": 2}
