"""The fused LIF -> dropout -> pooling block (`layers.Sequential`) against the same layers run
one by one: the same output bit for bit, the same random numbers drawn, the same gradients to
float rounding; and it steps aside whenever a hook is registered."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dietsnn
from dietsnn.functional import native
from dietsnn.layers import LIF, AvgPool2d, Dropout, Sequential, set_time

pytestmark = pytest.mark.skipif(not native.available(), reason="no native kernels")


def _one_by_one(seq, x):
    for m in seq:
        x = m(x)
    return x


def _run(seq, x, T, B, fused, seed):
    set_time(seq, T, B)
    xi = x.clone().requires_grad_()
    torch.manual_seed(seed)
    out = seq(xi) if fused else _one_by_one(seq, xi)
    rng = torch.get_rng_state()
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * w).sum().backward()
    grads = [xi.grad] + [p.grad.clone() for p in seq.parameters()]
    seq.zero_grad()
    set_time(seq, None, None)
    return out.detach(), rng, grads


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 4), B=st.integers(1, 3), C=st.integers(1, 4), H=st.integers(3, 9),
       W=st.integers(3, 9), k=st.sampled_from([2, 3]), p=st.sampled_from([0.0, 0.3]),
       static=st.booleans(), training=st.booleans(), with_pool=st.booleans(),
       surrogate=st.sampled_from(["linear", "atan"]), seed=st.integers(0, 1000))
def test_fused_block_matches_the_layers_one_by_one(T, B, C, H, W, k, p, static, training,
                                                   with_pool, surrogate, seed):
    lif = LIF(0.9, 0.6, surrogate=surrogate)
    mods = [lif, Dropout(p)] + ([AvgPool2d(k)] if with_pool else [])
    seq = Sequential(*mods).train(training)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B if static else T * B), C, H, W, generator=g)
    a = _run(seq, x, T, B, True, seed)
    b = _run(seq, x, T, B, False, seed)
    assert torch.equal(a[0], b[0])  # output, bit for bit
    assert torch.equal(a[1], b[1])  # the same random numbers drawn
    for ga, gb in zip(a[2], b[2]):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-5)


def test_fused_linear_block_and_bool_saving():
    """LIF -> Dropout on [T*B, features] (a classifier's hidden layer), output marked so that
    the next linear layer saves it as bool, like the unfused one."""
    seq = Sequential(LIF(1.0, 0.5), Dropout(0.2), torch.nn.Linear(12, 3, bias=False))
    x = torch.randn(4 * 2, 12)
    a = _run(seq, x, 4, 2, True, 3)
    b = _run(seq, x, 4, 2, False, 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for ga, gb in zip(a[2], b[2]):
        torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def _spy_fusion(mp: pytest.MonkeyPatch) -> list[bool]:
    """Record, per `LIF.fused_forward` call, whether the block ran fused."""
    calls: list[bool] = []
    orig = LIF.fused_forward

    def spy(self, *a):
        r = orig(self, *a)
        calls.append(r is not None)
        return r
    mp.setattr(LIF, "fused_forward", spy)
    return calls


def test_the_network_fuses_and_a_hook_turns_fusion_off():
    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 3).train()
    x = torch.randn(4, 1, 28, 28)
    calls = []
    res = []
    for hooked in (False, True):
        torch.manual_seed(5)
        lif = snn.get_submodule("net.features.1")
        handle = lif.register_forward_hook(lambda *a: None) if hooked else None
        with pytest.MonkeyPatch.context() as mp:
            seen = _spy_fusion(mp)
            out = snn(x)
        calls += seen
        out.sum().backward()
        res.append((out.detach(), [q.grad.clone() for q in snn.parameters()]))
        snn.zero_grad()
        if handle:
            handle.remove()
    assert calls[:4] == [True, True, True, True]  # every LIF fused without hooks
    assert calls[4] is False and all(calls[5:])  # the hooked one ran unfused
    assert torch.equal(res[0][0], res[1][0])
    for ga, gb in zip(res[0][1], res[1][1]):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


def test_state_dict_is_that_of_nn_sequential():
    seq = Sequential(torch.nn.Conv2d(1, 2, 3), LIF())
    ref = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), LIF())
    assert list(seq.state_dict()) == list(ref.state_dict())


@pytest.mark.parametrize("model", ["bias", "bias_tuple_pool", "bn-functional"])
def test_a_converted_graph_runs_the_fused_blocks(model):
    """A traced conversion (GraphSNN) runs LIF -> Dropout -> pooling as `lif_block` calls over
    its own modules: output and gradients as its plain graph gives them, hooks see each layer."""
    from conversion_models import MODELS, BiasNet
    from torch import nn

    from dietsnn.conversion.modules import fuse_blocks
    from dietsnn.layers import lif_block

    torch.manual_seed(0)
    ann = MODELS["bn-functional"]() if model == "bn-functional" else BiasNet("avg")
    if model == "bias_tuple_pool":
        ann.features[2] = nn.AvgPool2d((2, 2))  # kernel given as a pair
    snn = dietsnn.convert(ann.eval(), 3)
    x = torch.randn(8, 1, 28, 28)
    dietsnn.calibrate_thresholds(snn, x, 99.0, 0.5, 4)
    blocks = [n for n in fuse_blocks(snn.net).graph.nodes if n.target is lif_block]
    assert len(blocks) == (2 if model == "bn-functional" else 3)
    assert not any(n.target is lif_block for n in snn.net.graph.nodes)  # the stored graph: plain

    def run(fused):
        snn.train()
        if not fused:
            snn.body = lambda h: snn.net(h) * snn.output_gain
        torch.manual_seed(1)
        out = snn(x)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in snn.parameters()]
        snn.zero_grad()
        snn.__dict__.pop("body", None)
        return out.detach(), grads

    with dietsnn.use_engine():
        (a, ga), (b, gb) = run(True), run(False)
        seen = []
        lif = next(m for m in snn.modules() if isinstance(m, LIF))
        h = lif.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        torch.manual_seed(1)
        c = snn(x)
        h.remove()
    assert torch.equal(a, b) and torch.equal(a, c.detach()) and a.abs().sum() > 0
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    assert seen and seen[0][0] == 3 * 8  # the hook saw the LIF's own spikes [T*B, ...]


@settings(max_examples=20, deadline=None)
@given(T=st.integers(1, 3), static=st.booleans(), p=st.sampled_from([0.0, 0.3]),
       k=st.sampled_from([1, 2]), seed=st.integers(0, 1000),
       dtype=st.sampled_from([torch.bfloat16, torch.float16]))
def test_a_low_precision_current_runs_the_fused_block_in_float32(T, static, p, k, seed, dtype):
    """Under autocast a block's current is bfloat16 (float16 on GPUs): the fused block
    integrates it in float32 (as `lif` does for the layers one by one) and returns the current's
    dtype. So it is the float32 block on the same (upcast) current, its output and input
    gradient rounded to that dtype and its leak and threshold gradients equal, bit for bit; and
    its output is that of the layers run one by one, to the dtype's rounding."""
    B, C, H, W = 2, 3, 6, 6
    seq = Sequential(LIF(0.9, 0.6), Dropout(p), *([AvgPool2d(k)] if k > 1 else [])).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B if static else T * B), C, H, W, generator=g).to(dtype)

    def run(x, fused=True):
        set_time(seq, T, B)
        xi = x.clone().requires_grad_()
        torch.manual_seed(seed)
        out = seq(xi) if fused else _one_by_one(seq, xi)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        (out * w.to(out.dtype)).float().sum().backward()  # w exact in both dtypes
        grads = [xi.grad] + [q.grad.clone() for q in seq.parameters()]
        seq.zero_grad()
        set_time(seq, None, None)
        return out.detach(), grads

    with pytest.MonkeyPatch.context() as mp:
        calls = _spy_fusion(mp)
        a = run(x)
        f = run(x.float())
    assert calls == [True, True] and a[0].dtype == dtype
    assert torch.equal(a[0], f[0].to(dtype))
    assert torch.equal(a[1][0], f[1][0].to(dtype))  # dL/dx
    assert all(torch.equal(ga, gf) for ga, gf in zip(a[1][1:], f[1][1:]))  # leak, threshold
    torch.testing.assert_close(a[0], run(x, fused=False)[0], rtol=8e-3, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_ann_runs_relu_and_dropout_as_one_op_and_a_hook_turns_it_off(dtype):
    """In training, each ReLU -> Dropout of an ANN is one `dietsnn::dropout(relu=True)`: the
    same output and gradients, bit for bit, as with a hook on a ReLU (the layers one by one),
    and with the same random numbers drawn."""
    torch.manual_seed(0)
    ann = dietsnn.build_ann("vgg_small").train()
    x = torch.randn(4, 1, 28, 28)
    res, fused = [], []
    for hooked in (False, True):
        relu = next(m for m in ann.modules() if isinstance(m, torch.nn.ReLU))
        handle = relu.register_forward_hook(lambda *a: None) if hooked else None
        torch.manual_seed(5)
        with pytest.MonkeyPatch.context() as mp:
            calls: list[bool] = []
            orig = Dropout.relu_forward
            mp.setattr(Dropout, "relu_forward",
                       lambda self, *a: calls.append(r := orig(self, *a)) or r)
            with torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
                out = ann(x)
        fused.append([c is not None for c in calls])
        out.float().sum().backward()
        res.append((out.detach(), torch.get_rng_state(), [q.grad.clone() for q in ann.parameters()]))
        ann.zero_grad()
        if handle:
            handle.remove()
    assert fused[0] and all(fused[0])  # every ReLU -> Dropout fused without hooks
    assert fused[1][0] is False  # the hooked ReLU ran on its own
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])
    for ga, gb in zip(res[0][2], res[1][2]):
        assert torch.equal(ga, gb)
