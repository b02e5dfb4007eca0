"""One error boundary: library ValueError/UserError, OSError on a named path and a broken pipe
become one line and exit code 2; other exceptions keep their traceback; --debug shows it."""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import one_line_error
from safetensors.torch import save as st_save

from dietsnn import ann_to_snn, build_ann
from dietsnn.checkpoint import load_model
from dietsnn.cli import main
from dietsnn.cli import presets as cli_presets
from dietsnn.errors import UserError


@pytest.fixture
def failing(monkeypatch):
    """`presets` replaced by a command that raises the given exception."""
    def use(exc):
        def cmd(args):
            raise exc
        monkeypatch.setattr(cli_presets, "cmd_presets", cmd)
    return use


def test_value_error_is_one_line(failing, capsys):
    failing(ValueError("timesteps must be >= 1, got 0"))
    one_line_error(capsys, ["presets"], "dietsnn presets: error: timesteps must be >= 1, got 0")


def test_os_error_on_a_path_is_one_line(failing, capsys):
    failing(PermissionError(13, "Permission denied", "runs/x/model.safetensors"))
    one_line_error(capsys, ["presets"], "error: runs/x/model.safetensors: Permission denied")


def test_a_bug_keeps_its_traceback_and_debug_shows_every_one(failing, capsys):
    failing(RuntimeError("a real bug"))
    with pytest.raises(RuntimeError):
        main(["presets"])
    failing(OSError("no path: a bug too"))
    with pytest.raises(OSError):
        main(["presets"])
    failing(UserError("a mistake"))
    with pytest.raises(UserError):
        main(["--debug", "presets"])


def test_broken_pipe_in_process(capsys, monkeypatch):
    class Closed:
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            raise ValueError("no file")

    monkeypatch.setattr(sys, "stdout", Closed())
    one_line_error(capsys, ["presets"], "dietsnn presets: error: output closed")


@pytest.mark.subprocess
def test_broken_pipe_of_a_real_pipe():
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written, like `| head` that exited
    try:
        p = subprocess.run([sys.executable, "-m", "dietsnn", "presets", "--json"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "broken pipe" in p.stderr, p.stderr


def _crafted(tmp_path, config=None, spiking=None):
    """A checkpoint of a real model whose metadata fields are replaced."""
    model = ann_to_snn(build_ann("vgg_small"), 2)
    cfg = {**model.config, **(config or {})}
    sp = {**model.spiking_config(), **(spiking or {})}
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(st_save(tensors, metadata={"config": json.dumps(cfg),
                                                "spiking": json.dumps(sp), "extra": "{}",
                                                "format": "dietsnn-1"}))
    return path


@pytest.mark.parametrize("config,spiking,match", [
    ({"num_classes": -1}, None, "config.num_classes = -1, expected an integer in [1, 1000000]"),
    ({"num_classes": 10 ** 12}, None, "config.num_classes = 1000000000000"),
    ({"num_classes": 10.0}, None, "config.num_classes = 10.0"),
    ({"num_classes": True}, None, "config.num_classes = True"),
    ({"arch": "vgg99"}, None, "config.arch = 'vgg99', expected one of"),
    ({"dropout": "0.2"}, None, "config.dropout = '0.2'"),
    ({"image_size": 0}, None, "config.image_size = 0"),
    ({"extra_field": 1}, None, "config.extra_field = 1, expected only the fields"),
    (None, {"timesteps": 5.5}, "spiking.timesteps = 5.5, expected an integer"),
    (None, {"timesteps": 0}, "spiking.timesteps = 0"),
    (None, {"encoding": "morse"}, "spiking.encoding = 'morse'"),
    (None, {"gamma": float("nan")}, "spiking.gamma = nan"),
    (None, {"surrogate": "x"}, "spiking.surrogate = 'x'"),
])
def test_checkpoint_metadata_is_validated_field_by_field(tmp_path, config, spiking, match):
    with pytest.raises(UserError, match="invalid dietsnn metadata") as e:
        load_model(_crafted(tmp_path, config, spiking))
    assert match in str(e.value)


def test_valid_metadata_loads(tmp_path):
    assert load_model(_crafted(tmp_path)).timesteps == 2


# -- the Python API checks its arguments as the command line does ------------------------------

import math  # noqa: E402

import torch  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

import dietsnn  # noqa: E402


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


BAD_TYPES = st.one_of(st.text(max_size=3), st.none(), st.booleans(), st.just([1]),
                      st.just(torch.ones(2)), st.complex_numbers(allow_nan=False))
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def _one_line(e: BaseException, name: str) -> None:
    msg = str(e)
    assert name in msg and "\n" not in msg, msg


# argument -> (a bad value strategy: wrong type or out of range), each refused by name
CONVERT_BAD = {
    "timesteps": st.one_of(BAD_TYPES, st.floats(), st.integers(max_value=0),
                           st.integers(min_value=100_001)),
    "leak": st.one_of(BAD_TYPES, NON_FINITE, st.floats(max_value=0), st.floats(min_value=1.0001)),
    "threshold": st.one_of(BAD_TYPES, NON_FINITE, st.floats(max_value=0)),
    "gamma": st.one_of(BAD_TYPES, NON_FINITE, st.floats(max_value=0)),
}


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_convert_refuses_every_bad_number_or_type(data):
    """convert(model, timesteps=2.5), timesteps=10**12, leak 1.5, threshold nan, ...: a
    TypeError (wrong type) or ValueError (out of range) naming the argument, never accepted."""
    name = data.draw(st.sampled_from(sorted(CONVERT_BAD)))
    value = data.draw(CONVERT_BAD[name])
    kw = {"timesteps": 2, name: value}
    for model in (_mlp(), dietsnn.build_ann("vgg_small")):  # traced and native paths
        try:
            dietsnn.convert(model, **kw)
        except (TypeError, ValueError) as e:
            _one_line(e, name)
        else:
            raise AssertionError(f"convert accepted {name}={value!r}")


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 100_000), leak=st.floats(1e-6, 1), thr=st.floats(1e-6, 1e6))
def test_convert_accepts_every_value_in_range(t, leak, thr):
    snn = dietsnn.convert(_mlp(), t, leak=leak, threshold=thr)
    assert snn.timesteps == t


def test_convert_and_save_model_name_what_to_pass(tmp_path):
    for bad in (42, "model.pt", None, torch.ones(3)):
        with pytest.raises(TypeError, match="convert takes a trained ANN \\(an nn.Module\\)"):
            dietsnn.convert(bad, 2)
    snn = dietsnn.convert(_mlp(), 2)
    with pytest.raises(TypeError, match=r"save_model takes \(model, path\)"):
        dietsnn.save_model(tmp_path / "a.safetensors", snn)
    with pytest.raises(TypeError, match=r"save_model takes \(model, path\)"):
        dietsnn.save_model(str(tmp_path / "a.safetensors"), snn)
    for plain in (_mlp(), nn.Linear(2, 2)):
        with pytest.raises(TypeError, match="convert a plain nn.Module first with "
                                            r"dietsnn.convert\(model, timesteps\)"):
            dietsnn.save_model(plain, tmp_path / "a.safetensors")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        dietsnn.save_model(snn, 3)
    assert not list(tmp_path.iterdir())
    dietsnn.save_model(snn, tmp_path / "a.safetensors")  # torch.save's order
    x = torch.randn(4, 1, 12)
    assert torch.equal(dietsnn.load_model(tmp_path / "a.safetensors")(x), snn.eval()(x))


CALIB_BAD = {
    "percentile": st.one_of(BAD_TYPES, NON_FINITE, st.floats(max_value=1.0),
                            st.floats(min_value=100.0001)),
    "scale": st.one_of(BAD_TYPES, NON_FINITE, st.floats(max_value=0)),
    "timesteps": st.one_of(BAD_TYPES, st.floats(), st.integers(max_value=0),
                           st.integers(min_value=100_001)),
    "limit": st.one_of(st.text(max_size=2), st.floats(), st.integers(max_value=0)),
}


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_calibrate_thresholds_refuses_every_bad_number_or_type(data):
    """percentile=0.997 (a fraction), scale=inf, ...: refused by name, thresholds untouched."""
    snn = dietsnn.convert(_mlp(), 2)
    name = data.draw(st.sampled_from(sorted(CALIB_BAD)))
    value = data.draw(CALIB_BAD[name])
    with pytest.raises((TypeError, ValueError)) as e:
        dietsnn.calibrate_thresholds(snn, torch.randn(8, 12), **{name: value})
    _one_line(e.value, name)
    assert [m.threshold.item() for _, m in dietsnn.layers.lif_layers(snn)] == [1.0]


def test_a_fraction_as_percentile_names_the_range_in_percent():
    snn = dietsnn.convert(_mlp(), 2)
    with pytest.raises(ValueError, match=r"percentile is in percent, in \(0, 100\].*got 0.997; "
                                         r"for the 99.7th percentile pass 99.7"):
        dietsnn.calibrate_thresholds(snn, torch.randn(8, 12), percentile=0.997)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), value=NON_FINITE, where=st.integers(0, 10**6))
def test_calibration_data_with_nan_or_inf_is_refused(n, value, where):
    """Non-finite inputs used to give every threshold 0.5 silently."""
    snn = dietsnn.convert(_mlp(), 2)
    x = torch.randn(4, 12)
    flat = x.view(-1)
    for k in range(n):
        flat[(where + 7 * k) % flat.numel()] = value
    with pytest.raises(ValueError, match="calibration data holds .* NaN or infinite values"):
        dietsnn.calibrate_thresholds(snn, x)
    with pytest.raises(TypeError, match="floating-point"):
        dietsnn.calibrate_thresholds(snn, torch.ones(4, 12, dtype=torch.long))


def test_calibration_takes_labelled_batches():
    """A labelled batch (x, y) and a DataLoader of (x, y) give the thresholds of x alone."""
    torch.manual_seed(1)
    x, y = torch.randn(16, 12), torch.randint(0, 3, (16,))
    ref = dietsnn.calibrate_thresholds(dietsnn.convert(_mlp(), 2), x, timesteps=4)
    for data in ((x, y), [x, y],
                 torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)):
        got = dietsnn.calibrate_thresholds(dietsnn.convert(_mlp(), 2), data, timesteps=4)
        assert got == pytest.approx(ref, rel=1e-6)
    two_batches = [x[:8], x[8:]]  # a list of two unlabelled batches: both used
    got = dietsnn.calibrate_thresholds(dietsnn.convert(_mlp(), 2), two_batches, timesteps=4)
    assert got == pytest.approx(ref, rel=1e-6)


@settings(max_examples=100, deadline=None)
@given(which=st.sampled_from(["leak", "threshold"]), data=st.data(),
       as_tensor=st.booleans())
def test_lif_refuses_a_leak_or_threshold_out_of_range(which, data, as_tensor):
    """lif(cur, 1.5, 0.5) and lif(cur, 0.9, -0.5): refused by name (Python numbers and 0-dim
    CPU tensors; a GPU tensor is not read back, to keep the step free of a sync)."""
    bad = data.draw(st.one_of(NON_FINITE, st.floats(max_value=0),
                              *([st.floats(min_value=1.0001)] if which == "leak" else [])))
    args = {"leak": 0.9, "threshold": 0.5, which: torch.tensor(bad) if as_tensor else bad}
    with pytest.raises(ValueError, match=f"{which} must be a finite number"):
        dietsnn.lif(torch.ones(3, 4), args["leak"], args["threshold"])
    with pytest.raises(TypeError, match=which):
        dietsnn.lif(torch.ones(3, 4), **{"leak": 0.9, "threshold": 0.5, which: "0.5"})


def test_lif_in_range_runs_as_before():
    cur = torch.tensor([[0.6], [0.6], [0.6]])
    assert dietsnn.lif(cur, 1.0, 1.0).view(-1).tolist() == [0.0, 1.0, 0.0]
    # u: 0.6, 0.3 + 0.6, 0.45 + 0.6 >= 1: a spike at the third step only
    assert dietsnn.lif(cur, torch.tensor(0.5), torch.tensor(1.0)).view(-1).tolist() == \
        [0.0, 0.0, 1.0]


def test_one_sample_without_a_batch_dimension_is_named():
    ann = dietsnn.build_ann("vgg_small")
    snn = dietsnn.convert(ann, 2)
    graph = dietsnn.convert(_mlp(), 2, input_dims=3)  # batches [B, 1, 12]
    for model, x, shape in ((ann, torch.zeros(1, 28, 28), "[B, 1, 28, 28]"),
                            (snn, torch.zeros(1, 28, 28), "[B, 1, 28, 28]"),
                            (graph, torch.zeros(1, 12), "[B, ...]")):
        with pytest.raises(ValueError, match=f"takes a batch of shape {re.escape(shape)}"
                                             r".*pass x.unsqueeze\(0\)"):
            model(x)
        model(x.unsqueeze(0))  # the batch of one runs
