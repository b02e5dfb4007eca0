"""dietsnn: DIET-SNN (Rathi & Roy, IEEE TNNLS) - low-latency spiking networks by hybrid training,
direct input encoding and learned per-layer leak and threshold.

The public API below is imported on first use: `import dietsnn` alone loads no torch, so the
command line can set up its process before torch starts (`dietsnn.__main__`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from . import environment  # noqa: E402  (before torch: see environment.screen_openmp)

environment.screen_openmp()

_API = {  # name -> the module that defines it
    "load_model": "checkpoint", "save_model": "checkpoint", "ConversionConfig": "config",
    "TrainConfig": "config", "calibrate_thresholds": "conversion", "convert": "conversion",
    "lif": "functional", "LIF": "layers", "Dropout": "layers", "Sequential": "layers",
    "constrain_": "layers", "ARCHS": "models", "Network": "models", "build_ann": "models",
    "SpikeMonitor": "monitor", "from_nir": "nir_import", "use_engine": "runtime",
}
_ALIASES = {"ann_to_snn": "convert"}  # the earlier name of `convert`, kept for existing code


def __getattr__(name: str) -> object:
    target = _ALIASES.get(name, name)
    if target in _API:
        value = getattr(importlib.import_module(f".{_API[target]}", __name__), target)
    else:  # a submodule, as `import dietsnn; dietsnn.pipeline` found it when all were imported
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # the same names for type checkers and linters (tests/test_package.py keeps
    # them, `_API` and `__all__` equal)
    from .checkpoint import load_model, save_model
    from .config import ConversionConfig, TrainConfig
    from .conversion import calibrate_thresholds, convert
    from .functional import lif
    from .layers import LIF, Dropout, Sequential, constrain_
    from .models import ARCHS, Network, build_ann
    from .monitor import SpikeMonitor
    from .nir_import import from_nir
    from .runtime import use_engine

    ann_to_snn = convert

__all__ = ["ARCHS", "LIF", "ConversionConfig", "Dropout", "Network", "Sequential", "SpikeMonitor",
           "TrainConfig", "ann_to_snn", "build_ann", "calibrate_thresholds", "constrain_", "convert",
           "from_nir", "lif", "load_model", "save_model", "use_engine", "__version__"]
