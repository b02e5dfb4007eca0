"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2;
and the checks of the Python API's arguments."""

from __future__ import annotations

import math
import numbers
from typing import Any


class UserError(Exception):
    """A mistake in input, options or files; the message names the problem and the fix."""

    exit_code = 2


class TrainingDiverged(UserError):
    """Training stopped on a non-finite loss or parameters, or a loss far above chance; the
    message names the step and the last good checkpoint. The CLI exits with code 3."""

    exit_code = 3


# -- the Python API's argument checks: a TypeError for a wrong type, a ValueError for a value out
# of range, each naming the argument, its range and the value given (the CLI's checks agree)


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    if hi == math.inf:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_int(name: str, v: Any, lo: int, hi: int) -> int:
    """`v` as an int if it is an integer (not a bool) in [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer in [{lo}, {hi}], got {type(v).__name__} "
                        f"{v!r}")
    if not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {v}")
    return int(v)


def check_number(name: str, v: Any, lo: float = -math.inf, hi: float = math.inf,
                 lo_open: bool = True, hi_open: bool = False) -> float:
    """`v` as a float if it is a finite real number (not a bool) in the interval."""
    rule = "a finite number" + (f" {_interval(lo, hi, lo_open, hi_open)}" if lo > -math.inf
                                else "")
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be {rule}, got {type(v).__name__} {v!r}")
    f = float(v)
    ok = math.isfinite(f) and (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {v}")
    return f


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is damaged, not dietsnn's or outside its schema: a ValueError for
    Python callers of `dietsnn.load_model`, exit 2 in the CLI."""
