import pytest
import torch
from helpers import on_engine

from dietsnn.functional import lif, lif_forward, lif_reference, surrogate

D = torch.float64


def t(v):
    return torch.tensor(v, dtype=D)


def test_lif_hand_trace():
    # leak 0.5, threshold 1: integrate, fire at 1.05 and 1.5125, soft reset keeps the residue
    x = t([0.6, 0.6, 0.6, 0.0, 1.5, 0.2])
    spikes, u_tilde, u_last = lif_forward(x, t(0.5), t(1.0))
    assert spikes.tolist() == [0, 0, 1, 0, 1, 0]
    expected = [0.6, 0.9, 1.05, 0.025, 1.5125, 0.45625]
    assert torch.allclose(u_tilde, t(expected))
    assert torch.allclose(u_last, t(0.45625))
    assert lif(x, 0.5, 1.0).tolist() == [0, 0, 1, 0, 1, 0]


def test_if_neuron_fires_in_first_step_and_counts_rate():
    x = torch.full((10,), 2.5, dtype=D)  # above threshold: fires at every step, from the first
    assert lif(x, 1.0, 1.0).sum().item() == 10
    # 0.375 per step (exact in binary): 1.125 fires at step 3 and leaves 0.125; 1.25 fires at
    # step 6 and leaves 0.25; 1.0 at step 8 is not above the threshold (strict >); 1.375 at step 9
    x = torch.full((10,), 0.375, dtype=D)
    assert lif(x, 1.0, 1.0).nonzero().flatten().tolist() == [2, 5, 8]


@pytest.mark.parametrize("name", ["linear", "exponential", "sigmoid", "atan"])
def test_surrogates_peak_at_threshold(name):
    z = torch.linspace(-2, 2, 401, dtype=D)
    g = surrogate.get(name)(z, 0.3)
    assert g.argmax().item() == 200
    assert abs(g.max().item() - 0.3) < 1e-12


def test_linear_surrogate_formula():
    z = t([-1.5, -1.0, -0.5, 0.0, 0.25, 1.0, 3.0])
    expected = [0.0, 0.0, 0.15, 0.3, 0.225, 0.0, 0.0]
    assert torch.allclose(surrogate.linear(z, 0.3), t(expected))


def test_spike_backward_is_the_surrogate():
    from dietsnn.functional import spike

    z = t([-0.5, 0.2, 0.9]).requires_grad_()
    spike(z).sum().backward()
    assert torch.allclose(z.grad, 0.3 * (1 - z.detach().abs()))


def test_one_neuron_gradients_match_closed_form():
    # Two steps, loss = w1*o1 + w2*o2. SPEC section 2, by hand:
    x1, x2, v, lam, g, w1, w2 = 1.2, 0.5, 0.8, 0.9, 0.3, 1.0, 2.0

    def s(u):
        return g * max(0.0, 1 - abs(u / v - 1))

    ut1 = x1
    o1 = float(ut1 > v)
    u1 = ut1 - v * o1
    ut2 = lam * u1 + x2
    delta2 = w2 * s(ut2) / v
    delta1 = w1 * s(ut1) / v + lam * delta2
    d_lam = delta2 * u1
    d_v = -w1 * s(ut1) * ut1 / v**2 - w2 * s(ut2) * ut2 / v**2 - lam * delta2 * o1

    x = t([x1, x2]).requires_grad_()
    leak, thr = t(lam).requires_grad_(), t(v).requires_grad_()
    out = lif(x, leak, thr, gamma=g)
    (out * t([w1, w2])).sum().backward()
    assert out.tolist() == [o1, float(ut2 > v)] == [1.0, 1.0]
    assert s(ut2) > 0 and s(ut1) > 0  # both steps inside the surrogate's support
    assert torch.allclose(x.grad, t([delta1, delta2]), atol=1e-12)
    assert abs(leak.grad.item() - d_lam) < 1e-12
    assert abs(thr.grad.item() - d_v) < 1e-12


@pytest.mark.parametrize("leak", [1.0, 0.7])
@pytest.mark.parametrize("name", ["linear", "atan"])
def test_fused_matches_autograd_loop(leak, name):
    x = torch.randn(7, 3, 4, 5, dtype=D) * 1.2
    w = torch.randn(7, 3, 4, 5, dtype=D)
    grads = []
    for fn in (lif, lif_reference):
        xi = x.clone().requires_grad_()
        lk, th = t(leak).requires_grad_(), t(0.9).requires_grad_()
        out = fn(xi, lk, th, 0.3, name)
        (out * w).sum().backward()
        grads.append((out.detach(), xi.grad, lk.grad, th.grad))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-12)


def test_fused_handles_frozen_leak_and_threshold():
    x = torch.randn(4, 10, dtype=D, requires_grad=True)
    lk, th = t(0.8), t(0.5)
    lif(x, lk, th).sum().backward()
    assert x.grad is not None and lk.grad is None and th.grad is None


@pytest.mark.parametrize("backend", ["native", "eager", "compile"])
@pytest.mark.parametrize("steps", [None, 4])
def test_low_precision_input_integrates_in_float32(backend, steps):
    """Under bf16 autocast a LIF receives bf16 currents: the membrane, leak and threshold stay in
    float32, so the spikes are exactly those of the float32 neuron on the same (rounded)
    currents, and come back in bf16 as exact 0/1."""
    g = torch.Generator().manual_seed(3)
    shape = (4, 50) if steps is None else (50,)
    x = torch.randn(*shape, generator=g).to(torch.bfloat16).requires_grad_()
    leak = torch.tensor(0.9, requires_grad=True)
    thr = torch.tensor(0.7, requires_grad=True)
    s = on_engine(lif, x, leak, thr, steps=steps, engine=backend)
    ref = lif_reference(x.detach().float() if steps is None
                        else x.detach().float().expand(steps, *shape), 0.9, 0.7)
    assert s.dtype == torch.bfloat16
    assert torch.equal(s.float(), ref)
    s.float().sum().backward()
    assert leak.grad.dtype == torch.float32 and thr.grad.dtype == torch.float32
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_snn_under_bf16_autocast_accumulates_in_float32():
    import dietsnn

    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 3)
    x = torch.rand(2, 1, 28, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = snn(x)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in snn.parameters())
