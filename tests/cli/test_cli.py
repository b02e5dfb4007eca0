import json
import subprocess
import sys

import pytest
from helpers import needs_fmnist

from dietsnn.cli import main
from dietsnn.config import ConversionConfig


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "dietsnn", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.subprocess
def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("run", "train-ann", "convert", "train-snn", "evaluate"):
        assert cmd in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["run", "--timesteps", "0"], "--timesteps must be >= 1"),
    (["run", "--percentile", "120"], "--percentile must be in (1, 100]"),
    (["run", "--scale", "-1"], "--scale must be in (0, inf]"),
    (["run", "--arch", "nope"], "invalid choice"),
])
@pytest.mark.subprocess
def test_bad_options_exit_2_with_one_line(args, msg):
    r = run_cli(*args)
    assert r.returncode == 2
    assert msg in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_checkpoint_is_a_clean_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.subprocess
@needs_fmnist
def test_run_end_to_end_on_a_subset(tmp_path):
    out = tmp_path / "run"
    r = run_cli("run", "--limit-train", "2000", "--limit-test", "500", "--ann-epochs", "2",
                "--ann-batch-size", "32",
                "--snn-epochs", "1", "--calib-size", "128", "--calib-timesteps", "20",
                "--sweep-timesteps", "2,5", "--sweep-limit", "200", "--no-compile", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["ann"]["test_accuracy"] > 0.5
    assert m["converted"]["timesteps"] == ConversionConfig.timesteps
    snn = m["snn"]
    assert snn["timesteps"] == ConversionConfig.timesteps and len(snn["layers"]) == 4
    for layer in snn["layers"]:
        assert {"name", "leak", "threshold", "spike_rate"} <= set(layer)
        assert 0 < layer["leak"] <= 1 and layer["threshold"] > 0 and layer["spike_rate"] >= 0
    for f in ("config.json", "ann/model.safetensors", "converted/model.safetensors",
              "snn/model.safetensors", "snn/history.json"):
        assert (out / f).is_file(), f
    prof = m["profile"]  # time and peak memory per step, the steps' times adding up
    assert list(prof) == ["ann", "converted", "snn", "analysis"]
    assert all(p["seconds"] > 0 and p["peak_rss_mb"] > 50 for p in prof.values())
    assert [p["peak_rss_mb"] for p in prof.values()] == sorted(p["peak_rss_mb"]
                                                                 for p in prof.values())
    assert sum(p["seconds"] for p in prof.values()) == pytest.approx(m["seconds"], abs=0.5)
    report = (out / "report.md").read_text()  # names what was trained and how
    assert "| snn | " in report
    assert ("Dataset fashion-mnist, architecture vgg_small; command: `dietsnn run --limit-train "
            "2000 --limit-test 500") in report
    # evaluate reads the checkpoints back in a new process and reproduces the run's numbers
    for step in ("ann", "converted", "snn"):
        r = run_cli("evaluate", str(out / step), "--limit-test", "500", "--json")
        assert r.returncode == 0, r.stderr
        ev = json.loads(r.stdout)
        assert ev["test_accuracy"] == m[step]["test_accuracy"], step
        assert ev["spiking"] == (step != "ann")
    r = run_cli("evaluate", str(out), "--limit-test", "500", "--json")  # the run: its trained SNN
    assert json.loads(r.stdout)["test_accuracy"] == snn["test_accuracy"]
    assert [d["spike_rate"] for d in json.loads(r.stdout)["layers"]] == pytest.approx(
        [d["spike_rate"] for d in snn["layers"]], rel=1e-6)
    # a second run into the same folder refuses instead of overwriting
    r = run_cli("run", "--limit-train", "200", "--out", str(out))
    assert r.returncode == 2 and "--resume" in r.stderr
