"""``zcbench merge --out DIR STORE...``: join result stores (shards), then print and write the correlations.

The work is :mod:`zc_proxies.runs.merge` (joining, checked before anything is
written) and :func:`zc_proxies.runs.evaluation.prepare_report` (the tables; both check everything first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.images import DATA_ENV
from ..runs.evaluation import STORE_NAME, prepare_report
from ..runs.merge import prepare_merge
from ..runs.store import SCORE_KEY
from ._common import say


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge", help="join result stores (shards) and correlate the result",
                              description="Join result stores written by sharded runs (zcbench eval, BlockSwap "
                                          "searches) or imported score files into OUT/scores.jsonl; for proxy "
                                          "scores, then print and write the correlation tables.")
    p.add_argument("stores", nargs="+", help="result store files (scores*.jsonl) or folders holding them")
    p.add_argument("--out", required=True, help="output folder (must not hold a scores.jsonl yet)")
    p.add_argument("--space", default=None,
                   help="space spec for the tables, e.g. nb201-cifar10 (default: the one the stores record)")
    p.add_argument("--target", default=None, metavar="NAME[,NAME...]",
                   help="stored accuracies to correlate against, by the space's target names, as for zcbench eval "
                        "(default: the space's default targets)")
    p.add_argument("--source", default=None, metavar="FILE",
                   help="read the space's results from this official file (as zcbench eval --source); stores "
                        "scored on another file must hold the same architecture at each index")
    p.add_argument("--seed", type=int, default=None, help="which run seed to correlate (default: the only one)")
    p.add_argument("--data", default=None, help=f"data root (default: ${DATA_ENV})")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default: 1000)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the scatter plot")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    merge = prepare_merge(args.stores, out / STORE_NAME)  # a missing shard is a warning line
    scores = merge.key == SCORE_KEY
    pending = None
    if scores and merge.rows:  # checked before the merged store is written
        extra = [f"Merged from {len(merge.inputs)} store(s)."]
        if merge.missing:
            extra.append(f"Incomplete: {', '.join(merge.missing)} missing.")
        pending = prepare_report(merge.header, merge.rows, data=args.data, spec_text=args.space, seed=args.seed,
                                 n_resamples=args.bootstrap, plot=args.plot, extra=extra, targets=args.target,
                                 source=args.source)
    merge.write()
    say("zcbench merge", f"{len(merge.inputs)} stores -> {merge.path}: {len(merge.rows)} rows "
                         f"({merge.duplicates} duplicates dropped)")
    if not scores:
        say("zcbench merge", "these are BlockSwap search candidates: rerun the search with --store "
                             f"{merge.path} to pick the winner of them all")
    if pending is None:
        return 0
    report = pending.write(out)
    print(report.text, end="")
    print("wrote " + ", ".join(str(p) for p in report.paths.values()))
    return 0
