"""What several subcommands' parsers and printers share (no run logic lives here)."""

from __future__ import annotations

import argparse
import sys


def add_runner_options(p: argparse.ArgumentParser) -> None:
    """The options of the engine's runner and store, shared by every command that runs many tasks."""
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default: 1; the same count keeps scores bit-identical "
                        "whatever --workers is)")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="run only shard i of N (default: from SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the tasks on this Dask scheduler (needs the 'dask' extra)")
    p.add_argument("--wait", action="store_true",
                   help="if another process is writing the same store, wait for it instead of refusing")


def say(command: str, text: str) -> None:
    """One line on stderr, prefixed with the command's name."""
    print(f"{command}: {text}", file=sys.stderr, flush=True)
