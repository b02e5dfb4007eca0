import json

from dietsnn.analysis.report import write_report


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
