"""`pipeline.run`: the models pass from step to step in memory; the checkpoints on disk are what
a later command (or a resume) reads, and hold the same models."""

import dataclasses

import torch
from helpers import write_idx

from dietsnn import checkpoint as ckpt
from dietsnn import pipeline
from dietsnn.config import ANN_TRAIN, SNN_TRAIN, ConversionConfig
from dietsnn.data import load


def _run(tmp_path, monkeypatch, out, resume=False):
    loads = []
    real = ckpt.load_model
    monkeypatch.setattr(ckpt, "load_model", lambda p: loads.append(p) or real(p))
    data = load("fashion-mnist", tmp_path / "data", val_size=20)
    ctx = pipeline.Context(data, progress=False, log=lambda _: None)
    ann = dataclasses.replace(ANN_TRAIN, epochs=2, batch_size=16)
    snn = dataclasses.replace(SNN_TRAIN, epochs=1, batch_size=16)
    opts = ConversionConfig(calib_size=16, calib_timesteps=3)
    m = pipeline.run(out, ctx, "vgg_small", ann, opts, snn, resume=resume, sweep_timesteps=[2],
                     sweep_limit=10)
    return m, loads


def test_run_passes_models_in_memory_and_its_checkpoints_hold_them(tmp_path, monkeypatch):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=80, n_test=20)
    out = tmp_path / "run"
    m, loads = _run(tmp_path, monkeypatch, out)
    assert loads == []  # nothing read back from disk
    data = load("fashion-mnist", tmp_path / "data", val_size=20)
    ctx = pipeline.Context(data, progress=False, log=lambda _: None)
    # the checkpoints are the models the steps measured
    ann = ckpt.load_model(out / "ann" / ckpt.MODEL_FILE)
    assert pipeline.evaluate_test(ann, ctx)["accuracy"] == m["ann"]["test_accuracy"]
    snn = ckpt.load_model(out / "snn" / ckpt.MODEL_FILE)
    assert pipeline.layer_report(snn, ctx)[1] == m["snn"]["test_accuracy"]
    converted = ckpt.load_model(out / "converted" / ckpt.MODEL_FILE)
    conv_sweep = m["sweep"]["converted SNN"]
    converted.timesteps = conv_sweep[0]["timesteps"]
    x, y = data.test_x[:10], data.test_y[:10]
    with torch.no_grad():
        acc = (converted(x).argmax(1) == y).float().mean().item()
    assert abs(acc - conv_sweep[0]["accuracy"]) < 1e-9  # the sweep ran the untrained SNN

    # a resumed finished run reads the checkpoints it needs and reproduces the numbers
    m2, loads = _run(tmp_path, monkeypatch, out, resume=True)
    assert {p.parent.name for p in loads} == {"snn", "converted"}
    assert m2["snn"]["test_accuracy"] == m["snn"]["test_accuracy"]
    assert m2["sweep"] == m["sweep"]


def test_a_scale_scan_near_chance_is_flagged():
    """The scan of docs/RESULTS.md section 1.3 item 6 (batch-norm VGG, T=3) is below twice
    chance on 10 classes; a scan like the default network's is far above it."""
    assert pipeline.near_chance({0.3: 0.1164, 0.4: 0.1774, 0.5: 0.1454, 0.6: 0.1494}, 10)
    assert not pipeline.near_chance({0.4: 0.8962, 0.5: 0.9019, 0.6: 0.8957}, 10)
    assert not pipeline.near_chance({0.5: 0.2}, 10)  # twice chance itself is not below it
    assert pipeline.near_chance({0.5: 0.99}, 1)  # one class: chance is certainty
