"""The environment variables dietsnn reads, checked in one place.

`OMP_NUM_THREADS` is read by the OpenMP runtime when torch is imported; an invalid value is
ignored there after a warning on stderr. `screen_openmp()` runs before the first torch import
(from `dietsnn/__init__.py`): it takes an invalid value out of the environment (so the value is
ignored without the warning, as it would have been with it) and remembers it, so that the
command line can refuse it in one line. This module imports nothing from torch.

The other variables are read through `env_int`, which turns a malformed value into a
`UserError` naming the variable.

One variable is set: the command line runs with glibc's per-thread cache of freed small blocks
(tcache) off (`MALLOC_TUNABLES`, `tuned_environment`). The cache keeps up to seven freed blocks
of each small size per thread, and to the rest of malloc they are still in use: lying between
the freed buffers of tensors, they keep those from merging, so that a larger buffer finds no
hole and the heap grows (docs/BENCHMARKS.md measures the peak memory with and without it).
glibc reads the setting only when a process starts, so the command starts itself once more
with it (`dietsnn.__main__`), marked by `DIETSNN_RELAUNCHED` so that it never does so twice;
a `GLIBC_TUNABLES` that sets `glibc.malloc.tcache_count` itself is left as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .errors import UserError

# a positive thread count, or a comma-separated list of them (nested parallelism)
_OMP_THREADS = re.compile(r"^\s*0*[1-9]\d*\s*(,\s*0*[1-9]\d*\s*)*$")

# (name, value) of variables taken out of the environment because they were invalid
SCREENED: list[tuple[str, str]] = []


def screen_openmp() -> None:
    """Take an invalid OMP_NUM_THREADS out of the environment and remember it in `SCREENED`."""
    v = os.environ.get("OMP_NUM_THREADS")
    if v is not None and not _OMP_THREADS.match(v):
        SCREENED.append(("OMP_NUM_THREADS", v))
        del os.environ["OMP_NUM_THREADS"]


def check_screened() -> None:
    """Raise a UserError for the first invalid variable `screen_openmp` found."""
    for name, v in SCREENED:
        raise UserError(f"environment variable {name}={v!r} is not a positive thread count; "
                        f"unset it or set it to e.g. {name}=4")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """The integer value of environment variable `name` (`default` if unset or empty); a
    UserError names a value that is not an integer >= `minimum`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer; unset it or "
                        "fix it") from None
    if v < minimum:
        raise UserError(f"environment variable {name}={v} must be >= {minimum}; unset it or fix it")
    return v


MALLOC_TUNABLES = "glibc.malloc.tcache_count=0"
RELAUNCHED = "DIETSNN_RELAUNCHED"


def tuned_environment(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """`environ` (default: this process's as it started, the variables `screen_openmp` took
    out included, for the new process to check) with `MALLOC_TUNABLES` added to
    `GLIBC_TUNABLES`: the environment to start the command line in. None where nothing is to
    change: the C library is not glibc, `GLIBC_TUNABLES` already sets the cache (ours or the
    user's), or the command was started with it once (`RELAUNCHED`)."""
    environ = {**os.environ, **dict(SCREENED)} if environ is None else environ
    tunables = environ.get("GLIBC_TUNABLES", "")
    name = MALLOC_TUNABLES.partition("=")[0]
    # RELAUNCHED: started once already (where a program runs with raised privileges, glibc
    # drops the variable from the new process's environment, which would start it again)
    if name in tunables or RELAUNCHED in environ or not _is_glibc():
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{MALLOC_TUNABLES}".lstrip(":"),
            RELAUNCHED: "1"}


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a GNU system
        return False
