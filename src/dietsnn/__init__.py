"""dietsnn: DIET-SNN (Rathi & Roy, IEEE TNNLS) - low-latency spiking networks by hybrid training,
direct input encoding and learned per-layer leak and threshold."""

__version__ = "0.1.0"

from .calibration import calibrate_thresholds  # noqa: E402
from .checkpoint import load_model, save_model  # noqa: E402
from .functional import lif  # noqa: E402
from .models import ARCHS, Network, build_ann  # noqa: E402
from .modules import LIF, Dropout  # noqa: E402
from .snn import ann_to_snn  # noqa: E402

__all__ = ["ARCHS", "LIF", "Dropout", "Network", "ann_to_snn", "build_ann",
           "calibrate_thresholds", "lif", "load_model", "save_model", "__version__"]
