"""``zcbench report DIR_OR_STORE...``: one leaderboard of every proxy on every space/target in result stores.

The work is :mod:`zc_proxies.leaderboard`'s (reading, grouping, correlating;
everything is checked before anything is written); this module turns the
command line into its arguments and prints the table.
"""

from __future__ import annotations

import argparse

from ..data.images import DATA_ENV
from ..leaderboard import DEFAULT_TOP_K, build_leaderboard, to_text, write_leaderboard
from ..stats import NAN_POLICIES
from ._common import say


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="one leaderboard of every proxy on every space/target found in result stores",
        description="Read result stores (files, or folders searched for scores*.jsonl), pool the stores of one "
                    "experiment (shards, reruns), keep runs under different settings apart, and write one table of "
                    "every proxy against every space/target found: Spearman and Kendall with bootstrap 95% CIs, "
                    "n, NaN/failed counts, top-k overlaps and regret, sorted by |rho| within each space/target; as "
                    "CSV (long format), Markdown and LaTeX, with bar charts and scatter grids (PNG).")
    p.add_argument("stores", nargs="+", metavar="DIR_OR_STORE",
                   help="result store files (scores*.jsonl) or folders searched (recursively) for them")
    p.add_argument("--out", default="zcbench-report", help="output folder (default: zcbench-report)")
    p.add_argument("--data", default=None, help=f"data root (default: ${DATA_ENV})")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default: 1000)")
    p.add_argument("--nan-policy", choices=NAN_POLICIES, default="omit",
                   help="NaN/inf/failed scores: 'omit' leaves them out (each proxy on its own architectures), "
                        "'worst' ranks them last, as NAS-Bench-Suite-Zero does (every proxy on the same "
                        "architectures) (default: omit)")
    p.add_argument("--top-k", default=",".join(f"{k:g}" for k in DEFAULT_TOP_K), metavar="PCTS",
                   help="top-k%% overlaps to report, percents separated by commas (default: 5,10,20)")
    p.add_argument("--seed", type=int, default=None,
                   help="correlate only this run seed (default: every seed found, each its own run; imported "
                        "NAS-Bench-Suite-Zero scores have seed -1)")
    p.add_argument("--bootstrap-seed", type=int, default=0, metavar="S",
                   help="seed of the bootstrap resampling (default: 0)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the bar charts and scatter grids")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first: registers your own proxies or spaces")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..runs.evaluation import import_modules

    import_modules(args.imports)
    board = build_leaderboard(args.stores, data=args.data, n_resamples=args.bootstrap, nan_policy=args.nan_policy,
                              top_k=args.top_k, seed=args.seed, bootstrap_seed=args.bootstrap_seed)
    for note in board.skipped:
        say("zcbench report", note)
    paths = write_leaderboard(args.out, board, plot=args.plot)
    print(to_text(board), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
