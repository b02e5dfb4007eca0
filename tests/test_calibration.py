"""The calibration machinery (`dietsnn.conversion.currents`): the streamed percentiles, the spike trains
kept as bits or re-run, the progress lines, and the validation-chosen scale (`scale="auto"`)."""

import json
import logging

import numpy as np
import pytest
import torch
from helpers import write_idx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import dietsnn
from dietsnn import ann_to_snn, build_ann
from dietsnn.cli import main
from dietsnn.config import SCALES
from dietsnn.conversion import choose_scale
from dietsnn.conversion import currents as calibration
from dietsnn.functional import lif_forward
from dietsnn.layers import LIF, lif_layers
from dietsnn.training import evaluate

finite = st.floats(-4, 4, width=32, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 300), elements=finite),
       st.floats(0.0, 100.0), st.lists(st.integers(0, 300), max_size=6))
def test_streamed_percentile_equals_the_percentile_of_all(x, p, cuts):
    """`TopK` over any split of the values (ties, tiny parts and empty parts included) gives
    `percentile` of them all, bit for bit."""
    x = torch.from_numpy(x)
    top = calibration.TopK(x.numel(), p)
    edges = [0, *sorted(c % (x.numel() + 1) for c in cuts), x.numel()]
    for a, b in zip(edges, edges[1:]):
        top.add(x[a:b])
    assert top.value() == calibration.percentile_of(x, p)


def test_streamed_percentile_of_large_steps():
    """The sampled and kthvalue paths of `percentile` agree with `TopK` over sub-batches."""
    g = torch.Generator().manual_seed(0)
    for p in (99.7, 90.0, 50.0):
        x = torch.randn(300_000, generator=g).round(decimals=2)
        top = calibration.TopK(x.numel(), p)
        for part in x.split(70_001):
            top.add(part)
        assert top.value() == calibration.percentile_of(x, p)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(1, 4), st.integers(0, 2**31 - 1),
       st.sampled_from([50.0, 90.0, 99.0, 99.7, 100.0]))
def test_max_percentile_is_the_max_of_every_steps_percentile(t, n, parts, seed, p):
    """Exactly (==) the maximum of the per-step percentiles over all images, whatever the
    sub-batches; steps of equal values and steps that repeat an earlier maximum included."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, 3 * parts, n, generator=g).round(decimals=1)
    x[-1] = x[0]
    want = max(calibration.percentile_of(x[i], p) for i in range(t))
    chunks = [(slice(3 * j, 3 * j + 3), t0, x[t0 : t0 + 2, 3 * j : 3 * j + 3])
              for j in range(parts) for t0 in range(0, t, 2)]
    got, kept = calibration.max_percentile(iter(chunks), p, x[0].numel(), t)
    assert got == want
    assert kept.cached and len(kept) == len(chunks)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("n", [1, 7, 8, 13, 64])
def test_bits_round_trip(n, native):
    s = torch.rand(3, 5, n) > 0.5
    b = calibration.pack(s, native)
    assert b.dtype == torch.uint8 and b.shape == (3, 5, (n + 7) // 8)
    assert torch.equal(calibration.unpack(b, n, native).bool(), s)
    assert torch.equal(b, calibration.pack(s, not native))  # one layout for every device


def test_spike_trains_are_kept_as_bits_and_refired_trains_match():
    """Sub-batches fired apart (the membrane restarting at each) give the trains of all
    images fired at once; `Refire` re-runs each sub-batch from its current."""
    torch.manual_seed(0)
    lif = LIF(1.0, 0.7)
    cur = torch.rand(4, 3, 5, 5)
    T = 9
    want, _, _ = lif_forward(cur.unsqueeze(0).expand(T, *cur.shape), lif.leak, lif.threshold,
                             None)
    a, b = slice(0, 3), slice(3, 4)
    steps = lambda sl, t: cur[sl].unsqueeze(0).expand(t, *cur[sl].shape)  # noqa: E731
    kept = calibration.fire(lif, [(a, 0, steps(a, 4)), (a, 4, steps(a, 5)), (b, 0, steps(b, 9))],
                            T, 4)
    assert kept.bits.numel() == T * 4 * 10  # 75 neurons: 10 bytes per image and step
    assert torch.equal(kept.read(0, T, slice(0, 4)), want)
    assert torch.equal(kept.read(2, 3, b), want[2:5, b])
    again = calibration.Refire(lif, lambda sl: cur[sl])
    assert torch.equal(torch.cat([again.read(0, 4, a), again.read(4, 5, a)]), want[:, a])
    assert torch.equal(again.read(0, 2, b), want[:2, b])  # a read of step 0 starts over
    with pytest.raises(RuntimeError, match="expected 2"):
        again.read(5, 1, b)


def test_each_layer_is_reported(caplog):
    snn = ann_to_snn(build_ann("vgg_small", image_size=8), 3)
    with caplog.at_level(logging.INFO, logger="dietsnn"):
        dietsnn.calibrate_thresholds(snn, torch.rand(4, 1, 8, 8), timesteps=5)
    lines = [r.getMessage() for r in caplog.records if "calibrated layer" in r.getMessage()]
    names = [n for n, _ in lif_layers(snn)]
    assert [ln.split(" (")[0] for ln in lines] == [f"calibrated layer {i + 1}/4"
                                                  for i in range(4)]
    assert all(f"({n})" in ln for n, ln in zip(names, lines))


def _tiny_problem():
    torch.manual_seed(0)
    ann = build_ann("vgg_small", image_size=8).eval()
    x, vx = torch.randn(32, 1, 8, 8), torch.randn(40, 1, 8, 8)
    with torch.no_grad():
        vy = ann(vx).argmax(1)  # labels the ANN gets right: scales differ in accuracy
    return ann, x, vx, vy


def test_auto_scale_is_the_best_on_validation():
    ann, x, vx, vy = _tiny_problem()
    accs = {}
    for s in SCALES:  # independent reference: a fresh conversion per scale
        snn = dietsnn.convert(ann, 3)
        dietsnn.calibrate_thresholds(snn, x, 99.0, s, 6)
        accs[s] = evaluate(snn, vx, vy)["accuracy"]
    best = max(SCALES, key=lambda s: (accs[s], -abs(s - 0.5)))
    snn = dietsnn.convert(ann, 3)
    raw = dietsnn.calibrate_thresholds(dietsnn.convert(ann, 3), x, 99.0, 1.0, 6)
    got = dietsnn.calibrate_thresholds(snn, x, 99.0, "auto", 6, validation=(vx, vy))
    assert got == pytest.approx([best * r for r in raw], rel=1e-6)
    assert evaluate(snn, vx, vy)["accuracy"] == accs[best]
    batches = [(vx[:25], vy[:25]), (vx[25:], vy[25:])]  # a DataLoader's (x, y) batches
    snn2 = dietsnn.convert(ann, 3)
    assert dietsnn.calibrate_thresholds(snn2, x, 99.0, "auto", 6, validation=batches) == got


def test_choose_scale_reports_every_scale_and_keeps_the_best():
    ann, x, vx, vy = _tiny_problem()
    snn = ann_to_snn(ann, 3)
    raw = dietsnn.calibrate_thresholds(snn, x, 99.0, 1.0, 6)
    best, accs = choose_scale(snn, vx, vy, (0.3, 0.5, 0.9))
    assert list(accs) == [0.3, 0.5, 0.9] and accs[best] == max(accs.values())
    assert [m.threshold.item() for _, m in lif_layers(snn)] == pytest.approx(
        [best * r for r in raw], rel=1e-6)


@pytest.mark.parametrize("peak", [0.2, 0.4, 0.5, 0.6, 1.0])
def test_choose_scale_climbs_to_the_best_scale(monkeypatch, peak):
    import dietsnn.conversion as sg

    ann, x, vx, vy = _tiny_problem()
    snn = ann_to_snn(ann, 3)
    raw = dietsnn.calibrate_thresholds(snn, x, 99.0, 1.0, 6)
    measured = []

    def fake(model, *_a, **_k):  # accuracy peaks at `peak`, falls off on both sides
        s = round(lif_layers(model)[0][1].threshold.item() / raw[0], 6)
        measured.append(s)
        return {"accuracy": 1.0 - abs(s - peak)}

    monkeypatch.setattr(sg, "evaluate", fake)
    best, accs = choose_scale(snn, vx, vy)
    assert best == peak and list(accs) == sorted(measured)
    assert len(measured) == len(set(measured)) <= 4 + abs(SCALES.index(peak) - 3)
    assert [m.threshold.item() for _, m in lif_layers(snn)] == pytest.approx(
        [peak * r for r in raw], rel=1e-6)
    with torch.no_grad():
        for (_, m), r in zip(lif_layers(snn), raw):
            m.threshold.fill_(r)
    measured.clear()
    assert choose_scale(snn, vx, vy, climb=False)[0] == peak and len(measured) == len(SCALES)


def test_auto_scale_needs_validation_data():
    snn = dietsnn.convert(build_ann("vgg_small", image_size=8), 3)
    with pytest.raises(ValueError, match="validation"):
        dietsnn.calibrate_thresholds(snn, torch.rand(4, 1, 8, 8), scale="auto")
    with pytest.raises(ValueError, match="'auto'"):
        dietsnn.calibrate_thresholds(snn, torch.rand(4, 1, 8, 8), scale="best")


def test_cli_scale_auto(tmp_path, capsys):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    data = ["--data-dir", str(tmp_path / "data"), "--quiet"]
    assert main(["train-ann", "--epochs", "1", "--val-size", "10", "--out", str(tmp_path / "a"),
                 *data]) == 0
    out = str(tmp_path / "c")
    assert main(["convert", str(tmp_path / "a"), "--scale", "auto", "--calib-size", "8",
                 "--calib-timesteps", "4", "--val-size", "10", "--out", out, *data]) == 0
    m = json.loads((tmp_path / "c" / "metrics.json").read_text())["converted"]
    scanned = m["scale_validation_accuracy"]
    assert set(scanned) <= {str(s) for s in SCALES} and len(scanned) >= 3
    assert scanned[str(m["calibration"]["scale"])] == max(scanned.values())
    assert m["calibration"]["units"] == "scaled" and "units_validation_accuracy" not in m
    assert main(["convert", str(tmp_path / "a"), "--scale", "auto", "--val-size", "0",
                 "--out", str(tmp_path / "d"), *data]) == 2
    assert "--scale auto chooses the scale on the validation split" in capsys.readouterr().err


def test_cli_units(tmp_path):
    """--scale auto on a batch-norm network climbs both units and records the better pair;
    a fixed --scale takes "scaled" units unless --units says otherwise (a network without
    biases climbs one: test_cli_scale_auto)."""
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    data = ["--data-dir", str(tmp_path / "data"), "--quiet", "--val-size", "10"]
    small = ["--calib-size", "8", "--calib-timesteps", "4"]
    assert main(["train-ann", "--arch", "vgg_small_bn", "--epochs", "1", "--out",
                 str(tmp_path / "a"), *data]) == 0

    def convert(name, *opts):
        assert main(["convert", str(tmp_path / "a"), "--out", str(tmp_path / name), *small,
                     *opts, *data]) == 0
        return json.loads((tmp_path / name / "metrics.json").read_text())["converted"]

    m = convert("auto")
    scans = m["units_validation_accuracy"]
    units = m["calibration"]["units"]
    assert set(scans) == {"scaled", "calibrated"} and units in scans
    assert m["scale_validation_accuracy"] == scans[units]
    assert max(scans[units].values()) == max(max(a.values()) for a in scans.values())
    assert convert("fixed", "--scale", "0.5")["calibration"]["units"] == "scaled"
    forced = convert("forced", "--scale", "0.5", "--units", "calibrated")
    assert forced["calibration"]["units"] == "calibrated" and "units_validation_accuracy" not in forced
