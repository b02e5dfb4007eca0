"""The native C kernels against the eager PyTorch loops (forward bit for bit, backward to float
rounding), against the float64 autograd loop, and the build cache's behaviour."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import on_engine
from hypothesis import given, settings
from hypothesis import strategies as st

from dietsnn.functional import engine, native, neuron
from dietsnn.functional.neuron import lif, lif_reference

pytestmark = pytest.mark.skipif(not native.available(), reason=f"no native kernels: "
                                f"{native.why_not()}")


def _run(backend, x, leak, v, steps, surrogate, w):
    xi = x.clone().requires_grad_()
    lk = torch.tensor(leak, requires_grad=True)
    th = torch.tensor(v, requires_grad=True)
    out = on_engine(lif, xi, lk, th, steps=steps, surrogate=surrogate, engine=backend)
    (out * w).sum().backward()
    return out.detach(), xi.grad, lk.grad, th.grad


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 6), n=st.integers(1, 700), leak=st.floats(0.05, 1.0),
       v=st.floats(0.05, 3.0), static=st.booleans(),
       surrogate=st.sampled_from(["linear", "exponential", "sigmoid", "atan"]),
       seed=st.integers(0, 2**16), threads=st.integers(1, 3))
def test_native_matches_eager(T, n, leak, v, static, surrogate, seed, threads):
    """Any length of time, any neuron count (across the kernels' 64-neuron chunks and
    256-neuron blocks), any thread count: identical spikes, gradients to float32 rounding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) if static else (T, n), generator=g) * 1.5
    w = torch.randn(T, n, generator=g)
    torch.set_num_threads(threads)  # restored by conftest
    a = _run("eager", x, leak, v, T if static else None, surrogate, w)
    b = _run("native", x, leak, v, T if static else None, surrogate, w)
    assert torch.equal(a[0], b[0])
    for p, q in zip(a[1:], b[1:]):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-4 * max(1.0, float(p.abs().max())))


def test_native_forward_is_bit_identical_to_eager_with_membrane_state():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 5, 11, generator=g) * 2
    u0 = torch.randn(3, 5, 11, generator=g)
    lk, th = torch.tensor(0.83), torch.tensor(0.61)
    for keep in (True, False):
        a = on_engine(neuron.lif_forward, x, lk, th, u0, keep, engine="eager")
        b = on_engine(neuron.lif_forward, x, lk, th, u0, keep, engine="native")
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        assert (a[1] is None) == (b[1] is None) == (not keep)
        if keep:
            assert torch.equal(a[1], b[1])


@pytest.mark.parametrize("steps", [None, 3])
def test_native_gradients_match_the_float64_autograd_loop(steps):
    """An independent reference: the plain per-step loop through autograd, in float64."""
    g = torch.Generator().manual_seed(1)
    shape = (40, 9) if steps else (4, 40, 9)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(steps or 4, 40, 9, generator=g, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    lr_, tr = (torch.tensor(0.9, dtype=torch.float64, requires_grad=True),
               torch.tensor(0.8, dtype=torch.float64, requires_grad=True))
    xs = xr.expand(steps, *shape) if steps else xr
    (lif_reference(xs, lr_, tr) * w).sum().backward()
    out, gx, gl, gv = _run("native", x.float(), 0.9, 0.8, steps, "linear", w.float())
    assert torch.equal(out.double(), lif_reference(xs.detach(), 0.9, 0.8))
    torch.testing.assert_close(gx.double(), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gl.double(), lr_.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gv.double(), tr.grad, rtol=1e-4, atol=1e-4)


def test_native_takes_views_channels_last_and_leaves_float64_to_eager():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 6, 5, 5, generator=g).transpose(1, 2)  # not contiguous
    ref = on_engine(lif, x.contiguous(), 0.9, 0.5, engine="eager")
    assert torch.equal(on_engine(lif, x, 0.9, 0.5, engine="native"), ref)
    cl = torch.randn(12, 6, 5, 5, generator=g).to(memory_format=torch.channels_last)
    s = on_engine(lif, cl, 0.9, 0.5, steps=3, engine="native")
    assert torch.equal(s, on_engine(lif, cl, 0.9, 0.5, steps=3, engine="eager"))
    x64 = torch.randn(3, 20, generator=g, dtype=torch.float64)
    assert not native.supports(x64)
    assert torch.equal(on_engine(lif, x64, 0.9, 0.5, engine="native"),
                       lif_reference(x64, 0.9, 0.5))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 9), h=st.integers(1, 13), w=st.integers(1, 13),
       k=st.integers(1, 4), channels_last=st.booleans(), spikes=st.booleans(),
       seed=st.integers(0, 2**16))
def test_native_avg_pool_matches_torch(n, c, h, w, k, channels_last, spikes, seed):
    if k > min(h, w):
        return
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    if spikes:
        x = (x > 0).float()
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y, ref = native.avg_pool2d(x, k), F.avg_pool2d(x, k, k)
    if spikes or k == 2:  # sums of 0/1, or four terms in PyTorch's order: exact
        assert torch.equal(y, ref)
    else:
        torch.testing.assert_close(y, ref)
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last
                           else torch.contiguous_format)


def _fresh_state(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(tmp_path / "cache"))


def test_the_library_is_built_once_and_loaded_from_the_cache(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path)
    assert native.library() is not None
    (built,) = (tmp_path / "cache").glob("dietsnn_native_*.so")
    stamp = built.stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(native, "_build", lambda *a: calls.append(a))
    monkeypatch.setattr(native, "_STATE", {})
    assert native.library() is not None  # a second process: loaded, not rebuilt
    assert calls == [] and built.stat().st_mtime_ns == stamp


def test_an_unwritable_cache_builds_in_a_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(blocker / "cache"))
    assert native.library() is not None


def test_without_a_compiler_the_default_is_eager(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path)
    monkeypatch.setattr(native, "compiler", lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no compiler is a setup, not a failure: no warning
        assert native.library() is None and "no C compiler" in native.why_not()
    assert engine.resolve(None, "cpu") == "eager"
    x = torch.randn(3, 10)
    assert torch.equal(on_engine(lif, x, 0.9, 0.5, engine="native"),
                       on_engine(lif, x, 0.9, 0.5, engine="eager"))


def test_a_failing_build_is_reported_and_falls_back(monkeypatch, tmp_path):
    _fresh_state(monkeypatch, tmp_path)
    monkeypatch.setenv("CC", str(tmp_path / "broken-cc"))
    (tmp_path / "broken-cc").write_text("#!/bin/sh\necho 'cc: fatal error' >&2\nexit 1\n")
    (tmp_path / "broken-cc").chmod(0o755)
    with pytest.warns(RuntimeWarning, match="cc: fatal error; the neurons run as plain"):
        assert native.library() is None
    assert "building the native kernels failed: cc: fatal error" in native.why_not()
    assert not list((tmp_path / "cache").glob("*"))  # no partial library left behind


def test_a_missing_source_file_is_reported_and_falls_back(monkeypatch, tmp_path):
    """An installation without one of the C sources (a wheel that left it out) warns: the
    neurons would otherwise run, slower, as plain PyTorch ops without a word."""
    _fresh_state(monkeypatch, tmp_path)
    monkeypatch.setattr(native, "SOURCES", (*native.SOURCES, tmp_path / "native_gone.c"))
    with pytest.warns(RuntimeWarning, match="cannot read the kernels' sources.*native_gone.c"):
        assert native.library() is None
    assert engine.resolve(None, "cpu") == "eager"


def test_no_writable_folder_at_all_falls_back(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(native.tempfile, "mkdtemp", lambda **kw: (_ for _ in ()).throw(
        PermissionError("read-only file system")))
    with pytest.warns(RuntimeWarning, match="no writable folder"):
        assert native.library() is None
