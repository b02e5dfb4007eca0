"""The training engine's memory savings are exact: constant-input LIF, pooling that keeps
nothing, spikes saved as bool, layout-agnostic neurons."""

import pytest
import torch
import torch.nn.functional as F

import dietsnn
from dietsnn import compact
from dietsnn.functional import engine, lif, native
from dietsnn.layers import set_time

D = torch.float64


def avg_pool(x, k):
    return torch.ops.dietsnn.avg_pool2d(x, k)


@pytest.mark.parametrize("size,k", [(8, 2), (7, 2), (9, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool_matches_torch_and_keeps_nothing(size, k, channels_last):
    x = torch.randn(2, 3, size, size, dtype=D)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 3, size // k, size // k, dtype=D)
    grads = []
    for fn in (avg_pool, lambda a, k: F.avg_pool2d(a, k)):
        xi = x.clone().requires_grad_()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            out = fn(xi, k)
        (out * w).sum().backward()
        grads.append((out.detach(), xi.grad, saved))
    assert torch.equal(grads[0][0], grads[1][0])
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-15)
    assert grads[0][2] == [] and len(grads[1][2]) == 1  # torch keeps the input, avg_pool nothing
    assert torch.autograd.gradcheck(lambda a: avg_pool(a, k), x.clone().requires_grad_())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size,k", [(28, 2), (7, 2), (9, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_native_avg_pool_is_torch_bit_for_bit(dtype, size, k, channels_last):
    """The C kernels (float32 and bfloat16, either layout) give PyTorch's pooling and the
    PyTorch definition of its gradient exactly, in the input's memory format."""
    if not native.available():
        pytest.skip("no native kernels")
    g = torch.Generator().manual_seed(size)
    x = (torch.randn(3, 5, size, size, generator=g) * 4).to(dtype)
    w = (torch.randn(3, 5, size // k, size // k, generator=g) * 4).to(dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, w = x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt)
    res = []
    for name in ("native", "eager"):
        xi = x.clone().requires_grad_()
        with engine.scope(name):
            out = torch.ops.dietsnn.avg_pool2d(xi, k)
            out.backward(w)
        res.append((out.detach(), xi.grad))
    assert torch.equal(res[0][0], F.avg_pool2d(x, k, k)) and torch.equal(res[0][1], res[1][1])
    for out, grad in res:
        assert out.is_contiguous(memory_format=fmt) and grad.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("name", ["native", "eager"] if native.available() else ["eager"])
def test_opcheck_avg_pool(name):
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    with engine.scope(name):
        torch.library.opcheck(torch.ops.dietsnn.avg_pool2d.default, (x, 2))
        torch.library.opcheck(torch.ops.dietsnn.avg_pool2d.default,
                              (x.detach().contiguous(memory_format=torch.channels_last), 3))


def test_constant_input_saves_one_step_and_gives_the_same_gradients():
    base = torch.randn(3, 4, 5, dtype=D) * 1.5
    w = torch.randn(6, 3, 4, 5, dtype=D)
    res = []
    for materialise in (False, True):
        b = base.clone().requires_grad_()
        lk = torch.tensor(0.9, dtype=D, requires_grad=True)
        th = torch.tensor(0.7, dtype=D, requires_grad=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                      lambda t: t):
            if materialise:
                out = lif(b.unsqueeze(0).expand(6, 3, 4, 5).clone(), lk, th)
            else:
                out = lif(b, lk, th, steps=6)
        (out * w).sum().backward()
        res.append((out.detach(), b.grad, lk.grad, th.grad, max(saved)))
    for a, c in zip(res[0][:4], res[1][:4]):
        assert torch.allclose(a, c, atol=1e-13)
    assert res[0][4] == base.numel() and res[1][4] == 6 * base.numel()


def test_lif_keeps_channels_last_layout_without_copies():
    x = torch.randn(3, 2, 4, 5, 5)  # [T, B, C, H, W], channels-last per step
    xcl = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    assert xcl.is_contiguous() is False
    a = lif(x, 0.9, 0.5)
    b = lif(xcl, 0.9, 0.5)
    assert torch.equal(a, b) and b.stride() == xcl.stride()
    xi = xcl.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    lif(xi, 0.9, 0.5).mul(torch.arange(5.0)).sum().backward()
    lif(xr, 0.9, 0.5).mul(torch.arange(5.0)).sum().backward()
    assert torch.allclose(xi.grad, xr.grad)


def test_inference_matches_training_forward():
    x = torch.randn(5, 8, 3) * 2
    with torch.no_grad():
        a = lif(x, 0.8, 0.6)
    b = lif(x.clone().requires_grad_(), 0.8, 0.6)
    assert torch.equal(a, b.detach())


def _snn(T=3):
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small", dropout=0.2).double(), T,
                             threshold=0.3).train()
    return snn


def test_spikes_saved_as_bool_give_identical_gradients():
    snn = _snn()
    x = torch.rand(4, 1, 28, 28, dtype=D)
    grads = []
    for use_compact in (True, False):
        snn.zero_grad()
        torch.manual_seed(1)
        if use_compact:
            out = snn(x)
        else:  # the same layers without the bool saving
            set_time(snn, 3, 4)
            out = snn.body(x).view(3, 4, -1).sum(0)
        out.square().sum().backward()
        grads.append([p.grad.clone() for p in snn.parameters()])
    assert any(g.abs().sum() > 0 for g in grads[0])
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_spike_tensors_are_packed_as_bool(monkeypatch):
    snn = _snn(T=4)
    packed = []
    real = compact._pack

    def spy(t):
        p = real(t)
        packed.append(p)
        return p

    monkeypatch.setattr(compact, "_pack", spy)
    snn(torch.rand(8, 1, 28, 28, dtype=D)).sum().backward()
    bools = [p[0] for p in packed if isinstance(p, tuple)]
    floats = [p for p in packed if isinstance(p, torch.Tensor)]
    # 4 dropout masks, conv3's and the last linear layer's spike inputs
    assert len(bools) == 6 and all(b.dtype == torch.bool for b in bools)
    # what stays float: the pooled spikes into conv2 and linear1, and u~ of the LIFs after them
    # (the first LIF keeps its [B, ...] input current; the pooling keeps nothing)
    acts = [tuple(f.shape) for f in floats
            if f.dim() >= 2 and f.shape[0] in (4, 32) and not isinstance(f, torch.nn.Parameter)]
    # (u~ as the operator's [T, N])
    assert acts == [(32, 32, 14, 14), (4, 8 * 64 * 14 * 14), (4, 8 * 64 * 14 * 14), (32, 3136),
                    (4, 8 * 256)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["eager", "compile"])
def test_cuda_training_step_matches_cpu(backend):
    """On a GPU the same step (compiled: Triton kernels for the neuron loops) gives the CPU's
    gradients."""
    from dietsnn.functional import engine

    snn = _snn().float()
    x = torch.rand(4, 1, 28, 28)
    grads = []
    with engine.scope(backend):
        for device in ("cpu", "cuda"):
            m = snn.to(device).eval()  # eval: no dropout masks, same computation on both
            m.zero_grad()
            m(x.to(device)).square().sum().backward()
            grads.append([p.grad.cpu() for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("keep", [True, False])
def test_eager_and_traceable_loops_agree(keep):
    from dietsnn.functional import neuron

    x = torch.randn(6, 50, dtype=D) * 1.3
    u0 = torch.randn(50, dtype=D) * 0.3
    u0_before = u0.clone()
    lk, v = torch.tensor(0.85, dtype=D), torch.tensor(0.6, dtype=D)
    a = neuron._forward_loop(x, lk, v, u0, keep, neuron._step_traceable)
    b = neuron._forward_loop(x, lk, v, u0, keep, neuron._step_eager)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[2], b[2], atol=1e-14)
    assert (a[1] is None) == (b[1] is None) == (not keep)
    if keep:
        assert torch.allclose(a[1], b[1], atol=1e-14)
        g = torch.randn(6, 50, dtype=D)
        for name in ("linear", "exponential", "sigmoid", "atan"):
            ga = neuron._backward_loop(a[1], g, lk, v, 0.3, name)
            gb = neuron._backward_eager(a[1], g, lk, v, 0.3, name)
            for p, q in zip(ga, gb):
                assert torch.allclose(p, q, atol=1e-12)
    assert torch.equal(u0, u0_before)  # the caller's membrane is not modified


@pytest.mark.slow
@pytest.mark.parametrize("steps", [None, 4])
def test_compiled_loops_match_eager_with_and_without_constant_input(steps):
    import shutil


    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler for torch.compile")
    x = torch.randn(3, 2, 8) * 1.5 if steps else torch.randn(4, 3, 2, 8) * 1.5
    w = torch.randn(4, 3, 2, 8)
    from dietsnn.functional import engine

    res = []
    for name in ("eager", "compile"):
        xi = x.clone().requires_grad_()
        lk = torch.tensor(0.9, requires_grad=True)
        th = torch.tensor(0.7, requires_grad=True)
        with engine.scope(name):
            out = lif(xi, lk, th, steps=steps)
        (out * w).sum().backward()
        res.append((out.detach(), xi.grad, lk.grad, th.grad))
    for a, b in zip(*res):
        assert torch.allclose(a, b, atol=1e-5)


def test_keep_freed_memory_takes_effect_on_glibc():
    import platform

    from dietsnn import runtime

    glibc = platform.libc_ver()[0] == "glibc"
    assert runtime.keep_freed_memory() is glibc
    with runtime.use_engine():
        pass  # back to glibc's defaults on exit
    assert runtime._set(runtime._DEFAULT_MMAP_MAX, runtime._DEFAULT_TRIM_THRESHOLD) is glibc


def test_compile_failure_falls_back_to_the_uncompiled_loops(monkeypatch):
    """Where torch.compile cannot build kernels (no working inductor or compiler), the compile
    engine warns once and runs the same loops uncompiled, with the same result."""
    from dietsnn.functional import engine, neuron

    def broken(fn, **kw):
        def call(*a):
            raise RuntimeError("inductor: no working C++ compiler")
        return call

    monkeypatch.setattr(engine, "_COMPILED", {})
    monkeypatch.setattr(engine, "_COMPILE_FAILED", [])
    monkeypatch.setattr(torch, "compile", broken)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, generator=g, requires_grad=True)
    leak = torch.tensor(0.8, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"), engine.scope("compile"):
        s = neuron.lif(x, leak, 0.5)
        s.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    leak2 = torch.tensor(0.8, requires_grad=True)
    with engine.scope("eager"):
        ref = neuron.lif(x2, leak2, 0.5)
    ref.sum().backward()
    assert torch.equal(s, ref)
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(leak.grad, leak2.grad)
    assert engine._COMPILE_FAILED and "no working C++ compiler" in engine._COMPILE_FAILED[0]


def _mmapped_bytes_of_big_tensor() -> int:
    """Bytes glibc serves by mmap while a big tensor lives (0: it came from the heap). The
    tensor is larger than all free heap memory, so no free chunk left by earlier work can serve
    it: with glibc's defaults it must be mmapped."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                                                   "hblkhd", "usmblks", "fsmblks", "uordblks",
                                                   "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    before = info.hblkhd
    t = torch.empty((info.fordblks + 64 * 2**20) // 4)  # beyond any free chunk and 32 MB
    during = libc.mallinfo2().hblkhd
    del t
    return during - before


def test_use_engine_holds_the_process_settings_and_a_forward_holds_none():
    """Inside `use_engine`: freed memory reused, LIF parameters clamped after any optimiser step,
    the engine in effect; all undone on exit. An SNN's forward alone changes none of it."""
    import platform

    from dietsnn import runtime
    from dietsnn.functional import engine

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the tuning is glibc's")
    assert runtime._open["blocks"] == 0 and not runtime.is_tuned()  # every block left
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 2)
    opt = torch.optim.SGD(snn.parameters(), lr=10.0)
    snn(torch.rand(2, 1, 28, 28)).sum().backward()
    assert not runtime.is_tuned() and _mmapped_bytes_of_big_tensor() >= 64 * 2**20
    lif_layer = dietsnn.layers.lif_layers(snn)[0][1]

    def step(leak_grad):
        lif_layer.leak.grad = torch.tensor(leak_grad)
        opt.step()
        return lif_layer.leak.item()

    assert step(-1.0) == 11.0  # no clamping outside the block: a user loop calls constrain_
    with runtime.use_engine("eager"):
        assert runtime.is_tuned() and _mmapped_bytes_of_big_tensor() == 0
        assert engine.resolve() == "eager"
        assert step(-1.0) == 1.0 and step(10.0) == pytest.approx(dietsnn.layers.MIN_LEAK)
        with runtime.use_engine():  # nested: the inner block leaving changes nothing
            assert engine.resolve() == "eager"
        assert runtime.is_tuned()
    assert not runtime.is_tuned() and _mmapped_bytes_of_big_tensor() >= 64 * 2**20
    assert engine.resolve() == engine.resolve("auto") and step(-1.0) > 1.0


def test_auto_engine_per_device():
    import importlib.util

    from dietsnn.functional import engine, native

    triton = importlib.util.find_spec("triton") is not None
    assert engine.resolve(None, "cuda") == ("native" if triton else "eager")
    assert engine.resolve(None, "mps") == "eager"
    assert engine.resolve(None, "cpu") == ("native" if native.available() else "eager")
    with engine.scope("compile"):  # an explicit choice holds on every device
        assert engine.resolve(None, "cuda") == "compile"
    with pytest.raises(ValueError, match="unknown engine 'fast'; choose one of auto, native"):
        engine.resolve("fast")


def test_example_input_is_on_the_model_device():
    from dietsnn.models import example_input

    m = dietsnn.build_ann("vgg_small").to("meta")  # any device but the CPU default
    x = example_input(m, 2)
    assert x.shape == (2, 1, 28, 28) and x.device.type == "meta"


@pytest.mark.parametrize("fused", [False, True])
def test_backward_runs_on_the_engine_of_its_forward(monkeypatch, fused):
    """The engine in effect at the forward also serves the backward, wherever the backward runs
    (autograd runs a CUDA backward on its own thread, where the forward's engine block is not in
    effect): here a forward under "eager" and its backward outside the block."""
    from dietsnn.functional import ops

    seen: list[str] = []
    orig = ops.kernels
    monkeypatch.setattr(ops, "kernels",
                        lambda t: seen.append(ops.resolve(None, t.device.type)) or orig(t))
    g = torch.Generator().manual_seed(0)
    with dietsnn.use_engine("eager"):
        if fused:
            x = (torch.randn(6, 2, 4, 4, generator=g) * 2).requires_grad_()
            out = torch.ops.dietsnn.lif_pool_forward(x, torch.tensor(0.9), torch.tensor(0.5),
                                                     None, 1.0, 2, 3, False, True, 0.3,
                                                     "linear")[0]
        else:
            x = (torch.randn(3, 40, generator=g) * 2).requires_grad_()
            out = dietsnn.LIF(0.9, 0.5)(x)
    assert seen == ["eager"]
    out.sum().backward()
    assert seen == ["eager", "eager"]
    assert x.grad is not None
