"""The neuron operators compose with PyTorch: opcheck, torch.compile and torch.export of a
converted SNN, hooks, autocast, vmap; against the eager network and the plain loops."""

import pytest
import torch
from helpers import on_engine

import dietsnn
from dietsnn.functional import engine, lif, lif_reference, native

ENGINES = ["native", "eager"] if native.available() else ["eager"]


def _snn(T=2, dropout=0.0):
    """A small converted vgg_small with leaks and thresholds that make every layer fire."""
    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small", dropout=dropout), T, threshold=0.05)
    with torch.no_grad():
        for i, (_, m) in enumerate(dietsnn.layers.lif_layers(snn)):
            m.leak.fill_(0.9)
            m.threshold.fill_(0.05 * (1 + i % 3))
    return snn


def _step(model, snn, x):
    """Output and parameter gradients of one forward/backward."""
    snn.zero_grad()
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    return out.detach(), [p.grad.clone() for p in snn.parameters()]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("steps", [0, 3])
def test_opcheck_lif(name, steps):
    g = torch.Generator().manual_seed(steps)
    x = (torch.randn((40,) if steps else (5, 40), generator=g) * 1.5).requires_grad_()
    leak = torch.tensor(0.9, requires_grad=True)
    v = torch.tensor(0.5, requires_grad=True)
    with engine.scope(name):
        torch.library.opcheck(torch.ops.dietsnn.lif_forward.default,
                              (x, leak, v, None, steps, not steps, 0.3, "atan"))
        torch.library.opcheck(torch.ops.dietsnn.lif_forward.default,  # inference: no u~
                              (x.detach(), leak.detach(), v.detach(),
                               torch.randn(40, generator=g), steps, False, 0.3, "linear"))


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("static", [False, True])
def test_opcheck_lif_pool(name, static):
    g = torch.Generator().manual_seed(1)
    T, B = 3, 2
    x = (torch.randn((B if static else T * B, 3, 7, 6), generator=g) * 2).requires_grad_()
    keep = torch.rand(B, 3, 7, 6, generator=g) < 0.8
    leak = torch.tensor(0.85, requires_grad=True)
    v = torch.tensor(0.6, requires_grad=True)
    with engine.scope(name):
        torch.library.opcheck(torch.ops.dietsnn.lif_pool_forward.default,
                              (x, leak, v, keep, 1.25, 2, T, static, not static, 0.3, "sigmoid"))


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("c", [(0.37, 0.37, 0.37), (0.37, -0.2, 0.5)])
def test_the_fused_block_counts_spikes_and_takes_their_gradient(name, static, c):
    """`count=True`: the spikes the LIF fired at each step (before dropout), as the plain loop
    fires them, and a loss on those counts (the same weight for every step, as a spike penalty,
    or one per step) gives the gradients of the same loss built from the spike tensor (LIF,
    then dropout and pooling as separate PyTorch operations)."""
    g = torch.Generator().manual_seed(3)
    T, B, c = 3, 2, torch.tensor(c)
    x = torch.randn((B if static else T * B, 4, 6, 6), generator=g) * 2
    keep = torch.rand(B, 4, 6, 6, generator=g) < 0.8
    w = torch.randn(T * B, 4, 3, 3, generator=g)
    with engine.scope(name):
        torch.library.opcheck(torch.ops.dietsnn.lif_pool_forward.default,
                              (x.clone().requires_grad_(), torch.tensor(0.8, requires_grad=True),
                               torch.tensor(0.5, requires_grad=True), keep, 1.25, 2, T, static,
                               not static, 0.3, "linear", True))
    res = []
    for fused in (True, False):
        xi = x.clone().requires_grad_()
        lk, th = torch.tensor(0.8, requires_grad=True), torch.tensor(0.5, requires_grad=True)
        if fused:
            out, _, fired = on_engine(torch.ops.dietsnn.lif_pool_forward, xi, lk, th, keep, 1.25,
                                      2, T, static, not static, 0.3, "linear", True, engine=name)
        else:
            cur = xi.expand(T, *x.shape) if static else xi.view(T, B, *x.shape[1:])
            spikes = lif_reference(cur, lk, th, 0.3, "linear")
            fired = spikes.flatten(1).sum(1, dtype=torch.float64)
            dropped = spikes * torch.where(keep, 1.25, 0.0)
            out = torch.nn.functional.avg_pool2d(dropped.flatten(0, 1), 2)
        loss = (out * w).sum() + (c * fired.float()).sum()
        on_engine(loss.backward, engine=name)
        res.append((fired.tolist(), xi.grad, lk.grad, th.grad))
    assert res[0][0] == res[1][0] and len(res[0][0]) == T and sum(res[0][0]) > 0
    for a, b in zip(res[0][1:], res[1][1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.parametrize("static", [False, True])
def test_lif_pool_fallback_matches_the_native_block(static):
    """The operator's PyTorch implementation (other devices and dtypes) gives the C kernel's
    numbers: output bit for bit, gradients to float rounding."""
    if not native.available():
        pytest.skip("no native kernels")
    g = torch.Generator().manual_seed(2)
    T, B = 3, 2
    x = torch.randn((B if static else T * B, 4, 9, 8), generator=g) * 2
    keep = torch.rand(B, 4, 9, 8, generator=g) < 0.8
    w = torch.randn(T * B, 4, 4, 4, generator=g)
    res = []
    for name in ("native", "eager"):
        xi, lk, th = x.clone().requires_grad_(), torch.tensor(0.8, requires_grad=True), \
            torch.tensor(0.5, requires_grad=True)
        out = on_engine(torch.ops.dietsnn.lif_pool_forward, xi, lk, th, keep, 1.25, 2, T, static,
                        not static, 0.3, "linear", engine=name)[0]
        on_engine(lambda o: (o * w).sum().backward(), out, engine=name)
        res.append((out.detach(), xi.grad, lk.grad, th.grad))
    assert torch.equal(res[0][0], res[1][0])
    for a, b in zip(res[0][1:], res[1][1:]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def _compiled_step(snn, x):
    """`_step` through `torch.compile(snn)`, asserting that dynamo traced it as one graph
    without a break (its counters see breaks that `torch._dynamo.explain` does not count)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    out = _step(torch.compile(snn), snn, x)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    return out


@pytest.mark.slow
@pytest.mark.parametrize("train", [False, True])
def test_torch_compile_of_an_snn_matches_eager(train):
    """Forward and backward of `torch.compile(snn)` (one graph, no breaks) equal eager's, in
    training mode (dropout 0: inductor draws other random numbers) and in eval mode."""
    snn = _snn()
    snn.train(train)
    x = torch.randn(4, 1, 28, 28)
    compiled = _compiled_step(snn, x)
    eager = _step(snn, snn, x)
    assert torch.equal(compiled[0], eager[0])
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def _graph_snn(T=3):
    """A user's model converted through its traced graph (a GraphSNN), calibrated."""
    from conversion_models import BiasNet

    torch.manual_seed(0)
    snn = dietsnn.convert(BiasNet("avg").eval(), T)
    dietsnn.calibrate_thresholds(snn, torch.randn(16, 1, 28, 28), 99.0, 0.5, 4)
    return snn


@pytest.mark.slow
def test_torch_compile_of_a_converted_graph_matches_eager():
    """A user's model converted through its traced graph: forward and backward of
    `torch.compile(snn)` (one graph, no breaks) equal eager's."""
    snn = _graph_snn().train()
    for m in snn.modules():
        if isinstance(m, dietsnn.layers.Dropout):
            m.p = 0.0  # inductor would draw other random numbers
    x = torch.randn(4, 1, 28, 28)
    compiled = _compiled_step(snn, x)
    eager = _step(snn, snn, x)
    assert torch.equal(compiled[0], eager[0]) and eager[0].abs().sum() > 0
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("kind", ["vgg_small", "graph"])
def test_torch_export_of_an_snn_runs_and_matches(kind):
    snn = (_snn(T=3) if kind == "vgg_small" else _graph_snn()).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        ref = snn(x)
    program = torch.export.export(snn, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "dietsnn.lif_pool_forward.default" in targets  # LIFs run as fused blocks
    with torch.no_grad():
        assert torch.equal(program.module()(x), ref)
        assert torch.equal(program.module()(x * 2), snn(x * 2))


def test_hooks_see_the_spikes_and_leave_the_numbers_unchanged():
    snn = _snn(T=3).train()
    x = torch.randn(4, 1, 28, 28)
    torch.manual_seed(5)
    plain = _step(snn, snn, x)
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
             for _, m in dietsnn.layers.lif_layers(snn)]
    torch.manual_seed(5)
    hooked = _step(snn, snn, x)
    for h in hooks:
        h.remove()
    assert len(seen) == len(dietsnn.layers.lif_layers(snn))
    assert all(set(s.unique().tolist()) <= {0.0, 1.0} for s in seen) and seen[1].sum() > 0
    assert torch.equal(plain[0], hooked[0])
    for a, b in zip(plain[1], hooked[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


def test_autocast_bf16_runs_the_snn_through_the_operator():
    snn = _snn().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = snn(x)
        out.sum().backward()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in snn.parameters())


def test_vmap_over_a_batch_dimension_matches_a_loop():
    x = torch.randn(6, 5, 30) * 1.5  # [T, samples, N]: vmapped over dim 1
    out = torch.func.vmap(lambda a: lif(a, 0.9, 0.5), in_dims=1, out_dims=1)(x)
    assert torch.equal(out, torch.stack([lif_reference(x[:, i], 0.9, 0.5) for i in range(5)], 1))
