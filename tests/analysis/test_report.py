import json
import os

from helpers import simulate_full_disk

from dietsnn.analysis.report import write_report
from dietsnn.errors import UserError


def test_report_states_how_far_leaks_and_thresholds_moved(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"dataset": "fashion-mnist", "arch": "vgg_small", "command_line": "dietsnn run --out x"}))
    layers = [{"name": "features.1", "leak_init": 1.0, "leak": 0.95, "threshold_init": 2.0,
               "threshold": 2.5, "spike_rate": 0.5},
              {"name": "features.5", "leak_init": 1.0, "leak": 0.6, "threshold_init": 1.0,
               "threshold": 0.9, "spike_rate": 0.2}]
    metrics = {"ann": {"test_accuracy": 0.92},
               "converted": {"test_accuracy": 0.9, "timesteps": 3},
               "snn": {"test_accuracy": 0.91, "timesteps": 3, "layers": layers}}
    text = write_report(tmp_path, metrics).read_text()
    assert "Dataset fashion-mnist, architecture vgg_small; command: `dietsnn run --out x`" in text
    assert ("moved the leaks by up to 0.400 (lowest: 0.600 in features.5) and the thresholds by "
            "up to +25.0% (features.1)") in text
    assert "| features.5 | 1.000 -> 0.600 (-40.0%) | 1.000 -> 0.900 (-10.0%) | 0.200 |" in text


def test_report_and_plots_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails midway (here: a full disk) keeps the previous report and plot whole
    and leaves no temporary file."""
    layers = [{"name": "features.1", "leak": 0.9, "threshold": 1.0, "spike_rate": 0.3}]
    metrics = {"ann": {"test_accuracy": 0.9}, "snn": {"test_accuracy": 0.9, "layers": layers}}
    write_report(tmp_path, metrics)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"report.md", "layers.png"} <= set(before)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~_umask() for p in tmp_path.iterdir())
    simulate_full_disk(monkeypatch)
    metrics["snn"]["test_accuracy"] = 0.1
    try:
        write_report(tmp_path, metrics)
    except UserError:
        pass  # the failure may surface or be reported as a note; either way nothing is torn
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
