"""The "native" neuron backend: the C kernels built once per machine with the system C compiler
into one shared library and called through ctypes. `native_lif.c` holds the LIF recurrence
(forward and BPTT), `native_pool.c` average pooling and the fused LIF -> dropout -> pooling
block, `native_dropout.c` dropout masks made and applied in one pass, `native.h` what they
include (the surrogates, the BPTT step).

The library is built on first use into a cache folder (`$DIETSNN_CACHE_DIR`, else
`$XDG_CACHE_HOME/dietsnn`, else `~/.cache/dietsnn`) under a name that hashes the sources and the
header, the compiler, its flags and the CPU, so that an edited source or header, another
compiler or another machine (a home folder shared over a cluster) builds its own; later
processes only load it. Building takes about a second and needs no PyTorch headers; loading
imports nothing. A library is built in a private folder and renamed into place, and loaded
only from a folder that only this user (and root) can write, as this user's regular file,
through the very descriptor checked; for a cache folder others control a private copy is built
in a temporary folder (docs/RELIABILITY.md). Where no C compiler is found or the build fails,
`library()` returns None and the eager backend runs (neuron.py); a failed build warns once.

Only float32 CPU tensors take this path; `lif` routes every other case to the eager loops.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .surrogate import kernel_args

_HERE = Path(__file__).parent
# compiled together into one library
SOURCES = (_HERE / "native_lif.c", _HERE / "native_pool.c", _HERE / "native_dropout.c")
HEADERS = (_HERE / "native.h",)  # included by the sources (#include "native.h")
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared")
_log = logging.getLogger("dietsnn")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": CDLL or None once tried; "why": reason it is None
_FD_DIR = "/proc/self/fd"  # a descriptor's file by name (Linux)


def compiler() -> str | None:
    """The C compiler to build with: `$CC`, else cc, gcc or clang on the PATH."""
    for name in filter(None, (os.environ.get("CC"), "cc", "gcc", "clang")):
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    if os.environ.get("DIETSNN_CACHE_DIR"):
        return Path(os.environ["DIETSNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dietsnn"


def _cpu_identity() -> str:
    """The CPU model and feature flags (-march=native code is specific to them)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _version(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True,
                              timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _uid() -> int | None:
    return os.geteuid() if hasattr(os, "geteuid") else None


def _checked(folder: str | Path) -> tuple[Path, str | None]:
    """`folder` resolved, and why another user could have put or could replace a file in it, or
    None. As OpenSSH checks key paths: every folder from it up to the root belongs to this user
    or root and nobody else can write it, except a sticky folder above it (such as /tmp:
    others cannot rename what is not theirs); no symbolic link on the way is another user's."""
    path = Path(os.path.abspath(folder))
    real = Path(os.path.realpath(path))
    me = _uid()
    if me is None:
        return real, None
    for p in (path, *path.parents):
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (me, 0):
            return real, f"{p} is a symbolic link of user {st.st_uid}"
    for p in (real, *real.parents):
        st = os.stat(p)
        if st.st_uid not in (me, 0):
            return real, f"{p} belongs to user {st.st_uid}"
        if st.st_mode & 0o022 and (p == real or not st.st_mode & stat.S_ISVTX):
            return real, f"others can write {p}"
    return real, None


def _cache_folder() -> tuple[Path | None, str]:
    """The cache folder, resolved, its missing folders created private (0700); or None and
    why (logged, or for a folder others control, warned once)."""
    folder = Path(os.path.abspath(cache_dir()))
    try:
        for p in reversed([p for p in (folder, *folder.parents) if not os.path.lexists(p)]):
            os.makedirs(p, 0o700, exist_ok=True)
        real, bad = _checked(folder)
    except OSError as e:
        _log.debug("cannot use %s (%s); building in a temporary folder", folder, e)
        return None, str(e)
    if bad:
        warnings.warn(f"dietsnn: the native kernel cache is not private ({bad}); a private copy "
                      "is built for this process", RuntimeWarning, stacklevel=6)
        return None, bad
    return real, ""


def _build(cc: str, out: Path) -> str | None:
    """Compile into a private temporary folder beside `out` (0700, so nobody else can swap
    the file while it is built) and rename it to `out`. Returns None, or why it failed."""
    tmp = tempfile.mkdtemp(prefix=".build-", dir=out.parent)
    why = "unknown"
    try:
        lib = os.path.join(tmp, out.name)
        # without -march=native or OpenMP where the compiler lacks them (one thread then)
        for extra in (["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []):
            cmd = [cc, *FLAGS, *extra, *map(str, SOURCES), "-o", lib, "-lm"]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.SubprocessError) as e:
                why = f"{type(e).__name__}: {e}"
                continue
            if r.returncode == 0:
                os.chmod(lib, 0o755)  # whatever the umask: only this user may write it
                os.replace(lib, out)
                return None
            why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1][:200]
        return why
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_checked(path: Path) -> int | None:
    """A descriptor of `path` if it is, not through a symbolic link, a regular file of this
    user that nobody else can write; else None (logged)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) |
                     getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        _log.info("not loading %s: %s", path, e)
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and not st.st_mode & 0o022 and st.st_uid == (_uid() or 0):
        return fd
    os.close(fd)
    _log.info("not loading %s: not a regular file that only this user can write", path)
    return None


def _load_from(cc: str, folder: Path, name: str) -> tuple[ctypes.CDLL | None, str | None]:
    """Load `folder/name`, building it first where it is missing or not acceptable. The very
    file checked is loaded, through its descriptor (`/proc/self/fd/N`): a file renamed into its
    place meanwhile is not. Where /proc is absent the checked path is loaded: `folder` passed
    `_checked`, so only this user or root could have replaced it. The descriptor stays open,
    as the dynamic loader takes a name it loaded before for the library loaded then."""
    path = folder / name
    fd = _open_checked(path)
    if fd is None:
        start = time.perf_counter()
        why = _build(cc, path)
        if why is not None:
            return None, f"building the native kernels failed: {why}"
        _log.info("built dietsnn's native neuron kernels in %.1f s: %s",
                  time.perf_counter() - start, path)
        fd = _open_checked(path)
        if fd is None:
            return None, f"loading {path} refused: replaced after it was built"
    try:
        return ctypes.CDLL(f"{_FD_DIR}/{fd}" if os.path.isdir(_FD_DIR) else str(path)), None
    except OSError as e:
        os.close(fd)
        return None, f"loading {path} failed: {e}"


def _find(cc: str, name: str) -> tuple[ctypes.CDLL | None, str | None]:
    """`name` loaded from the cache folder where only this user controls it, else built and
    loaded in a private temporary folder (removed again; the library stays mapped)."""
    folder, why = _cache_folder()
    if folder is not None:
        try:
            return _load_from(cc, folder, name)
        except OSError as e:  # cache folder not writable: build in a private temporary one
            _log.debug("cannot build in %s (%s); building in a temporary folder", folder, e)
            why = str(e)
    try:
        tmp, bad = _checked(tempfile.mkdtemp(prefix="dietsnn-native-"))
    except OSError as e:
        return None, f"building the native kernels failed: no writable folder ({why}; {e})"
    try:
        return (None, f"loading the native kernels refused: {bad}") if bad else \
            _load_from(cc, tmp, name)
    except OSError as e:
        return None, f"building the native kernels failed: {e}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; None where they cannot be (see `why_not`)."""
    if "lib" in _STATE:
        return _STATE["lib"]  # type: ignore[return-value]
    with _LOCK:
        if "lib" not in _STATE:
            _STATE["lib"], _STATE["why"] = _load()
            why = _STATE["why"]
            if _STATE["lib"] is None and not str(why).startswith("no C compiler"):
                warnings.warn(f"dietsnn: {why}; the neurons run as plain PyTorch ops",
                              RuntimeWarning, stacklevel=3)
            elif _STATE["lib"] is None:
                _log.debug("native neuron kernels unavailable: %s", why)
    return _STATE["lib"]  # type: ignore[return-value]


def _lib() -> ctypes.CDLL:
    """The loaded kernels, where a caller has checked that they are there (`supports`)."""
    lib = library()
    assert lib is not None
    return lib


def why_not() -> str | None:
    """Why `library()` is None (after it was called), else None."""
    return _STATE.get("why")  # type: ignore[return-value]


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    cc = compiler()
    if cc is None:
        return None, "no C compiler (cc, gcc or clang) on the PATH"
    try:
        sources = [b"%s\0%s" % (f.name.encode(), f.read_bytes()) for f in (*SOURCES, *HEADERS)]
    except OSError as e:
        return None, f"cannot read the kernels' sources: {e}"
    key = hashlib.sha256(b"\0".join([*sources, _version(cc).encode(), " ".join(FLAGS).encode(),
                                     _cpu_identity().encode(), platform.machine().encode()]))
    lib, why = _find(cc, f"dietsnn_native_{key.hexdigest()[:20]}.so")
    if lib is None:
        return None, why
    f, i, L, p, s = ctypes.c_float, ctypes.c_int, ctypes.c_long, ctypes.c_void_p, ctypes.c_int64
    sums = ctypes.POINTER(ctypes.c_double)
    for name, args in (("lif_forward", [p, L, L, L, f, f, p, i, p, p, i]),
                       ("lif_backward", [p, p, L, L, i, f, f, f, i, f, p, sums, i]),
                       ("avg_pool2d", [p, p, L, L, L, L, i, i, i, i, i]),
                       ("lif_pool_forward", [p, L, L, L, L, L, i, f, f, p, f, p, p, p, i]),
                       ("lif_pool_backward", [p, p, L, L, L, L, i, i, f, f, f, i, f, p, f, f,
                                              p, sums, i]),
                       ("dropout", [p, p, p, L, i, s, i, f, i, i]),
                       ("relu_dropout_backward", [p, p, p, L, i, f, i])):
        fn = getattr(lib, f"dietsnn_{name}")
        fn.argtypes, fn.restype = args, i
    return lib, None


def available() -> bool:
    return library() is not None


def supports(x: Tensor) -> bool:
    """Whether the kernels take `x` (float32 on the CPU) and are available."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and available()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _call(name: str, *args) -> None:
    """`dietsnn_<name>(*args, threads)`; its nonzero status (a failed allocation) raised."""
    if getattr(_lib(), f"dietsnn_{name}")(*args, torch.get_num_threads()) != 0:
        raise MemoryError(f"native {name}: out of memory")


def lif_forward(x: Tensor, leak: Tensor, v: Tensor, u0: Tensor | None,
                keep_u_tilde: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """`neuron._forward_loop` on `[T, N]` float32 (time stride N or 0): (spikes, u~ or None,
    final membrane)."""
    T, N = x.shape
    if x.stride(1) != 1 or x.stride(0) not in (0, N):
        x = x.contiguous()
    spikes = torch.empty((T, N), dtype=x.dtype)
    u_tilde = torch.empty((T, N), dtype=x.dtype) if keep_u_tilde else None
    u = torch.empty(N, dtype=x.dtype) if u0 is None else u0.contiguous().clone()
    _call("lif_forward", _ptr(x), x.stride(0), T, N, float(leak), float(v), _ptr(u),
          int(u0 is None), _ptr(spikes), _ptr(u_tilde))
    return spikes, u_tilde, u


def lif_backward(saved: Tensor, grad: Tensor, leak: Tensor, v: Tensor, gamma: float,
                 surrogate: str, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """`neuron._backward_loop`: `saved` is u~ `[T, N]`, or with `steps` the constant current
    `[N]`; `grad` is dL/dspikes `[T, N]`. Returns (dL/dx, dL/dleak, dL/dv)."""
    saved, grad = saved.contiguous(), grad.contiguous()
    T, N = grad.shape
    gx, sums = torch.empty(N if steps else (T, N), dtype=saved.dtype), (ctypes.c_double * 2)()
    _call("lif_backward", _ptr(saved), _ptr(grad), T, N, int(bool(steps)), float(leak),
          float(v), float(gamma), *kernel_args(surrogate), _ptr(gx), sums)
    return (gx, torch.tensor(sums[0], dtype=saved.dtype), torch.tensor(sums[1], dtype=saved.dtype))


def avg_pool2d(x: Tensor, k: int, size: tuple[int, int] | None = None) -> Tensor:
    """`F.avg_pool2d(x, k, k)` for float32 or bfloat16 `[N, C, H, W]`, contiguous or
    channels-last (kept); with `size` (the input's H, W), x is the output's gradient and the
    result the input's."""
    n, c, h, w = x.shape
    cl = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if cl else torch.contiguous_format
    y = torch.empty((n, c, *size) if size else (n, c, h // k, w // k), dtype=x.dtype,
                    memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    _call("avg_pool2d", _ptr(x), _ptr(y), n if cl else n * c, *(size or (h, w)), c, k, int(cl),
          int(x.dtype == torch.bfloat16), int(size is not None))
    return y


def lif_pool_forward(x: Tensor, T: int, static: bool, leak: Tensor, v: Tensor,
                     keep: Tensor | None, scale: float, k: int, keep_u_tilde: bool,
                     count: bool = False) -> tuple[Tensor, Tensor | None, list[int] | None]:
    """LIF -> dropout -> k x k average pooling (stride k, floor) fused, NCHW float32, over `T`
    steps. `x`: the currents `[T*B, C, H, W]`, or if `static` one step's `[B, C, H, W]`;
    `keep`: bool `[B, C, H, W]` (dropout's kept neurons, worth `scale`) or None. Returns the
    pooled output `[T*B, C, H//k, W//k]`, if `keep_u_tilde` u~ `[T*B, C, H, W]` (else None)
    and, with `count`, the spikes fired (before dropout) at each step (else None)."""
    x = x.contiguous()
    n, c, h, w = x.shape
    B = n if static else n // T
    P = B * c
    out, fired = torch.empty((T * B, c, h // k, w // k), dtype=x.dtype), (ctypes.c_long * T)()
    u_tilde = torch.empty((T * B, c, h, w), dtype=x.dtype) if keep_u_tilde else None
    _call("lif_pool_forward", _ptr(x), 0 if static else P * h * w, T, P, h, w, k, float(leak),
          float(v), _ptr(keep), float(scale), _ptr(out), _ptr(u_tilde), fired if count else None)
    return out, u_tilde, list(fired) if count else None


def lif_pool_backward(saved: Tensor, grad: Tensor, T: int, static: bool, leak: Tensor,
                      v: Tensor, gamma: float, surrogate: str, keep: Tensor | None,
                      scale: float, k: int, g_count: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """BPTT of `lif_pool_forward`: `saved` is u~ `[T*B, C, H, W]`, or if `static` the current
    `[B, C, H, W]`; `grad` the pooled output's gradient; `g_count` the gradient of the spike
    count, added to each spike's. Returns (dL/dx, dL/dleak, dL/dv)."""
    saved, grad = saved.contiguous(), grad.contiguous()
    n, c, h, w = saved.shape
    B = n if static else n // T
    gx, sums = torch.empty_like(saved), (ctypes.c_double * 2)()
    _call("lif_pool_backward", _ptr(saved), _ptr(grad), T, B * c, h, w, k, int(static),
          float(leak), float(v), float(gamma), *kernel_args(surrogate), _ptr(keep), float(scale),
          float(g_count), _ptr(gx), sums)
    return (gx, torch.tensor(sums[0], dtype=saved.dtype), torch.tensor(sums[1], dtype=saved.dtype))


def keep_mask(n: int, seed: Tensor, thr: int) -> Tensor:
    """`dropout.keep_mask`'s flags for `n` elements as bool `[n]`."""
    out = torch.empty(n, dtype=torch.bool)
    _call("dropout", None, None, _ptr(out), n, 0, int(seed), thr, 0.0, 0)
    return out


def dropout(x: Tensor, seed: Tensor, thr: int, scale: float, relu: bool = False) -> Tensor:
    """`x * (keep_mask(x.shape, seed=seed) * scale)`, float32 or bfloat16, in one pass; with
    `relu`, `torch.relu(x)` in place of x."""
    x = x.contiguous()
    y = torch.empty_like(x)
    _call("dropout", _ptr(x), _ptr(y), None, x.numel(), int(x.dtype == torch.bfloat16), int(seed),
          thr, scale, int(relu))
    return y


def relu_dropout_backward(grad: Tensor, y: Tensor, scale: float) -> Tensor:
    """The gradient of `dropout(..., relu=True)` from its output `y`: `grad * scale` where
    `y > 0`, else 0 (float32 or bfloat16, one pass)."""
    grad, y = grad.contiguous(), y.contiguous()
    dx = torch.empty_like(grad)
    _call("relu_dropout_backward", _ptr(grad), _ptr(y), _ptr(dx), grad.numel(),
          int(grad.dtype == torch.bfloat16), scale)
    return dx
