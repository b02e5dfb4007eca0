"""Property tests of the LIF core `dietsnn.functional.lif` (x is [T, ...]), in float64 with
dyadic values where exactness matters, so that no rounding can flip a spike."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dietsnn.functional import lif

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)
finite = st.floats(-8.0, 8.0, allow_nan=False, allow_infinity=False)
leaks = st.floats(0.01, 1.0)
thresholds = st.floats(0.05, 4.0)
shapes = st.tuples(st.integers(1, 12), st.integers(1, 5))


def tensor(values, shape):
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


@st.composite
def inputs(draw):
    T, n = draw(shapes)
    return tensor(draw(st.lists(finite, min_size=T * n, max_size=T * n)), (T, n))


@SETTINGS
@given(x=inputs(), leak=leaks, v=thresholds)
def test_spikes_are_binary_and_shaped_like_x(x, leak, v):
    s = lif(x, leak, v)
    assert s.shape == x.shape and s.dtype == x.dtype
    assert bool(((s == 0) | (s == 1)).all())


@SETTINGS
@given(shape=shapes, leak=leaks, v=thresholds)
def test_zero_input_never_fires(shape, leak, v):
    assert not lif(torch.zeros(shape, dtype=torch.float64), leak, v).any()


@SETTINGS
@given(T=st.integers(1, 200), c16=st.integers(0, 160), v16=st.integers(1, 64))
def test_if_rate_of_a_constant_input(T, c16, v16):
    # c = c16/16 and v = v16/16 are dyadic: every membrane value is exact in float64
    c, v = c16 / 16, v16 / 16
    s = lif(torch.full((T, 1), c, dtype=torch.float64), 1.0, v)
    rate = float(s.mean())
    assert abs(rate - min(1.0, c / v)) <= 1.0 / T + 1e-12


@SETTINGS
@given(x=inputs(), leak=leaks, v=thresholds, k=st.integers(-10, 10))
def test_scaling_input_and_threshold_together_keeps_spikes(x, leak, v, k):
    s = 2.0**k  # a power of two: scaling is exact, so the comparisons are the same
    assert torch.equal(lif(x, leak, v), lif(x * s, leak, v * s))
