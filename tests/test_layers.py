import pytest
import torch

from dietsnn import LIF, ann_to_snn, build_ann
from dietsnn.checkpoint import load_state_strict
from dietsnn.errors import UserError
from dietsnn.layers import Dropout, constrain_, lif_layers, set_time


def test_dropout_mask_is_constant_over_time():
    d = Dropout(0.5).train()
    set_time(d, 4, 3)
    x = torch.ones(4 * 3, 6, 5)
    y = d(x).view(4, 3, 6, 5)
    assert (y[0] == 0).any() and (y[0] == 2).any()
    for t in range(1, 4):
        assert torch.equal(y[t], y[0])
    d.eval()
    assert torch.equal(d(x), x)


def test_dropout_masks_differ_between_batches():
    d = Dropout(0.5).train()
    set_time(d, 2, 8)
    x = torch.ones(16, 50)
    assert not torch.equal(d(x), d(x))


def test_leak_and_threshold_are_parameters_in_state_dict():
    snn = ann_to_snn(build_ann("vgg_small"), 5)
    sd = snn.state_dict()
    assert "net.features.1.leak" in sd and "net.features.1.threshold" in sd
    names = {n for n, _ in snn.named_parameters()}
    assert {"net.features.1.leak", "net.classifier.2.threshold"} <= names


def test_constrain_keeps_leak_and_threshold_in_range():
    m = LIF(1.0, 1.0)
    with torch.no_grad():
        m.leak.fill_(1.3)
        m.threshold.fill_(-0.2)
    constrain_(m)
    assert m.leak.item() == 1.0 and m.threshold.item() > 0
    with torch.no_grad():
        m.leak.fill_(-1)
    m.constrain_()
    assert 0 < m.leak.item() <= 1


def test_snn_shares_weights_layout_and_leaves_ann_untouched():
    ann = build_ann("vgg_small")
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    snn = ann_to_snn(ann, 3)
    for k, v in ann.state_dict().items():
        assert torch.equal(snn.state_dict()[f"net.{k}"], v)
    with torch.no_grad():
        snn.get_submodule("net.features.0").weight.add_(1.0)
    for k, v in ann.state_dict().items():
        assert torch.equal(before[k], v)
    assert not any(isinstance(m, torch.nn.ReLU) for m in snn.modules())
    assert not ann.is_spiking and snn.is_spiking


def test_strict_loading_rejects_mismatched_checkpoint():
    a = build_ann("vgg_small")
    b = build_ann("vgg5")
    with pytest.raises(UserError, match="shape mismatch"):
        load_state_strict(a, b.state_dict(), "vgg5.ckpt")
    sd = a.state_dict()
    sd.pop("features.0.weight")
    with pytest.raises(UserError, match="missing features.0.weight"):
        load_state_strict(a, sd, "x")
    sd = dict(a.state_dict(), extra=torch.zeros(1))
    with pytest.raises(UserError, match="unexpected extra"):
        load_state_strict(a, sd, "x")


@torch.no_grad()
def _step_by_step(snn, x):
    """Independent oracle: the network simulated one timestep at a time, layer by layer, with
    the LIF equations written out (docs/METHOD.md sections 1 and 3)."""
    mem = {}
    total = 0
    for _ in range(snn.timesteps):
        h = x
        for i, unit in enumerate(snn.units()):
            if isinstance(unit, LIF):
                u = unit.leak * mem.get(i, torch.zeros_like(h)) + h
                o = (u > unit.threshold).to(h.dtype)
                mem[i] = u - unit.threshold * o
                h = o
            elif isinstance(unit, torch.nn.AvgPool2d):
                h = torch.nn.functional.avg_pool2d(h, unit.kernel_size)
            else:
                h = unit(h)  # conv, linear, flatten; dropout is the identity in eval mode
        total = total + h
    return total


def test_snn_output_matches_a_step_by_step_simulation():
    torch.manual_seed(0)
    ann = build_ann("vgg_small").eval()
    for m in ann.modules():  # He-initialised linears: spikes reach the output
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, (2.0 / m.in_features) ** 0.5)
    snn = ann_to_snn(ann, 4).eval()
    for (_, m), leak, v in zip(lif_layers(snn), (1.0, 0.9, 0.7, 0.5), (0.6, 0.5, 0.4, 0.3)):
        m.leak.data.fill_(leak)
        m.threshold.data.fill_(v)
    x = torch.randn(3, 1, 28, 28)
    out = snn(x)
    ref = _step_by_step(snn, x)
    assert ref.abs().sum() > 0  # the output layer is driven
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    snn.encoding = "rate"
    assert snn(x).shape == (3, 10)


def test_vgg_archs_build_for_their_inputs():
    assert build_ann("vgg16", 10, 3, 32)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    medium = build_ann("vgg_medium")  # vgg_small 1.5x as wide: 48-96-96 channels, fc 256
    assert [c.out_channels for c in medium.features if isinstance(c, torch.nn.Conv2d)] == [48, 96, 96]
    assert medium.classifier[1].in_features == 96 * 7 * 7
    assert ann_to_snn(medium, 2)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    m = build_ann("vgg16", 1000, 3, 224)
    assert m.classifier[1].in_features == 512 * 7 * 7
    with pytest.raises(ValueError, match="unknown arch"):
        build_ann("resnet999")


def test_checkpoint_roundtrip(tmp_path):
    from dietsnn import load_model, save_model

    snn = ann_to_snn(build_ann("vgg_small"), 5)
    with torch.no_grad():
        snn.get_submodule("net.features.1").leak.fill_(0.8)
        snn.get_submodule("net.features.1").threshold.fill_(0.37)
    save_model(snn, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert back.timesteps == 5
    assert back.get_submodule("net.features.1").threshold.item() == pytest.approx(0.37)
    for k, v in snn.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


def _old_layout(tensors: dict) -> dict:
    """Tensors as a version that converted dietsnn's own architectures by module replacement
    saved them: no `net.` prefix and no output gain."""
    return {k.removeprefix("net."): v for k, v in tensors.items()
            if k != "output_gain" and not k.endswith(".gains")}


def test_checkpoint_of_the_module_replacement_layout_loads(tmp_path):
    from safetensors.torch import load_file, safe_open, save_file

    from dietsnn import load_model, save_model

    snn = ann_to_snn(build_ann("vgg_small"), 3)
    with torch.no_grad():
        snn.get_submodule("net.features.1").threshold.fill_(0.4)
    save_model(snn, tmp_path / "new.safetensors")
    with safe_open(tmp_path / "new.safetensors", "pt") as f:
        meta = f.metadata()
    old = _old_layout(load_file(tmp_path / "new.safetensors"))
    assert "features.1.threshold" in old and "output_gain" not in old
    save_file(old, tmp_path / "old.safetensors", metadata=meta)
    back = load_model(tmp_path / "old.safetensors")
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(back(x), snn.eval()(x))
    assert back.get_submodule("net.features.1").threshold.item() == pytest.approx(0.4)


def test_resume_maps_old_names_and_refuses_a_reordered_optimizer_state():
    from dietsnn.checkpoint import model_state

    vgg = ann_to_snn(build_ann("vgg_small"), 3)
    old = _old_layout(vgg.state_dict())
    assert list(model_state(vgg, old, "s")) == [k for k in vgg.state_dict() if k != "output_gain"] \
        + ["output_gain"]
    res = ann_to_snn(build_ann("resnet20", 10, 3, 32), 3)
    new = model_state(res, _old_layout(res.state_dict()), "s")  # gains filled in, order kept
    assert set(new) == set(res.state_dict()) and all(new[k].eq(1).all() for k in new if k.endswith(
        ".gains"))
    # the module layout registered each block's shortcut before its first conv
    old = _old_layout(res.state_dict())
    for k in [k for k in old if ".shortcut." in k]:
        old = {k: old.pop(k), **old}
    with pytest.raises(UserError, match="cannot be resumed"):
        model_state(res, old, "s")
