import json
import subprocess
import sys
import time

import pytest
from conftest import needs_fmnist

from dietsnn.cli import main


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dietsnn", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("run", "train-ann", "convert", "train-snn", "evaluate"):
        assert cmd in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["run", "--timesteps", "0"], "--timesteps must be >= 1"),
    (["run", "--percentile", "120"], "--percentile must be in (0, 100]"),
    (["run", "--scale", "-1"], "--scale must be in (0, inf]"),
    (["run", "--arch", "nope"], "invalid choice"),
])
def test_bad_options_exit_2_with_one_line(args, msg):
    r = run_cli(*args)
    assert r.returncode == 2
    assert msg in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_checkpoint_is_a_clean_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "Traceback" not in err


@needs_fmnist
def test_run_end_to_end_on_a_subset(tmp_path):
    out = tmp_path / "run"
    t0 = time.time()
    r = run_cli("run", "--limit-train", "2000", "--limit-test", "500", "--ann-epochs", "2",
                "--ann-batch-size", "32",
                "--snn-epochs", "1", "--calib-size", "128", "--calib-timesteps", "20",
                "--sweep-timesteps", "2,5", "--sweep-limit", "200", "--no-compile", "--out", str(out))
    elapsed = time.time() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert elapsed < 180
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["ann"]["test_accuracy"] <= 1.0 and m["ann"]["test_accuracy"] > 0.5
    assert m["converted"]["timesteps"] == 5 and 0.0 <= m["converted"]["test_accuracy"] <= 1.0
    snn = m["snn"]
    assert snn["timesteps"] == 5 and 0.0 <= snn["test_accuracy"] <= 1.0
    assert len(snn["layers"]) == 4
    for layer in snn["layers"]:
        assert {"name", "leak", "threshold", "spike_rate"} <= set(layer)
        assert 0 < layer["leak"] <= 1 and layer["threshold"] > 0 and layer["spike_rate"] >= 0
    for f in ("config.json", "ann/model.safetensors", "converted/model.safetensors",
              "snn/model.safetensors", "snn/history.json"):
        assert (out / f).is_file(), f
    # evaluate reads the run directory back (the trained SNN)
    r = run_cli("evaluate", str(out), "--limit-test", "200", "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["spiking"] and ev["timesteps"] == 5
    # a second run into the same folder refuses instead of overwriting
    r = run_cli("run", "--limit-train", "200", "--out", str(out))
    assert r.returncode == 2 and "--resume" in r.stderr
