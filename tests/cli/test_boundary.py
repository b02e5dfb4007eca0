"""One error boundary: library ValueError/UserError, OSError on a named path and a broken pipe
become one line and exit code 2; other exceptions keep their traceback; --debug shows it."""

import json
import os
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
