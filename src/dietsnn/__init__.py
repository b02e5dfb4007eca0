"""dietsnn: DIET-SNN (Rathi & Roy, IEEE TNNLS) - low-latency spiking networks by hybrid training,
direct input encoding and learned per-layer leak and threshold."""

__version__ = "0.1.0"

from . import environment  # noqa: E402  (before torch: see environment.screen_openmp)

environment.screen_openmp()

from .checkpoint import load_model, save_model  # noqa: E402
from .config import ConversionConfig, TrainConfig  # noqa: E402
from .conversion import calibrate_thresholds, convert  # noqa: E402
from .functional import lif  # noqa: E402
from .layers import LIF, Dropout, Sequential, constrain_  # noqa: E402
from .models import ARCHS, Network, build_ann  # noqa: E402
from .monitor import SpikeMonitor  # noqa: E402
from .nir_import import from_nir  # noqa: E402
from .runtime import use_engine  # noqa: E402

ann_to_snn = convert  # the earlier name of `convert`, kept for existing code

__all__ = ["ARCHS", "LIF", "ConversionConfig", "Dropout", "Network", "Sequential", "SpikeMonitor",
           "TrainConfig", "ann_to_snn", "build_ann", "calibrate_thresholds", "constrain_", "convert",
           "from_nir", "lif", "load_model", "save_model", "use_engine", "__version__"]
