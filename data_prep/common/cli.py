"""Subcommand dispatch shared by ``python -m data_prep`` and ``python -m pretrain``.

Each subcommand lives in its own module providing ``add_arguments(parser)`` and ``run_cli(args) -> int``;
modules are imported only when chosen, so ``--help`` is fast and one stage's heavy dependencies (torch,
DeepSpeed) are never imported by another. ``InputError`` becomes one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from data_prep.common.errors import InputError


def dispatch(prog: str, subcommands: dict[str, tuple[str, str]], argv: list[str], description: str = "") -> int:
    """Run ``argv[0]`` (a key of ``subcommands``: name -> (module, help)) with the rest of ``argv``."""
    if not argv or argv[0] not in subcommands:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
        for name, (_, help_text) in subcommands.items():
            sub.add_parser(name, help=help_text)
        parser.parse_args(argv)  # prints help or the "invalid choice" error and exits
        return 2
    name = argv[0]
    module_name, help_text = subcommands[name]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run_cli(args) or 0)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
