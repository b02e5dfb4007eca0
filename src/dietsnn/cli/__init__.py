"""The `dietsnn` command line. One module per group of subcommands (`train`, `analysis`,
`deploy`, `presets`), option groups and validators in `options`; every default comes from
`dietsnn.config`. `main` turns every user mistake into one line on stderr and exit code 2; training that
diverged (`TrainingDiverged`) exits with code 3."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .. import __version__, distributed, logs
from ..errors import UserError
from . import analysis, deploy, presets, train
from .options import Parser, console_logging, engine_scope
from .validate import validate

COMMANDS: dict = {}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="dietsnn",
        description="DIET-SNN: train an ANN, convert it to a spiking network with calibrated "
                    "thresholds, then train the SNN's weights, leaks and thresholds with BPTT.",
        epilog="exit codes: 0 success, 2 a mistake to fix (one line on stderr), 3 training "
               "diverged (the last good checkpoint is kept and named), 130 interrupted")
    p.add_argument("--version", action="version", version=f"dietsnn {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of any error (for reporting a bug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for group in (train, analysis, deploy, presets):  # presets last: it adds --preset
        COMMANDS.update(group.add_commands(sub))
    for command in sub.choices.values():  # --debug after the command too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of any error (for reporting a bug)")
    return p


def _stdout_closed() -> None:
    """After a broken pipe: send further output nowhere, so exiting prints no second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None, validate_only: bool = False) -> int:
    """Run one command. The error boundary: a UserError or ValueError (a library function's
    message), an OSError on a named path and a broken pipe become one line on stderr and exit
    code 2 (TrainingDiverged: 3); anything else is a bug and keeps its traceback, as does
    every error under --debug. An option mistake exits (SystemExit 2) with one line from the
    parser. `validate_only`: parse and run every check that precedes work
    (`validate.validate`), then return 0 without running the command."""
    raw = sys.argv[1:] if argv is None else argv
    name = "dietsnn"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args = presets.apply(parser, argv, args)  # --preset: defaults that options override
        args.command_line = shlex.join(["dietsnn", *raw])
        name = f"dietsnn {args.command}"
        validate(args)
        if validate_only:
            return 0
        distributed.setup_args(args)  # under torchrun: process group, this rank's device
        try:
            with engine_scope(args), console_logging(args):
                logs.debug(f"command line: {args.command_line}")
                COMMANDS[args.command](args)
        finally:
            distributed.cleanup()
    except BrokenPipeError:
        _stdout_closed()
        print(f"{name}: error: output closed before it was complete (broken pipe)",
              file=sys.stderr)
        return 2
    except (UserError, ValueError, OSError) as e:
        if "--debug" in raw or (isinstance(e, OSError) and e.filename is None):
            raise
        code = e.exit_code if isinstance(e, UserError) else 2  # TrainingDiverged: 3
        msg = f"{e.filename}: {e.strerror or e}" if isinstance(e, OSError) else str(e)
        print(f"{name}: error: {' '.join(msg.split())}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"{name}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
