"""Two gloo processes under torchrun reach the weights of one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import write_idx

from dietsnn import distributed
from dietsnn.checkpoint import load_state

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _cli(*args, nproc=1):
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                 str(nproc), "-m", "dietsnn"] if nproc > 1 else [sys.executable, "-m", "dietsnn"])
    r = subprocess.run([*launcher, *args, "--threads", "1", "--quiet"], env=ENV, timeout=240,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]


def _assert_same_state(a, b):
    sa, sb = load_state(a / "state.pt"), load_state(b / "state.pt")
    assert sa["model"].keys() == sb["model"].keys()
    for k, v in sa["model"].items():
        assert torch.allclose(v, sb["model"][k], rtol=1e-5, atol=1e-6), k
    ha, hb = json.loads((a / "history.json").read_text()), json.loads((b / "history.json").read_text())
    for ra, rb in zip(ha, hb):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)
        assert (ra["train_accuracy"], ra["val_accuracy"]) == (rb["train_accuracy"], rb["val_accuracy"])
    return sa


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_idx(d / "fashion-mnist", n_train=69, n_test=16)  # 61 train: last batch of 13 -> 7 + 6
    return d


def _ann(data, out, epochs, *extra, nproc=1):
    _cli("train-ann", "--data-dir", str(data), "--out", str(out), "--epochs", str(epochs),
         "--batch-size", "16", "--val-size", "8", "--dropout", "0", "--no-augment", "--lr", "0.1",
         "--schedule", "none", "--precision", "fp32", *extra, nproc=nproc)


@pytest.fixture(scope="module")
def ann_one(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ann") / "one"
    _ann(data_dir, out, 2)
    return out


@pytest.mark.slow
@pytest.mark.subprocess
def test_two_processes_match_one_and_resume_under_ddp(data_dir, ann_one, tmp_path):
    _ann(data_dir, tmp_path / "two", 1, nproc=2)  # interrupted after epoch 1 ...
    _ann(data_dir, tmp_path / "two", 2, "--resume", nproc=2)  # ... every rank resumes from it
    st = _assert_same_state(ann_one, tmp_path / "two")
    assert st["epoch"] == 2
    m1 = json.loads((ann_one / "metrics.json").read_text())["ann"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["ann"]
    assert m1["test_accuracy"] == m2["test_accuracy"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_snn_conversion_and_training_under_ddp(data_dir, ann_one, tmp_path):
    common = ["--data-dir", str(data_dir), "--val-size", "8"]
    _cli("convert", str(ann_one), "--out", str(tmp_path / "conv"), "-T", "3",
         "--calib-size", "16", "--calib-timesteps", "4", *common, nproc=2)
    for nproc, name in ((1, "one"), (2, "two")):
        _cli("train-snn", str(tmp_path / "conv"), "--out", str(tmp_path / name), "--epochs", "1",
             "--batch-size", "16", "--optimizer", "sgd", "--lr", "0.05", "--no-augment", "--no-compile",
             "--precision", "fp32", *common, nproc=nproc)  # bf16 rounds each shard apart
    st = _assert_same_state(tmp_path / "one", tmp_path / "two")
    conv = load_state(tmp_path / "one" / "state.pt")["model"]
    assert any(k.endswith(".threshold") for k in conv)  # leaks and thresholds trained and compared
    assert set(os.listdir(tmp_path / "two")) == set(os.listdir(tmp_path / "one"))
    assert st["epoch"] == 1


def test_single_process_helpers_are_no_ops():
    x, y = torch.arange(5.0), torch.arange(5)
    assert distributed.world() == 1 and distributed.rank() == 0 and distributed.is_writer()
    assert distributed.shard(x, y)[0] is x
    assert distributed.all_reduce_sum([1, 2.5]) == [1, 2.5]
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model
