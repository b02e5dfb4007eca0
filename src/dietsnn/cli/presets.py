"""`--preset NAME` on the training commands and `dietsnn presets`."""

from __future__ import annotations

import argparse
import json

from ..presets import COMMANDS, PRESETS, preset_defaults, table


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


def apply(parser: argparse.ArgumentParser, argv: list[str] | None,
          args: argparse.Namespace) -> argparse.Namespace:
    """Parse again with the chosen preset as defaults, so explicit options keep precedence."""
    name = getattr(args, "preset", None)
    if not name:
        return args
    sub = _subparser(parser, args.command)
    dests = {a.dest for a in sub._actions}
    sub.set_defaults(**{k: v for k, v in preset_defaults(name, args.command).items() if k in dests})
    return parser.parse_args(argv)


def add_commands(sub) -> dict:
    """CLI extension hook: the `presets` command, and `--preset` on the training commands."""
    for cmd in COMMANDS:
        if cmd in sub.choices:
            sub.choices[cmd].add_argument(
                "--preset", choices=sorted(PRESETS), default=None,
                help="a recipe's defaults (see `dietsnn presets`); explicit options override "
                     "(default: none)")
    p = sub.add_parser("presets", help="list the --preset recipes (CIFAR-10/100, ImageNet, Fashion-MNIST)")
    p.add_argument("--json", action="store_true", help="print the presets as JSON")
    return {"presets": cmd_presets}


def cmd_presets(args) -> dict:
    print(json.dumps(PRESETS, indent=2) if args.json else table())
    return PRESETS
