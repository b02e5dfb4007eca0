"""--engine on every command that runs a model; --no-compile as its deprecated alias; the
command runs inside the engine's block."""

import platform

import pytest

from dietsnn import runtime
from dietsnn.cli import build_parser
from dietsnn.functional import engine

RUNS_A_MODEL = ("run", "train-ann", "convert", "train-snn", "evaluate", "energy", "sweep",
                "ablation", "predict")


def _commands():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


@pytest.mark.parametrize("command", RUNS_A_MODEL)
def test_every_command_that_runs_a_model_takes_engine(command):
    sub = _commands()[command]
    engine_opt = next(a for a in sub._actions if "--engine" in a.option_strings)
    assert tuple(engine_opt.choices) == ("auto", "native", "eager", "compile")
    assert engine_opt.default == "auto"
    alias = next(a for a in sub._actions if "--no-compile" in a.option_strings)
    assert alias.dest == "engine" and alias.const == "eager" and "deprecated" in alias.help


def test_the_command_runs_inside_the_chosen_engine():
    """`main` runs each command inside `engine_scope(args)`: the engine and the settings."""
    from dietsnn.cli.options import engine_scope

    parser = build_parser()
    for argv, parsed, runs in ((["--engine", "compile"], "compile", "compile"),
                               (["--no-compile"], "eager", "eager"),
                               ([], "auto", engine.resolve("auto"))):
        args = parser.parse_args(["evaluate", "RUN", *argv])
        assert args.engine == parsed
        with engine_scope(args):
            assert engine.resolve() == runs
            assert runtime.is_tuned() == (platform.libc_ver()[0] == "glibc")
    assert engine.resolve() == engine.resolve("auto")  # left on return
