"""The `dietsnn` command line. One module per group of subcommands (`train`, `analysis`,
`deploy`, `presets`), option groups and validators in `options`; every default comes from
`dietsnn.config`. `main` turns every user mistake into one line on stderr and exit code 2; training that
diverged (`TrainingDiverged`) exits with code 3."""

from __future__ import annotations

import argparse
import shlex
import sys

from .. import __version__, distributed
from ..errors import UserError
from . import analysis, deploy, presets, train
from .options import Parser, backend_scope

COMMANDS: dict = {}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="dietsnn",
        description="DIET-SNN: train an ANN, convert it to a spiking network with calibrated "
                    "thresholds, then train the SNN's weights, leaks and thresholds with BPTT.",
        epilog="exit codes: 0 success, 2 a mistake to fix (one line on stderr), 3 training "
               "diverged (the last good checkpoint is kept and named), 130 interrupted")
    p.add_argument("--version", action="version", version=f"dietsnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for group in (train, analysis, deploy, presets):  # presets last: it adds --preset
        COMMANDS.update(group.add_commands(sub))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args = presets.apply(parser, argv, args)  # --preset: defaults that explicit options override
    args.command_line = shlex.join(["dietsnn", *(sys.argv[1:] if argv is None else argv)])
    distributed.setup_args(args)  # under torchrun: process group, this rank's device
    try:
        with backend_scope(args):
            COMMANDS[args.command](args)
    except UserError as e:  # TrainingDiverged: exit code 3
        print(f"dietsnn {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"dietsnn {args.command}: interrupted; rerun with --resume to continue",
              file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
