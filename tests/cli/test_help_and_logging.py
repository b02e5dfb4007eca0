"""Every option's --help names its default, and the command line's log lines follow --quiet and
-v/--verbose through the "dietsnn" logger."""

import argparse
import json
import logging

import pytest
from helpers import write_idx

import dietsnn
from dietsnn import logs
from dietsnn.cli import build_parser, main


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_shows_its_default():
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
             argparse._VersionAction)
    missing = []
    for name, p in subcommands().items():
        for a in p._actions:
            if not a.option_strings or isinstance(a, flags):
                continue
            text = " ".join(p._get_formatter()._format_action(a).split())  # as --help shows it
            if "default" not in text:
                missing.append(f"{name} {a.option_strings[0]}")
    assert not missing, missing


def test_flags_say_what_they_do():
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction)
    bare = [f"{name} {a.option_strings[0]}" for name, p in subcommands().items()
            for a in p._actions if isinstance(a, flags) and not a.help]
    assert not bare, bare


@pytest.fixture
def data(tmp_path):
    return write_idx(tmp_path / "data", n_train=40, n_test=10)


def _train(tmp_path, data, *extra):
    return main(["train-ann", "--data-dir", str(data), "--val-size", "10", "--epochs", "1",
                 "--threads", "1", "--out", str(tmp_path / "out"), "--overwrite", *extra])


def test_cli_log_lines_follow_quiet_and_verbose(tmp_path, data, capsys):
    assert _train(tmp_path, data) == 0
    out = capsys.readouterr().out
    assert "loading fashion-mnist" in out and "ANN test accuracy" in out
    assert "command line:" not in out  # DEBUG
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())  # report.md quotes it
    assert cfg["command_line"].startswith("dietsnn train-ann --data-dir ")
    assert (cfg["dataset"], cfg["arch"]) == ("fashion-mnist", "vgg_small")
    assert _train(tmp_path, data, "-v") == 0
    assert "command line: dietsnn train-ann" in capsys.readouterr().out
    assert _train(tmp_path, data, "--quiet") == 0
    assert capsys.readouterr().out == ""
    # the command line leaves the logger as it found it
    assert logs.logger.level == logging.NOTSET and logs.logger.propagate


def test_library_logs_through_the_dietsnn_logger(tmp_path, data, caplog):
    from dietsnn.config import TrainConfig
    from dietsnn.data import load

    splits = load("fashion-mnist", data, val_size=10, seed=0)
    with caplog.at_level(logging.INFO, logger="dietsnn"):
        dietsnn.training.fit(dietsnn.build_ann("vgg_small"), splits,
                             TrainConfig(epochs=1, batch_size=16), tmp_path / "ann", progress=False)
    assert any(r.name == "dietsnn" and "epoch 1/1" in r.getMessage() for r in caplog.records)
