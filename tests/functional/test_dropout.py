import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dietsnn.functional.ops  # noqa: F401  (defines torch.ops.dietsnn.dropout)
from dietsnn.functional import engine, native
from dietsnn.functional.dropout import LEVELS, draw_seed, keep_mask, threshold
from dietsnn.layers import Dropout

ENGINES = ["native", "eager"] if native.available() else ["eager"]
MASK = (1 << 64) - 1


def splitmix_lanes(seed: int, n: int) -> list[int]:
    """The 16-bit numbers of the first n elements, from SplitMix64 in Python integers (the
    published algorithm: state seed + (w + 1) * golden, then the two multiply-xorshift rounds)."""
    out = []
    for w in range((n + 3) // 4):
        z = (seed + (w + 1) * 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        for j in range(4):
            v = (z >> (16 * j)) & 0xFFFF
            out.append(v - 65536 if v >= 32768 else v)
    return out[:n]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 70), p=st.floats(0.0, 1.0), seed=st.integers(-(2**63), 2**63 - 1),
       name=st.sampled_from(ENGINES))
def test_masks_are_splitmix64_of_the_seed_and_index(n, p, seed, name):
    """On every engine, element i is kept where lane i % 4 of SplitMix64's word i // 4 reaches
    the rounded drop probability: checked against Python integers."""
    with engine.scope(name):
        m = keep_mask((n,), p, seed=torch.tensor(seed))
    thr = threshold(p)
    expect = [thr is not None and v >= thr for v in splitmix_lanes(seed % (1 << 64), n)]
    assert m.tolist() == expect


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 9), (64, 32, 28, 28)])
def test_native_dropout_is_the_reference_bit_for_bit(dtype, shape):
    """The C kernel (mask made and applied in one pass, in parallel) gives the PyTorch
    definition `x * (mask * scale)` in x's dtype: every value exactly, NaN where it has NaN
    (NaN payloads aside); its gradient is the same mask times the scale."""
    g = torch.Generator().manual_seed(len(shape))
    x = (torch.randn(shape, generator=g) * 3).to(dtype)
    x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype)
    seed = draw_seed(g)
    res = []
    for name in ENGINES:
        xi = x.clone().requires_grad_()
        with engine.scope(name):
            y = torch.ops.dietsnn.dropout(xi, 0.2, seed)
            y.backward(torch.ones_like(y))
        res.append((y.detach(), xi.grad))
    scale = torch.tensor(1 / 0.8, dtype=dtype)
    keep = keep_mask(shape, 0.2, seed=seed)
    ref = x * (keep.to(dtype) * scale)
    for y, grad in res:
        torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(grad, keep.to(dtype) * scale)


@pytest.mark.parametrize("name", ENGINES)
def test_opcheck_dropout(name):
    x = torch.randn(4, 3, 5, requires_grad=True)
    with engine.scope(name):
        torch.library.opcheck(torch.ops.dietsnn.dropout.default, (x, 0.3, draw_seed()))


@settings(max_examples=25, deadline=None)
@given(p=st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0, 1 - 2**-18, 2**-17]),
       seed=st.integers(0, 2**31 - 1))
def test_every_lane_keeps_at_the_rounded_rate(p, seed):
    """Each of the four 16-bit numbers read from one 64-bit draw keeps at 1 - p (p rounded to
    2**-16): within 5 standard errors over 2**18 elements, lane by lane."""
    g = torch.Generator().manual_seed(seed)
    n = 1 << 18
    m = keep_mask((n,), p, generator=g)
    assert m.dtype == torch.bool and m.shape == (n,)
    keep = 1.0 - round(p * LEVELS) / LEVELS
    lanes = m.view(-1, 4).float().mean(0)
    tol = 5 * math.sqrt(max(keep * (1 - keep), 1e-12) / (n / 4)) + 1e-9
    assert torch.all((lanes - keep).abs() <= tol), (lanes, keep)


def test_masks_follow_the_generator_and_have_the_shape_asked():
    torch.manual_seed(3)
    a = keep_mask((5, 3, 7), 0.25)
    torch.manual_seed(3)
    b = keep_mask((5, 3, 7), 0.25)
    c = keep_mask((5, 3, 7), 0.25)
    assert a.shape == (5, 3, 7) and torch.equal(a, b) and not torch.equal(a, c)
    assert keep_mask((4, 4), 0.0).all() and not keep_mask((4, 4), 1.0).any()
    assert keep_mask((0, 3), 0.5).shape == (0, 3)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        keep_mask((2,), 1.5)


def test_masks_do_not_depend_on_the_thread_count():
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            for name in ENGINES:
                torch.manual_seed(0)
                seed = draw_seed()
                with engine.scope(name):
                    out.append(keep_mask((1 << 16,), 0.1, seed=seed))
                    out.append(torch.ops.dietsnn.dropout(torch.ones(1 << 16), 0.1, seed))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(o, out[i % 2]) for i, o in enumerate(out))
    assert torch.equal(out[0], out[1] != 0)


def test_ann_dropout_zeroes_or_scales_and_is_identity_in_eval():
    d = Dropout(0.2)
    x = torch.rand(64, 8, 5, 5) + 0.5
    y = d(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.8)
    assert 0.7 < kept.float().mean() < 0.9
    x.requires_grad_()
    d(x).sum().backward()  # the gradient is the mask times the scale
    assert set(torch.unique(x.grad).tolist()) <= {0.0, 1 / 0.8}
    d.eval()
    assert d(x) is x


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4),
       p=st.sampled_from([0.0, 0.2, 0.5, 1.0]) | st.floats(0.0, 1.0),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]), seed=st.integers(0, 2**31 - 1),
       name=st.sampled_from(ENGINES))
def test_relu_dropout_is_relu_then_dropout(shape, p, dtype, seed, name):
    """dropout with relu is torch.relu, then x * (mask * scale) in x's dtype: every value
    exactly (NaN, infinities and -0 among the inputs); its gradient is autograd's through
    torch.relu and that product, except at a NaN input (0 there: the output, all the gradient
    sees, does not tell a kept NaN from a dropped one)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(dtype)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0], dtype=dtype)
    x.view(-1)[: min(5, x.numel())] = specials[: min(5, x.numel())]
    dy = torch.randn(shape, generator=g).to(dtype)
    s = draw_seed(g)
    xi = x.clone().requires_grad_()
    with engine.scope(name):
        y = torch.ops.dietsnn.dropout(xi, p, s, True)
        y.backward(dy)
    xr = x.clone().requires_grad_()
    scale = torch.tensor(1 / (1 - p) if p < 1 else 0.0, dtype=dtype)
    ref = torch.relu(xr) * (keep_mask(shape, p, seed=s).to(dtype) * scale)
    ref.backward(dy)
    torch.testing.assert_close(y.detach(), ref.detach(), rtol=0, atol=0, equal_nan=True)
    num = ~torch.isnan(ref.detach())  # the sign of zeros, not that of NaN
    assert torch.equal(torch.signbit(y.detach()[num]), torch.signbit(ref.detach()[num]))
    nan = torch.isnan(x)
    assert torch.equal(xi.grad[~nan], xr.grad[~nan]) and not xi.grad[nan].any()


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_relu_dropout(name, dtype):
    x = torch.randn(4, 3, 5, dtype=dtype, requires_grad=True)
    with engine.scope(name):
        torch.library.opcheck(torch.ops.dietsnn.dropout.default, (x, 0.3, draw_seed(), True))
        torch.library.opcheck(torch.ops.dietsnn.relu_dropout_backward.default,
                              (torch.randn(4, 3, 5, dtype=dtype), torch.relu(x.detach()), 0.3))
