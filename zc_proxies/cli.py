"""The ``zcbench`` command line.

Each subcommand lives in its own module under ``zc_proxies/commands/`` and
exposes ``add_parser(subparsers)``; the parser it adds sets ``func`` to a
function of the parsed arguments returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import guarded

# Modules under zc_proxies.commands, in the order their subcommands are listed.
COMMANDS = ["list", "data", "eval", "merge", "report", "naslib", "convert", "blockswap"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="zcbench", description="Zero-cost NAS proxies: score, evaluate, search.")
    parser.add_argument("--version", action="version", version=f"zcbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"zc_proxies.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zcbench`` console script."""
    args = build_parser().parse_args(argv)
    return guarded(f"zcbench {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
