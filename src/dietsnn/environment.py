"""The environment variables dietsnn reads, checked in one place.

`OMP_NUM_THREADS` is read by the OpenMP runtime when torch is imported; an invalid value is
ignored there after a warning on stderr. `screen_openmp()` runs before the first torch import
(from `dietsnn/__init__.py`): it takes an invalid value out of the environment (so the value is
ignored without the warning, as it would have been with it) and remembers it, so that the
command line can refuse it in one line. This module imports nothing from torch.

The other variables are read through `env_int`, which turns a malformed value into a
`UserError` naming the variable.
"""

from __future__ import annotations

import os
import re

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
