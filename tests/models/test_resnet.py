import numpy as np
import pytest
import torch
from torch import nn

from dietsnn import ann_to_snn, build_ann, calibrate_thresholds, load_model, save_model
from dietsnn.conversion import Merge
from dietsnn.functional import lif_forward
from dietsnn.layers import Dropout, lif_layers, set_time
from dietsnn.models.resnet import BasicBlock, ResNet


def tiny(dropout=0.0, image=8):
    """Both shortcut kinds (identity, then 1x1 convs), all four stages, a few channels."""
    torch.manual_seed(1)
    return ResNet((2, 1, 1, 1), 10, 1, image, dropout, widths=(4, 6, 8, 8), stem_width=4).eval()


def named_units(ann):
    return [(f"{part}.{i}", u) for part in ("stem", "layers", "classifier")
            for i, u in enumerate(ann.get_submodule(part))]


@torch.no_grad()
def step_run(snn, ann, images, T):
    """Reference SNN, one timestep at a time, straight from SPEC 1/3/6, walking the layers of
    the ANN `snn` was converted from (each spiking layer found by its name): logits and, per
    LIF, its input current at each step (for the residual LIF: conv2 + shortcut)."""
    states, currents, logits = {}, {}, 0.0

    def fire(m, c):
        currents.setdefault(m, []).append(c)
        s, _, states[m] = lif_forward(c.unsqueeze(0), m.leak, m.threshold, states.get(m))
        return s[0]

    def layer(name):
        return snn.get_submodule(f"net.{name}")

    for _ in range(T):
        h = images
        for name, u in named_units(ann):
            if isinstance(u, nn.ReLU):
                h = fire(layer(name), h)
            elif isinstance(u, BasicBlock):
                a = fire(layer(f"{name}.relu1"), layer(f"{name}.conv1")(h))
                short = h if isinstance(u.shortcut, nn.Identity) else layer(f"{name}.shortcut")(h)
                h = fire(layer(f"{name}.relu2"), layer(f"{name}.conv2")(a) + short)
            elif not isinstance(u, Dropout):  # dropout: the identity in evaluation
                h = layer(name)(h)
        logits = logits + h
    return logits, currents


def test_resnet20_and_34_structure():
    r20 = build_ann("resnet20", 10, 3, 32)
    assert len(lif_layers(ann_to_snn(r20, 5))) == 19  # SPEC 6: 19 spiking layers
    assert r20.classifier[-1].in_features == 512 * 2 * 2  # flatten -> classes
    assert r20(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    shortcuts = [b.shortcut for b in r20.layers]
    assert [isinstance(s, nn.Conv2d) for s in shortcuts] == [False, False, True, False, True,
                                                            False, True, False]
    r34 = build_ann("resnet34", 1000, 3, 224)
    assert len(r34.layers) == 16 and len(lif_layers(ann_to_snn(r34, 5))) == 35
    assert isinstance(r34.classifier[0], nn.AvgPool2d) and r34.classifier[-1].in_features == 512
    for m in r20.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            assert m.weight.std().item() == pytest.approx((2.0 / n) ** 0.5, rel=0.2)


def test_snn_forward_matches_step_by_step_reference():
    ann = tiny()
    snn = ann_to_snn(ann, 4).eval()
    for _, m in lif_layers(snn):
        m.threshold.data.fill_(0.05)
        m.leak.data.fill_(0.9)
    x = torch.randn(3, 1, 8, 8)
    want, _ = step_run(snn, ann, x, 4)
    with torch.no_grad():
        got = snn(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert got.abs().sum() > 0  # spikes reach the output


def test_residual_add_broadcasts_a_static_shortcut_over_time():
    torch.manual_seed(0)
    snn = ann_to_snn(ResNet((1,), 3, 2, 4, 0.0, widths=(2,), stem_width=2), 3).eval()
    merge = next(m for m in snn.modules() if isinstance(m, Merge))
    assert merge.gains.tolist() == [1.0, 1.0]  # the paper's units: no residual gain
    x, folded = torch.randn(2, 2, 4, 4), torch.randn(6, 2, 4, 4)
    set_time(merge, 3, 2)
    with torch.no_grad():  # the [B] shortcut (constant over time) is added at each step
        assert torch.equal(merge(folded, x), folded + x.repeat(3, 1, 1, 1))
        assert torch.equal(merge(x, folded), x.repeat(3, 1, 1, 1) + folded)


@torch.no_grad()
def naive_thresholds(snn, images, p, T):
    """Calibrate each LIF in order by re-running the whole network step by step."""
    out = []
    for _, m in lif_layers(snn):
        _, currents = step_run(snn, tiny(), images, T)
        m.threshold.fill_(max(np.percentile(c.numpy().ravel(), p) for c in currents[m]))
        out.append(m.threshold.item())
    return out


def test_residual_calibration_matches_naive_prefix_rerun():
    ann = tiny()
    x = torch.randn(12, 1, 8, 8)
    got = calibrate_thresholds(ann_to_snn(ann, 5), x, percentile=99.0, scale=1.0, timesteps=6)
    want = naive_thresholds(ann_to_snn(ann, 5).eval(), x, 99.0, 6)
    assert len(got) == 3 + 5 * 2
    assert got == pytest.approx(want, rel=1e-5)
    snn = ann_to_snn(ann, 5)
    scaled = calibrate_thresholds(snn, x, percentile=99.0, scale=0.3, timesteps=6)
    assert scaled == pytest.approx([0.3 * w for w in want], rel=1e-5)
    assert snn.get_submodule("net.layers.2.relu2").threshold.item() == pytest.approx(0.3 * want[8], rel=1e-5)


def test_residual_calibration_time_chunks_and_recompute(monkeypatch):
    import dietsnn.conversion.currents as cal

    ann = tiny()
    x = torch.randn(12, 1, 8, 8)
    want = calibrate_thresholds(ann_to_snn(ann, 5), x, 99.0, 1.0, 7)
    monkeypatch.setattr(cal, "CHUNK_ELEMENTS", 200)  # many small time chunks
    monkeypatch.setattr(cal, "CACHE_BYTES", 10)  # currents recomputed for the firing pass
    assert calibrate_thresholds(ann_to_snn(ann, 5), x, 99.0, 1.0, 7) == pytest.approx(want, rel=1e-6)


def test_resnet_checkpoint_roundtrip_and_energy_order(tmp_path):
    from dietsnn.analysis import energy

    snn = ann_to_snn(build_ann("resnet20", 10, 1, 8, 0.2), 5)
    calibrate_thresholds(snn, torch.randn(4, 1, 8, 8), 99.7, 0.3, 3)
    save_model(snn, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(snn.state_dict().values(),
                                                 back.state_dict().values()))
    rates = {n: float(i + 1) for i, (n, _) in enumerate(lif_layers(snn))}
    rows = {r["name"]: r["spike_rate_in"] for r in energy(snn, rates)["layers"]}
    # the shortcut conv and conv1 are driven by the block's input, conv2 by relu1
    assert rows["net.layers.2.shortcut"] == rows["net.layers.2.conv1"] == rates[
        "net.layers.1.relu2"]
    assert rows["net.layers.2.conv2"] == rates["net.layers.2.relu1"]
    assert rows["net.stem.0"] is None
