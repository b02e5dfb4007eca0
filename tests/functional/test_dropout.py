import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dietsnn.functional.dropout import LEVELS, keep_mask
from dietsnn.layers import Dropout


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
            torch.manual_seed(0)
            out.append(keep_mask((1 << 16,), 0.1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(out[0], out[1])


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
