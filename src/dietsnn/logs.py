"""The "dietsnn" logger. The library reports progress at INFO (epochs, accuracies, calibration),
details at DEBUG and problems it works around at WARNING, and attaches no handler of its own
(a NullHandler): the application decides where the lines go, e.g.
`logging.basicConfig(level=logging.INFO)`. The command line sends them to stdout: INFO and
above by default, WARNING and above with `--quiet`, DEBUG too with `-v/--verbose`.

Functions that take a `log` callable (`training.fit`, `analysis.Ablation`, ...) default to
`info` (or `warning`) below; any callable taking one string, `print` included, still works."""

from __future__ import annotations

import logging

logger = logging.getLogger("dietsnn")
logger.addHandler(logging.NullHandler())


def info(message: str) -> None:
    """Log `message` at INFO on the "dietsnn" logger (the default `log` callable)."""
    logger.info(message)


def warning(message: str) -> None:
    """Log `message` at WARNING on the "dietsnn" logger."""
    logger.warning(message)


def debug(message: str) -> None:
    """Log `message` at DEBUG on the "dietsnn" logger."""
    logger.debug(message)
