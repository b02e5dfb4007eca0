"""The former units (biases and residual gains from the lowered thresholds, as the library does)
with one change: the output gain from the calibrated thresholds (the product along the path
divided by scale^(LIFs on it)). `convert ANN_DIR OUT_DIR SCALE`: the fmnist-best conversion with
it, saved for `dietsnn train-snn`; `example`: the flow of example_diet.py with it."""
import runpy
import sys
from pathlib import Path

import torch
from torch import fx

from dietsnn.conversion import calibrate as cal_mod
from dietsnn.layers import LIF

_real = cal_mod.apply_scales
_scale = {"s": 1.0}


def _lifs_to(gm, node) -> int:
    n, k = node, 0
    while n is not None and n.op != "placeholder":
        if n.op == "call_module" and isinstance(gm.get_submodule(n.target), LIF):
            k += 1
        n = n.all_input_nodes[0] if n.all_input_nodes else None
    return k


def apply_scales(snn):
    out = _real(snn)
    if snn.rescale:
        gm = snn.net
        node = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        if isinstance(node, fx.Node):
            snn.output_gain.div_(_scale["s"] ** _lifs_to(gm, node))
    return out


def patch():
    """calibrate_graph and choose_scale call apply_scales with the thresholds they set; the
    factor over the calibrated thresholds is recovered from the first LIF's recorded value."""
    import dietsnn.conversion as conv

    real_finish = cal_mod.cal.finish

    def finish(units, scale):
        _scale["s"] = scale
        return real_finish(units, scale)

    cal_mod.cal.finish = finish
    cal_mod.apply_scales = apply_scales
    conv.apply_scales = apply_scales
    real_choose = conv.choose_scale

    def choose(snn, x, y, *a, **k):  # each use(s) sets thresholds s * raw: track s
        import dietsnn.conversion as c2
        orig = c2.apply_scales

        def track(m):
            from dietsnn.layers import lif_layers
            first = lif_layers(m)[0][1].threshold.item()
            _scale["s"] = first / raw0
            return apply_scales(m)
        from dietsnn.layers import lif_layers
        raw0 = lif_layers(snn)[0][1].threshold.item()
        c2.apply_scales = track
        try:
            return real_choose(snn, x, y, *a, **k)
        finally:
            c2.apply_scales = orig
    conv.choose_scale = choose


patch()
if sys.argv[1] == "convert":
    from dataclasses import replace

    from dietsnn import pipeline
    from dietsnn.config import ConversionConfig
    from dietsnn.data import load
    from dietsnn.presets import PRESETS
    p = PRESETS["fmnist-best"]
    torch.set_num_threads(2)
    ctx = pipeline.Context(load("fashion-mnist", val_size=p["val_size"]), progress=False)
    opts = replace(ConversionConfig(), timesteps=p["timesteps"], scale=float(sys.argv[4]))
    Path(sys.argv[3]).mkdir(parents=True, exist_ok=True)
    m = pipeline.convert(Path(sys.argv[2]) / "model.safetensors", opts, ctx, Path(sys.argv[3]))
    print("converted", m["test_accuracy"])
else:
    runpy.run_path(str(Path(__file__).with_name("example_diet.py")), run_name="__main__")
