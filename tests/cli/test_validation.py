"""The checks that run after parsing and before any work: every numeric option of every
subcommand, environment variables, option combinations. A value either passes or ends in exit
code 2 with exactly one line on stderr, never a traceback."""

import argparse
import json
import os
import subprocess
import sys

import pytest
from helpers import write_idx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dietsnn import ann_to_snn, build_ann, save_model
from dietsnn.checkpoint import read_model_file
from dietsnn.cli import build_parser, main
from dietsnn.errors import UserError


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    ann = build_ann("vgg_small")
    save_model(ann, d / "ann" / "model.safetensors")
    save_model(ann_to_snn(ann, 2), d / "snn" / "model.safetensors")
    return d


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    for a in build_parser()._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    raise AssertionError("no subcommands")


def _typed_options(p: argparse.ArgumentParser) -> list[str]:
    """The options that take a value converted by a type: every numeric option."""
    return sorted(max(a.option_strings, key=len) for a in p._actions
                  if a.option_strings and a.type is not None)


COMMANDS = {name: _typed_options(p) for name, p in _subcommands().items()}
POSITIONALS = {"convert": ["ann"], "ablation": ["ann"], "train-snn": ["snn"], "evaluate": ["snn"],
               "energy": ["snn"], "sweep": ["snn"], "predict": ["snn", "img.png"],
               "export": ["snn", "OUT"]}

VALUES = st.one_of(
    st.sampled_from(["-1", "0", "1", "2", "3", "1e400", "-1e400", "nan", "NaN", "inf", "-inf",
                     "1,2", "5,x", ",", "", " ", "abc", "0.5", "1e-300", "1_000", str(10**9),
                     str(10**30), "0x10", "1.0", "100000", "100001"]),
    st.integers(-10**40, 10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-3, 10**6), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
    st.text(max_size=6),
)


def test_the_options_are_discovered():
    assert {"run", "train-ann", "convert", "train-snn", "evaluate", "sweep", "ablation"} <= set(
        COMMANDS)
    assert {"--timesteps", "--calib-timesteps", "--snn-batch-size", "--val-size", "--seed",
            "--ann-weight-decay"} <= set(COMMANDS["run"])
    assert "--e-mac" in COMMANDS["energy"] and "--seeds" in COMMANDS["ablation"]


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_numeric_option_passes_or_is_one_line(models, tmp_path_factory, capsys, data):
    command = data.draw(st.sampled_from(sorted(c for c, opts in COMMANDS.items() if opts)))
    option = data.draw(st.sampled_from(COMMANDS[command]))
    value = data.draw(VALUES)
    pos = [str(models / p) if p in ("ann", "snn") else str(models / "none" / p)
           for p in POSITIONALS.get(command, [])]
    has_out = "--out" in _subcommands()[command].format_usage()
    out = ["--out", str(models / "none" / "out")] if has_out else []
    capsys.readouterr()
    try:
        code = main([command, *pos, *out, f"{option}={value}"], validate_only=True)
    except SystemExit as e:  # the parser's own refusal
        code = e.code
    captured = capsys.readouterr()
    assert code in (0, 2), (command, option, value, code)
    assert "Traceback" not in captured.err and captured.out == ""
    if code == 2:
        assert captured.err.count("\n") == 1 and captured.err.startswith("dietsnn"), captured.err
    else:
        assert captured.err == ""
    assert not (models / "none").exists()  # validation writes nothing


def _integer_options() -> list[tuple[str, str]]:
    """(command, option) for every option whose value is an integer or a list of them."""
    found = []
    for name, p in _subcommands().items():
        for a in p._actions:
            if not a.option_strings or a.type is None:
                continue
            try:
                v = a.type("1")
            except (argparse.ArgumentTypeError, ValueError):
                continue
            if isinstance(v, int) or (isinstance(v, list) and v and isinstance(v[0], int)):
                found.append((name, max(a.option_strings, key=len)))
    return found


def test_every_integer_option_has_an_upper_bound(models, capsys):
    """--epochs 99999999999999999999 and the like: every integer option of every command
    refuses a huge value (and one just above its bound) in one line, before any work."""
    options = _integer_options()
    assert ("train-ann", "--epochs") in options and ("run", "--sweep-limit") in options
    assert len(options) > 40
    for command, option in options:
        pos = [str(models / p) if p in ("ann", "snn") else str(models / "none" / p)
               for p in POSITIONALS.get(command, [])]
        for value in ("99999999999999999999", str(2**63), str(10**400)):
            capsys.readouterr()
            with pytest.raises(SystemExit) as e:
                main([command, *pos, f"{option}={value}"], validate_only=True)
            err = capsys.readouterr().err
            assert e.value.code == 2 and err.count("\n") == 1, (command, option, err)
            assert f"{option} must be" in err and "<=" in err, (command, option, err)
    assert not (models / "none").exists()


@pytest.mark.parametrize("env,match", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not an integer"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not"),
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "RANK=5 must be <"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 must be >= 0"),
    ({"MASTER_PORT": "99999"}, "MASTER_PORT=99999 is not a port"),
    ({"DIETSNN_WORKERS": "x"}, None),  # read by the ImageNet loader only, see below
])
def test_bad_launch_variables_are_one_line(monkeypatch, capsys, env, match):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if match is None:
        from dietsnn.data.imagenet import default_workers
        with pytest.raises(UserError, match="DIETSNN_WORKERS='x' is not an integer"):
            default_workers()
        return
    assert main(["presets"]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


@pytest.mark.subprocess
def test_an_invalid_omp_num_threads_is_one_line():
    env = dict(os.environ, OMP_NUM_THREADS="x")
    r = subprocess.run([sys.executable, "-m", "dietsnn", "presets"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("dietsnn presets: error: environment variable OMP_NUM_THREADS='x' is not "
                        "a positive thread count; unset it or set it to e.g. OMP_NUM_THREADS=4\n")


def test_debug_after_the_command_shows_the_traceback(capsys):
    with pytest.raises(UserError, match="no such checkpoint"):
        main(["evaluate", "no-such-run", "--debug"])
    assert main(["evaluate", "no-such-run"]) == 2


@pytest.mark.parametrize("argv,match", [
    (["--val-size", "50"], "--val-size 50 leaves no training images: the training set has 50"),
    (["--val-size", "-1"], "--val-size must be >= 0"),
    (["--limit-train", "1"], "--val-size 5000 leaves no training images: the training set has 1; "
                             "use 0 (no validation)"),
])
def test_val_size_must_leave_a_training_image(tmp_path, capsys, argv, match):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=50, n_test=10)
    try:
        code = main(["train-ann", "--data-dir", str(tmp_path / "data"), "--out",
                     str(tmp_path / "o"), "--quiet", *argv])
    except SystemExit as e:  # the parser's refusal
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_val_size_zero_keeps_the_last_epoch(tmp_path, capsys):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=10)
    out = tmp_path / "o"
    assert main(["train-ann", "--data-dir", str(tmp_path / "data"), "--out", str(out),
                 "--val-size", "0", "--epochs", "2", "--batch-size", "20", "--threads", "1",
                 "--limit-train", "30"]) == 0
    log = capsys.readouterr().out
    assert "no validation split (--val-size 0)" in log and "the last epoch's" in log
    assert json.loads(read_model_file(out / "model.safetensors")[1]["extra"]) == {"epoch": 2}
    history = json.loads((out / "history.json").read_text())
    assert [h["val_accuracy"] for h in history] == [None, None]
    assert json.loads((out / "metrics.json").read_text())["ann"]["val_accuracy"] is None
