"""The Triton kernels (functional/triton_lif.py) run by Triton's interpreter on CPU tensors:
against the eager loops (forward bit for bit), against the plain autograd loop `lif_reference`
and the unfused layers (gradients to float32 rounding), in float32, bfloat16 and float16."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dietsnn.functional import neuron
from dietsnn.functional.neuron import lif_reference

pytest.importorskip("triton")
MOD = "dietsnn.functional.triton_lif"
MODS = (MOD, "dietsnn.functional.triton_kernels")
SURROGATES = ["linear", "exponential", "sigmoid", "atan"]
FEW = settings(max_examples=20, deadline=None, derandomize=True)  # the interpreter is slow
# numpy's exp overflows to inf in the sigmoid surrogate's tails (1 / (1 + inf) = 0, as on GPUs)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


@pytest.fixture(scope="module")
def K() -> ModuleType:
    """The module imported with TRITON_INTERPRET=1 (read when its kernels are defined), and
    removed again afterwards, so that no other test sees interpreted kernels."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    for m in MODS:
        sys.modules.pop(m, None)
    try:
        yield importlib.import_module(MOD)
    finally:
        for m in MODS:
            sys.modules.pop(m, None)
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def _reference_grads(x, leak, v, w, surrogate, steps=0):
    """Spikes and (dx, dleak, dv) of sum(w * spikes) through `lif_reference` (autograd)."""
    xi = x.detach().clone().requires_grad_()
    lk = torch.tensor(leak, requires_grad=True)
    th = torch.tensor(v, requires_grad=True)
    xs = xi.unsqueeze(0).expand(steps, *xi.shape) if steps else xi
    out = lif_reference(xs, lk, th, surrogate=surrogate)
    (out * w).sum().backward()
    return out.detach(), xi.grad, lk.grad, th.grad


def _close(got, want, rtol=1e-4):
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol,
                               atol=rtol * max(1.0, float(want.abs().max())))


@FEW
@given(T=st.integers(1, 6), n=st.integers(1, 2300), static=st.booleans(),
       surrogate=st.sampled_from(SURROGATES), leak=st.floats(0.1, 1.0), v=st.floats(0.1, 2.0),
       seed=st.integers(0, 2**16))
def test_lif_matches_eager_and_reference(K, T, n, static, surrogate, leak, v, seed):
    """Any T and neuron count (one or several programs, a partial last block), a current per
    step or one constant current: spikes, u~ and the membrane bit for bit as the eager loop;
    every gradient as the autograd loop's."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) if static else (T, n), generator=g) * 1.5
    w = torch.randn(T, n, generator=g)
    lk, th = torch.tensor(leak), torch.tensor(v)
    xs = x.expand(T, n) if static else x  # time stride 0: the kernel reads it as it is
    spikes, u_tilde, u = K.lif_forward(xs, lk, th, None, True)
    want = neuron._forward_loop(xs.contiguous(), lk, th, None, True)
    assert torch.equal(spikes, want[0]) and torch.equal(u_tilde, want[1])
    assert torch.equal(u, want[2])
    ref = _reference_grads(x, leak, v, w, surrogate, T if static else 0)
    assert torch.equal(spikes, ref[0])
    gx, g_leak, g_v = K.lif_backward(x if static else u_tilde, w, lk, th, 0.3, surrogate,
                                     T if static else 0)
    assert gx.shape == x.shape and gx.dtype == torch.float32
    for got, exp in zip((gx, g_leak, g_v), ref[1:]):
        _close(got, exp)


@FEW
@given(dtype=st.sampled_from([torch.bfloat16, torch.float16]), static=st.booleans(),
       surrogate=st.sampled_from(SURROGATES), seed=st.integers(0, 2**16))
def test_low_precision_inputs_integrate_in_float32(K, dtype, static, surrogate, seed):
    """bf16/fp16 currents: the membrane runs in float32 (spikes as the float32 loop on the
    same values, returned in the input's dtype); the gradients are the float32 ones."""
    T, n = 4, 1500
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((n,) if static else (T, n), generator=g) * 1.5).to(dtype)
    w = torch.randn(T, n, generator=g).to(dtype)
    lk, th = torch.tensor(0.8), torch.tensor(0.9)
    xs = x.expand(T, n) if static else x
    spikes, u_tilde, _ = K.lif_forward(xs, lk, th, None, not static)
    want = neuron._forward_loop(xs.float().contiguous(), lk, th, None, True)
    assert spikes.dtype == dtype and torch.equal(spikes.float(), want[0])
    gx, g_leak, g_v = K.lif_backward(x if static else u_tilde, w, lk, th, 0.3, surrogate,
                                     T if static else 0)
    ref = _reference_grads(x.float(), 0.8, 0.9, w.float(), surrogate, T if static else 0)
    assert gx.dtype == (dtype if static else torch.float32)
    _close(gx, ref[1], rtol=1e-2 if static else 1e-4)  # summed over time, then rounded
    _close(g_leak, ref[2])
    _close(g_v, ref[3])


def test_membrane_state_and_no_u_tilde(K):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 1300, generator=g) * 2
    u0 = torch.randn(1300, generator=g)
    lk, th = torch.tensor(0.83), torch.tensor(0.61)
    a = K.lif_forward(x, lk, th, u0, False)
    b = neuron._forward_loop(x, lk, th, u0, True)
    assert a[1] is None and torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


def test_leak_and_threshold_sums_are_deterministic(K):
    """Partial sums per program, summed in a fixed order: the same bits at every run."""
    g = torch.Generator().manual_seed(5)
    u_tilde, w = torch.randn(4, 5000, generator=g), torch.randn(4, 5000, generator=g)
    lk, th = torch.tensor(0.9), torch.tensor(0.5)
    a = K.lif_backward(u_tilde, w, lk, th, 0.3, "atan", 0)
    b = K.lif_backward(u_tilde, w, lk, th, 0.3, "atan", 0)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def _unfused(x, T, static, leak, v, keep, scale, k, surrogate, grad):
    """LIF (autograd loop), dropout (one mask over time), avg_pool2d, one by one."""
    xi = x.detach().clone().requires_grad_()
    lk = torch.tensor(leak, requires_grad=True)
    th = torch.tensor(v, requires_grad=True)
    B = x.shape[0] if static else x.shape[0] // T
    xt = xi.unsqueeze(0).expand(T, *x.shape) if static else xi.view(T, B, *x.shape[1:])
    o = lif_reference(xt, lk, th, surrogate=surrogate)
    if keep is not None:
        o = o * (keep.to(o.dtype) * torch.tensor(scale, dtype=o.dtype))
    out = F.avg_pool2d(o.flatten(0, 1), k, k)
    (out * grad).sum().backward()
    return out.detach(), xi.grad, lk.grad, th.grad


@FEW
@given(T=st.integers(1, 4), B=st.integers(1, 3), C=st.integers(1, 3), H=st.integers(3, 9),
       W=st.integers(3, 9), k=st.integers(1, 3), static=st.booleans(), drop=st.booleans(),
       surrogate=st.sampled_from(SURROGATES), seed=st.integers(0, 2**16))
def test_fused_block_matches_layers_one_by_one(K, T, B, C, H, W, k, static, drop, surrogate,
                                               seed):
    """LIF -> dropout -> k x k pooling fused: the output bit for bit as the layers run one by
    one (rows and columns the floor mode drops included), the gradients as autograd's."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B if static else T * B, C, H, W), generator=g) * 1.5
    keep = torch.rand((B, C, H, W), generator=g) < 0.7 if drop else None
    scale = 1.0 / 0.7
    grad = torch.randn((T * B, C, H // k, W // k), generator=g)
    leak, v = 0.85, 0.75
    want = _unfused(x, T, static, leak, v, keep, scale, k, surrogate, grad)
    lk, th = torch.tensor(leak), torch.tensor(v)
    out, u_tilde = K.lif_pool_forward(x, T, static, lk, th, keep, scale, k, not static)
    assert torch.equal(out, want[0])
    gx, g_leak, g_v = K.lif_pool_backward(x if static else u_tilde, grad, T, static, lk, th,
                                          0.3, surrogate, keep, scale, k)
    for got, exp in zip((gx, g_leak, g_v), want[1:]):
        _close(got, exp)


def test_fused_block_bf16_output_is_exact(K):
    """bf16 currents: the pooled dropped-out spikes as the unfused bf16 layers give them."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(2 * 3, 4, 8, 8, generator=g) * 1.5).bfloat16()
    keep = torch.rand(3, 4, 8, 8, generator=g) < 0.7
    lk, th = torch.tensor(0.9), torch.tensor(0.8)
    out, _ = K.lif_pool_forward(x, 2, False, lk, th, keep, 1 / 0.7, 2, False)
    spikes = neuron._forward_loop(x.float().view(2, -1), lk, th, None, False)[0]
    mask = keep.bfloat16() * torch.tensor(1 / 0.7, dtype=torch.bfloat16)
    want = F.avg_pool2d((spikes.bfloat16().view(2, 3, 4, 8, 8) * mask).flatten(0, 1), 2, 2)
    assert out.dtype == torch.bfloat16 and torch.equal(out, want)


def test_interface_errors(K):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown surrogate"):
        K.lif_backward(x, x, torch.tensor(1.0), torch.tensor(1.0), 0.3, "nope", 0)
    with pytest.raises(ValueError, match="does not fit"):
        K.lif_pool_forward(torch.zeros(2, 1, 2, 2), 1, False, torch.tensor(1.0),
                           torch.tensor(1.0), None, 1.0, 3, False)


def test_package_imports_without_triton():
    """triton is an optional extra: dietsnn and its neurons import and run without it."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, dietsnn\nfrom dietsnn.functional import lif\n"
            "print(lif(torch.ones(2, 3), 1.0, 0.5).sum().item())\n"
            f"try:\n    import {MOD}\nexcept ImportError as e:\n    print('extra:', e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["6.0", "extra: dietsnn's GPU kernels need triton: pip "
                                              "install 'dietsnn[cuda]'"]


AOT = """
import os, subprocess, sys, tempfile, inspect
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from dietsnn.functional import triton_kernels as KN, triton_lif as K
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTR = {"part_ptr": "*fp64", "keep_ptr": "*u8"}
FLOAT = ("gamma", "param", "scale", "inv_kk")
def build(fn, **const):
    names = list(inspect.signature(fn.fn).parameters)
    sig = {n: "constexpr" if n in const else PTR.get(n, "*bf16" if n in ("x_ptr", "g_ptr",
           "s_ptr") else "*fp32") if n.endswith("_ptr") else "fp32" if n in FLOAT else "i32"
           for n in names}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const),
                       target=GPUTarget("cuda", 90, 32), options={"num_warps": K.NUM_WARPS})
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    use = subprocess.run([os.path.join(BIN, "cuobjdump"), "--dump-resource-usage", f.name],
                         capture_output=True, text=True).stdout
    os.unlink(f.name)
    print(fn.__name__, use.split("REG:")[1].split()[0], "LOCAL:0" in use)
build(KN._lif_fwd, HAS_U0=True, STORE_SPIKES=True, STORE_UT=True, BLOCK=K.BLOCK)
build(KN._lif_bwd, KIND=2, SUM_T=False, BLOCK=K.BLOCK)
build(KN._sum_parts, RBLOCK=K.RBLOCK)
build(KN._pool_fwd, HAS_KEEP=True, STORE_OUT=True, STORE_UT=True, K=2, KK=4, BLOCK=256)
build(KN._pool_bwd, HAS_KEEP=True, KIND=3, SUM_T=True, K=3, KK=16, BLOCK=64)
"""


@pytest.mark.slow
def test_kernels_compile_for_hopper_without_spills():
    """No GPU needed: Triton compiles the kernels for sm_90 (H100/H200) down to a cubin with
    its bundled ptxas; none spills registers to local memory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-c", AOT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == ["_lif_fwd", "_lif_bwd", "_sum_parts", "_pool_fwd",
                                    "_pool_bwd"]
    assert all(r[2] == "True" and int(r[1]) <= 128 for r in rows), rows


def test_training_step_through_the_kernels_as_the_benchmark_runs_them(K):
    """A whole SNN training step (vgg_small, dropout and pooling fused) with the neurons served
    by the Triton kernels, as `bench_train.py`'s `dietsnn-triton` serves them, against the
    native CPU engine: the same loss bit for bit, the same gradients to float32 rounding."""
    import contextlib
    import importlib.util
    from pathlib import Path

    import dietsnn

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = bench  # dataclasses look the module up
    spec.loader.exec_module(bench)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3, 7])
    runs = []
    for triton_engine in (False, True):
        with contextlib.ExitStack() as stack:
            info: dict = {}
            if triton_engine:
                bench._triton_engine(stack, info)
            torch.manual_seed(0)
            snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 2)
            snn.train()
            loss = F.cross_entropy(snn(x), y)
            loss.backward()
            runs.append((loss.detach(), [p.grad for p in snn.parameters()], info))
    (loss_a, grads_a, _), (loss_b, grads_b, info) = runs
    assert info["triton_calls"] >= 4  # forward and backward of at least two neuron layers
    assert torch.equal(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        _close(b, a)


def test_the_operators_dispatch_to_the_triton_kernels(K, monkeypatch):
    """The neuron operators reach the Triton kernels through `ops.kernels` (where CUDA tensors
    get them under the native engine): routed there for CPU tensors under the interpreter, a
    vgg_small training step (fused blocks included) gives the native engine's loss bit for bit
    and its gradients to float32 rounding."""
    import dietsnn
    from dietsnn.functional import ops

    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([3, 7])
    calls: list[str] = []

    def traced(name):
        fn = getattr(K, name)

        def call(*a):
            calls.append(name)
            return fn(*a)
        return call

    names = ("lif_forward", "lif_backward", "lif_pool_forward", "lif_pool_backward")
    routed = type("Routed", (), {n: staticmethod(traced(n)) for n in names})
    runs = []
    for route in (False, True):
        if route:
            monkeypatch.setattr(ops, "kernels", lambda t: routed if t.dtype == torch.float32
                                else None)
        torch.manual_seed(0)
        snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), 2)
        snn.train()
        with dietsnn.use_engine("native"):
            loss = F.cross_entropy(snn(x), y)
            loss.backward()
        runs.append((loss.detach(), [p.grad for p in snn.parameters()]))
    assert {"lif_pool_forward", "lif_pool_backward"} <= set(calls)
    (loss_a, grads_a), (loss_b, grads_b) = runs
    assert torch.equal(loss_a, loss_b)
    for a, b in zip(grads_a, grads_b):
        _close(b, a)
    # a LIF on its own (no dropout or pooling after it) runs dietsnn::lif_forward/backward
    calls.clear()
    cur = torch.randn(4, 3, 50, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with dietsnn.use_engine("native"):
        dietsnn.LIF(0.9, 0.5)(cur).sum().backward()
    assert calls == ["lif_forward", "lif_backward"]


def test_auto_engine_on_cuda_is_native_with_triton(monkeypatch):
    from dietsnn.functional import engine

    assert engine.resolve("auto", "cuda") == "native"  # triton is installed with the test extra
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert engine.resolve("auto", "cuda") == "eager"
    assert engine.resolve("auto", "mps") == "eager"
