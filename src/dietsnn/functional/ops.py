"""The neuron operators, registered with `torch.library` so that autograd, torch.compile,
torch.export, hooks and autocast treat them as any PyTorch op.

Schemas (stable; every Tensor of one call on one device, leak and threshold 0-dim in x's dtype):

    dietsnn::lif_forward(Tensor x, Tensor leak, Tensor threshold, Tensor? u0, int steps,
                         bool keep_u_tilde, float gamma, str surrogate)
        -> (Tensor spikes, Tensor u_tilde, Tensor u)
      x: input currents [T, N]; or, with steps > 0, one current [N] that is the same at each of
      `steps` steps. u0: membrane [N] at the start (None: 0). Returns spikes [T, N] (0/1, x's
      dtype), u~ [T, N] if keep_u_tilde else an empty [0], the final membrane [N]. Differentiable
      in x, leak and threshold through the spikes (surrogate `surrogate` scaled by `gamma`);
      u_tilde and u carry no gradient. Backward needs keep_u_tilde (or steps > 0).

    dietsnn::lif_backward(Tensor saved, Tensor grad, Tensor leak, Tensor threshold, int steps,
                          float gamma, str surrogate)
        -> (Tensor grad_x, Tensor grad_leak, Tensor grad_threshold)
      saved: u~ [T, N], or with steps > 0 the current x [N]; grad: dL/dspikes [T, N]. grad_x
      has saved's shape (with steps: summed over time).

    dietsnn::lif_pool_forward(Tensor x, Tensor leak, Tensor threshold, Tensor? keep, float scale,
                              int k, int timesteps, bool static, bool keep_u_tilde, float gamma,
                              str surrogate, bool count=False)
        -> (Tensor out, Tensor u_tilde, Tensor fired)
      LIF -> dropout -> k x k average pooling (stride k, floor) as one operation, NCHW. x: the
      currents [T*B, C, H, W], or if static one step's [B, C, H, W]; keep: bool [B, C, H, W]
      (dropout's kept neurons, worth `scale`) or None. Returns the output [T*B, C, H//k, W//k],
      u~ [T*B, C, H, W] if keep_u_tilde else [0], and if count the number of spikes the LIF
      fired at each step (before dropout; [T] float64, differentiable: a spike penalty without
      the spike tensor) else [0]. Backward needs keep_u_tilde unless static.

    dietsnn::lif_pool_backward(Tensor saved, Tensor grad, Tensor leak, Tensor threshold,
                               Tensor? keep, float scale, int k, int timesteps, bool static,
                               float gamma, str surrogate, Tensor? count_grad=None)
        -> (Tensor grad_x, Tensor grad_leak, Tensor grad_threshold)
      count_grad: dL/dfired ([T]), added to the gradient of every spike of its step.

    dietsnn::avg_pool2d(Tensor x, int k) -> Tensor
    dietsnn::avg_pool2d_backward(Tensor grad, int k, int h, int w) -> Tensor
      `F.avg_pool2d(x, k, k)` over [N, C, H, W] (floor mode), keeping x's memory format, and its
      input gradient for an input of height h and width w: each pixel gets 1/k^2 of its
      window's gradient (0 in the rows and columns the floor mode drops). Nothing is saved for
      backward but the input's size.

    dietsnn::dropout(Tensor x, float p, Tensor seed, bool relu=False) -> Tensor
      x * (keep ? 1 / (1 - p) : 0) in x's dtype, the mask `dropout.keep_mask` of x's shape
      from `seed` (0-dim int64); with relu, torch.relu(x) in place of x (the ANN's ReLU ->
      dropout in one pass). Its gradient is the same operation on the output's gradient, and
      with relu `relu_dropout_backward` of the output.
    dietsnn::relu_dropout_backward(Tensor grad, Tensor y, float p) -> Tensor
      grad / (1 - p) where y > 0, else 0 (also where y is NaN).

Implementations: the function bodies below serve every device and dtype; under the "native"
engine they call the C kernels on float32 CPU tensors and the Triton kernels (`triton_lif.py`)
on float32 CUDA tensors (`kernels`), otherwise the PyTorch loops of `neuron.py`; pooling and
dropout run the C kernels on float32 and bfloat16 CPU tensors (`_native`), PyTorch elsewhere.
A device's own kernel is added in one place, e.g. for CUDA:

    @torch.library.register_kernel("dietsnn::lif_forward", "cuda")
    def _(x, leak, threshold, u0, steps, keep_u_tilde, gamma, surrogate): ...

(and the same for `dietsnn::lif_backward`; autograd and the fake implementations stay as here).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import native
from .dropout import keep_mask, threshold
from .engine import compiled, native_cpu, resolve, scope, triton_available
from .neuron import _backward_eager, _backward_loop, _forward_loop, _step_eager, _step_traceable

_LIB = torch.library.Library("dietsnn", "DEF")


def _op(schema: str, fake: Callable) -> Callable:
    """Define `dietsnn::` `schema` with the decorated function as its implementation on every
    device (until a device registers its own kernel) and `fake` as its fake implementation.
    As with `torch.library.custom_op`, dynamo never traces into the implementation; unlike it,
    torch._dynamo is not imported for that in a process that compiles nothing (it costs
    seconds at the start of every command)."""
    def register(fn: Callable) -> Callable:
        disabled: list[Callable] = []

        def kernel(*args):
            if "torch._dynamo" not in sys.modules:  # nothing compiled can be running
                return fn(*args)
            if not disabled:
                disabled.append(torch._dynamo.disable(fn))
            return disabled[0](*args)

        name = schema.split("(")[0]
        _LIB.define(schema)
        _LIB.impl(name, kernel, "CompositeExplicitAutograd")
        torch.library.register_fake(f"dietsnn::{name}", fake, lib=_LIB)
        return fn
    return register


def kernels(x: Tensor):
    """The kernels that run the operators on `x` under the "native" engine: the C kernels
    (`native`) for float32 CPU tensors, the Triton kernels (`triton_lif`, the optional `cuda`
    extra) for float32 CUDA tensors; None where the PyTorch loops run."""
    if resolve(None, x.device.type) != "native":
        return None
    if x.device.type == "cpu":
        return native if native.supports(x) else None
    if x.is_cuda and x.dtype == torch.float32 and triton_available():
        from . import triton_lif

        return triton_lif
    return None



def _lif_fake(x, leak, threshold, u0, steps, keep_u_tilde, gamma, surrogate):
    shape = (steps, *x.shape) if steps else x.shape
    return x.new_empty(shape), x.new_empty(shape if keep_u_tilde else (0,)), x.new_empty(shape[1:])


@_op("lif_forward(Tensor x, Tensor leak, Tensor threshold, Tensor? u0, int steps, "
     "bool keep_u_tilde, float gamma, str surrogate) -> (Tensor, Tensor, Tensor)", _lif_fake)
def lif_forward(x: Tensor, leak: Tensor, threshold: Tensor, u0: Tensor | None, steps: int,
                keep_u_tilde: bool, gamma: float, surrogate: str,
                ) -> tuple[Tensor, Tensor, Tensor]:
    xs = x.unsqueeze(0).expand(steps, *x.shape) if steps else x
    if (kern := kernels(xs)) is not None:
        spikes, u_tilde, u = kern.lif_forward(xs, leak, threshold, u0, keep_u_tilde)
    else:
        step = compiled(_step_traceable) if resolve(None, x.device.type) == "compile" else _step_eager
        spikes, u_tilde, u = _forward_loop(xs, leak, threshold, u0, keep_u_tilde, step)
    return spikes, x.new_empty(0) if u_tilde is None else u_tilde, u


def _grads_fake(saved, grad, leak, *args):
    return saved.new_empty(saved.shape), leak.new_empty(()), leak.new_empty(())


@_op("lif_backward(Tensor saved, Tensor grad, Tensor leak, Tensor threshold, int steps, "
     "float gamma, str surrogate) -> (Tensor, Tensor, Tensor)", _grads_fake)
def lif_backward(saved: Tensor, grad: Tensor, leak: Tensor, threshold: Tensor, steps: int,
                 gamma: float, surrogate: str) -> tuple[Tensor, Tensor, Tensor]:
    if (kern := kernels(saved)) is not None:  # u~ recomputed when steps
        return kern.lif_backward(saved, grad, leak, threshold, gamma, surrogate, steps)
    if resolve(None, saved.device.type) == "compile":  # u~ recomputed inside the fused kernel
        return compiled(_backward_loop)(saved, grad, leak, threshold, gamma, surrogate, steps)
    u_tilde = _forward_loop(saved.expand(steps, *saved.shape), leak, threshold, None,
                            True)[1] if steps else saved
    return _backward_eager(u_tilde, grad, leak, threshold, gamma, surrogate, bool(steps))


def _lif_setup(ctx, inputs, output) -> None:
    x, leak, threshold, _, steps, _, gamma, surrogate = inputs
    ctx.save_for_backward(x if steps else output[1], leak, threshold)
    ctx.steps, ctx.gamma, ctx.surrogate = steps, gamma, surrogate
    ctx.engine = resolve(None, x.device.type)
    ctx.mark_non_differentiable(output[1], output[2])


def _lif_grad(ctx, grad_spikes, _grad_u_tilde, _grad_u):
    saved, leak, threshold = ctx.saved_tensors
    if not ctx.steps and saved.numel() != grad_spikes.numel():
        raise RuntimeError("dietsnn::lif_forward ran with keep_u_tilde=False: it has no backward")
    with scope(ctx.engine):
        gx, g_leak, g_v = torch.ops.dietsnn.lif_backward(saved, grad_spikes.contiguous(), leak,
                                                         threshold, ctx.steps, ctx.gamma,
                                                         ctx.surrogate)
    return gx, g_leak, g_v, None, None, None, None, None


torch.library.register_autograd("dietsnn::lif_forward", _lif_grad, setup_context=_lif_setup,
                                lib=_LIB)


# ---- LIF -> dropout -> pooling ---------------------------------------------------------------


def _currents(x: Tensor, timesteps: int, static: bool) -> Tensor:
    """[T, B*C*H*W] (a view; stride 0 over time when static)."""
    return x.reshape(1, -1).expand(timesteps, -1) if static else x.reshape(timesteps, -1)


def _pool_fake(x, leak, threshold, keep, scale, k, timesteps, static, keep_u_tilde, gamma,
               surrogate, count=False):
    n, c, h, w = x.shape
    n = n * timesteps if static else n
    return (x.new_empty((n, c, h // k, w // k)),
            x.new_empty((n, c, h, w) if keep_u_tilde else (0,)),
            x.new_empty((timesteps,) if count else (0,), dtype=torch.float64))


@_op("lif_pool_forward(Tensor x, Tensor leak, Tensor threshold, Tensor? keep, float scale, int k, "
     "int timesteps, bool static, bool keep_u_tilde, float gamma, str surrogate, "
     "bool count=False) -> (Tensor, Tensor, Tensor)", _pool_fake)
def lif_pool_forward(x: Tensor, leak: Tensor, threshold: Tensor, keep: Tensor | None,
                     scale: float, k: int, timesteps: int, static: bool, keep_u_tilde: bool,
                     gamma: float, surrogate: str,
                     count: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    kern = kernels(x)
    none = x.new_empty(0)
    if kern is native:
        out, u_tilde, fired = native.lif_pool_forward(x, timesteps, static, leak, threshold, keep,
                                                      scale, k, keep_u_tilde, count)
        return out, none if u_tilde is None else u_tilde, _fired(x, fired)
    if kern is not None and not count:
        out, u_tilde = kern.lif_pool_forward(x, timesteps, static, leak, threshold, keep, scale,
                                             k, keep_u_tilde)
        return out, none if u_tilde is None else u_tilde, _fired(x, None)
    spikes, u_tilde, _ = _forward_loop(_currents(x, timesteps, static), leak, threshold, None,
                                       keep_u_tilde)
    fired = spikes.sum(1, dtype=torch.float64) if count else None
    spikes = spikes.view(timesteps, -1, *x.shape[1:])
    if keep is not None:
        spikes = spikes * torch.where(keep, scale, 0.0).to(x.dtype)
    out = F.avg_pool2d(spikes.flatten(0, 1), k, k)
    return (out, u_tilde.view(-1, *x.shape[1:]) if keep_u_tilde else none,
            _fired(x, fired))


def _fired(x: Tensor, fired: list[int] | Tensor | None) -> Tensor:
    if fired is None:
        return x.new_empty(0, dtype=torch.float64)
    return torch.as_tensor(fired, dtype=torch.float64, device=x.device)


@_op("lif_pool_backward(Tensor saved, Tensor grad, Tensor leak, Tensor threshold, Tensor? keep, "
     "float scale, int k, int timesteps, bool static, float gamma, str surrogate, "
     "Tensor? count_grad=None) -> (Tensor, Tensor, Tensor)", _grads_fake)
def lif_pool_backward(saved: Tensor, grad: Tensor, leak: Tensor, threshold: Tensor,
                      keep: Tensor | None, scale: float, k: int, timesteps: int, static: bool,
                      gamma: float, surrogate: str,
                      count_grad: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    kern = kernels(saved)
    # the C kernel adds one value to every spike: a penalty on the sum over steps
    if kern is native and (count_grad is None or bool((count_grad == count_grad[0]).all())):
        return native.lif_pool_backward(saved, grad, timesteps, static, leak, threshold, gamma,
                                        surrogate, keep, scale, k,
                                        0.0 if count_grad is None else float(count_grad[0]))
    if kern is not None and count_grad is None:
        return kern.lif_pool_backward(saved, grad, timesteps, static, leak, threshold, gamma,
                                      surrogate, keep, scale, k)
    h, w = saved.shape[-2:]
    g = grad.repeat_interleave(k, -2).repeat_interleave(k, -1) * (1.0 / (k * k))
    g = F.pad(g, (0, w - g.shape[-1], 0, h - g.shape[-2]))  # rows the floor mode dropped: 0
    if keep is not None:
        g = (g.view(timesteps, *keep.shape) * torch.where(keep, scale, 0.0).to(g.dtype))
    if count_grad is not None:  # dL/dfired[t] to every spike of step t
        g = (g.reshape(timesteps, -1) + count_grad.to(g.dtype)[:, None]).view(g.shape)
    u_tilde = _currents(saved, timesteps, static)
    if static:
        u_tilde = _forward_loop(u_tilde, leak, threshold, None, True)[1]
    gx, g_leak, g_v = _backward_eager(u_tilde, g.reshape(timesteps, -1), leak, threshold, gamma,
                                      surrogate, static)
    return gx.view(saved.shape), g_leak, g_v


def _pool_setup(ctx, inputs, output) -> None:
    x, leak, threshold, keep, scale, k, timesteps, static, _, gamma, surrogate, *count = inputs
    ctx.save_for_backward(x if static else output[1], leak, threshold, keep)
    ctx.args = (scale, k, timesteps, static, gamma, surrogate)
    ctx.count = bool(count and count[0])
    ctx.engine = resolve(None, x.device.type)
    ctx.mark_non_differentiable(output[1])


def _pool_grad(ctx, grad_out, _grad_u_tilde, grad_fired):
    saved, leak, threshold, keep = ctx.saved_tensors
    count_grad = grad_fired if ctx.count and grad_fired is not None else None
    with scope(ctx.engine):
        gx, g_leak, g_v = torch.ops.dietsnn.lif_pool_backward(saved, grad_out.contiguous(), leak,
                                                              threshold, keep, *ctx.args,
                                                              count_grad)
    return gx, g_leak, g_v, None, None, None, None, None, None, None, None, None


torch.library.register_autograd("dietsnn::lif_pool_forward", _pool_grad,
                                setup_context=_pool_setup, lib=_LIB)


def _native(x: Tensor) -> bool:
    """Whether pooling and dropout run the C kernels on `x`: float32 or bfloat16 on the CPU
    under the "native" engine."""
    return x.dtype in (torch.float32, torch.bfloat16) and native_cpu(x.device)


# ---- average pooling -------------------------------------------------------------------------


def _like(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An empty tensor of `shape` in x's memory format (channels-last or contiguous)."""
    cl = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return x.new_empty(shape).contiguous(
        memory_format=torch.channels_last if cl else torch.contiguous_format)


@_op("avg_pool2d(Tensor x, int k) -> Tensor",
     lambda x, k: _like(x, (*x.shape[:2], x.shape[2] // k, x.shape[3] // k)))
def avg_pool2d(x: Tensor, k: int) -> Tensor:
    return native.avg_pool2d(x, k) if _native(x) else F.avg_pool2d(x, k, k)


@_op("avg_pool2d_backward(Tensor grad, int k, int h, int w) -> Tensor",
     lambda grad, k, h, w: _like(grad, (*grad.shape[:2], h, w)))
def avg_pool2d_backward(grad: Tensor, k: int, h: int, w: int) -> Tensor:
    if _native(grad):
        return native.avg_pool2d(grad, k, (h, w))
    (n, c, ho, wo), g = grad.shape, grad * (1.0 / (k * k))
    if not g.is_contiguous() and g.is_contiguous(memory_format=torch.channels_last):
        g = g.permute(0, 2, 3, 1)[:, :, None, :, None, :]  # work in NHWC, the memory order
        g = g.expand(n, ho, k, wo, k, c).reshape(n, ho * k, wo * k, c).permute(0, 3, 1, 2)
    else:
        g = g[:, :, :, None, :, None].expand(n, c, ho, k, wo, k).reshape(n, c, ho * k, wo * k)
    if (ho * k, wo * k) != (h, w):  # rows/columns the floor mode dropped get no gradient
        g = F.pad(g, (0, w - wo * k, 0, h - ho * k))
    return g


def _avg_pool_setup(ctx, inputs, output) -> None:
    x, ctx.k = inputs
    ctx.h, ctx.w = x.shape[-2:]
    ctx.engine = resolve(None, x.device.type)


def _avg_pool_grad(ctx, grad):
    with scope(ctx.engine):
        return torch.ops.dietsnn.avg_pool2d_backward(grad, ctx.k, ctx.h, ctx.w), None


torch.library.register_autograd("dietsnn::avg_pool2d", _avg_pool_grad,
                                setup_context=_avg_pool_setup, lib=_LIB)


# ---- dropout ---------------------------------------------------------------------------------


@_op("dropout(Tensor x, float p, Tensor seed, bool relu=False) -> Tensor",
     lambda x, p, seed, relu=False: x.new_empty(x.shape))
def dropout(x: Tensor, p: float, seed: Tensor, relu: bool = False) -> Tensor:
    x, thr, scale = x.contiguous(), threshold(p), _scale(p, x.dtype)
    if thr is not None and _native(x):
        return native.dropout(x, seed, thr, scale, relu)
    x = torch.relu(x) if relu else x
    return x * (keep_mask(x.shape, p, x.device, seed=seed).to(x.dtype) * _tensor(scale, x))


@_op("relu_dropout_backward(Tensor grad, Tensor y, float p) -> Tensor",
     lambda grad, y, p: grad.new_empty(grad.shape))
def relu_dropout_backward(grad: Tensor, y: Tensor, p: float) -> Tensor:
    if _native(grad) and grad.dtype == y.dtype:
        return native.relu_dropout_backward(grad, y, _scale(p, grad.dtype))
    return torch.where(y > 0, grad * _tensor(_scale(p, grad.dtype), grad), 0)


def _scale(p: float, dtype: torch.dtype) -> float:
    """Dropout's 1 / (1 - p) (0 for p = 1) as a number of `dtype`."""
    return torch.tensor(1.0 / (1.0 - p) if p < 1.0 else 0.0, dtype=dtype).item()


def _tensor(v: float, like: Tensor) -> Tensor:
    return torch.tensor(v, dtype=like.dtype, device=like.device)


def _dropout_setup(ctx, inputs, output) -> None:
    x, ctx.p, seed, *rest = inputs
    ctx.relu = bool(rest and rest[0])
    ctx.save_for_backward(output if ctx.relu else seed)
    ctx.engine = resolve(None, x.device.type)


def _dropout_grad(ctx, grad):
    (saved,) = ctx.saved_tensors
    with scope(ctx.engine):
        if ctx.relu:  # where the output is positive (ReLU's and dropout's gradients in one)
            return torch.ops.dietsnn.relu_dropout_backward(grad, saved, ctx.p), None, None, None
        return torch.ops.dietsnn.dropout(grad, ctx.p, saved), None, None, None


torch.library.register_autograd("dietsnn::dropout", _dropout_grad, setup_context=_dropout_setup,
                                lib=_LIB)
