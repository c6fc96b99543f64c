"""``zcbench eval --proxy P --space nb201-cifar10``: parse the options, run the evaluation, print what it did.

The work is :mod:`zc_proxies.runs.evaluation`'s; this module only turns the
command line into an :class:`~zc_proxies.runs.evaluation.EvalRequest` and the
outcome into lines on the terminal.

The tables (``correlations.csv``/``.md``/``.tex``, ``scatter.png``) cover
every architecture the store holds for the run's seed and proxies (that has
every target's stored accuracy), not only this invocation's ``--sample`` or
``--archs``: a rerun into an existing ``--out`` with a smaller sample keeps
describing the whole store, and a footnote then says how many of the covered
architectures this invocation requested.
"""

from __future__ import annotations

import argparse
import sys

from ..data.images import DATA_ENV
from ..runs.evaluation import EvalRequest, plan_evaluation, run_evaluation
from ._common import add_runner_options, say


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="score architectures of a benchmark with proxies and correlate with accuracy",
        description="Score architectures of a search space with zero-cost proxies, store every score "
                    "(resumable), and print how well each proxy ranks them (Spearman, Kendall). The tables "
                    "cover every architecture stored in --out for --seed (earlier runs' too); a footnote says "
                    "how many of them this invocation requested.")
    p.add_argument("--proxy", default="fisher",
                   help="proxy name, comma-separated names, or 'all' (default: fisher)")
    p.add_argument("--space", required=True,
                   help="SPACE or SPACE-DATASET, e.g. nb201-cifar10, nb201-cifar100, nb201-imagenet16, nb101-cifar10")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sample", type=int, default=None, metavar="N",
                       help="score N architectures drawn with --seed (default: all)")
    which.add_argument("--archs", default=None, metavar="FILE",
                       help="file with one architecture per line (index or arch string)")
    p.add_argument("--target", default=None, metavar="NAME[,NAME...]",
                   help="stored accuracies to correlate against, the space's target names (the first is plotted): "
                        "nb201 val, test (200 epochs; default), val-12ep, test-12ep; nb101 val, test (108 epochs; "
                        "default), val-4ep, val-12ep, val-36ep, test-4ep, test-12ep, test-36ep (where the data has "
                        "them); nds-* test (last epoch; default), test-best (best epoch)")
    p.add_argument("--source", default=None, metavar="FILE",
                   help="read the space's results from this official file instead of the tables under --data: "
                        "NAS-Bench-201 .pth, NAS-Bench-101 .tfrecord or .h5, an NDS .json")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample, each minibatch and each initialisation")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default: 64)")
    add_runner_options(p)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--out", default="zcbench-eval", help="output folder: store and tables (default: zcbench-eval)")
    p.add_argument("--data", default=None, help=f"data root (default: ${DATA_ENV})")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default: 1000)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no pad-crop/flip augmentation on the minibatch")
    p.add_argument("--balanced-batch", dest="sampling", action="store_const", const="balanced", default="uniform",
                   help="draw each minibatch with an equal number of images per class instead of uniformly; "
                        "removes the class-mix variance of label-grouping proxies such as epe_nas")
    p.add_argument("--retry-failed", action="store_true",
                   help="score again the architectures whose stored rows have status 'error'")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the scatter plot")
    p.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                   help="memory layout to score in (default auto: the space's measured choice on the CPU, "
                        "NCHW elsewhere)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (and in every worker): registers your own proxies or spaces")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    req = EvalRequest(space=args.space, proxy=args.proxy, sample=args.sample, archs=args.archs, seed=args.seed,
                      batch_size=args.batch_size, workers=args.workers, threads=args.threads, device=args.device,
                      out=args.out, data=args.data, shard=args.shard, scheduler=args.scheduler,
                      bootstrap=args.bootstrap, augment=args.augment, sampling=args.sampling, plot=args.plot,
                      imports=tuple(args.imports), wait=args.wait, retry_failed=args.retry_failed,
                      target=args.target, source=args.source, layout=args.layout)
    plan = plan_evaluation(req)
    for notice in plan.notices:
        say("zcbench eval", f"warning: {notice}")
    say("zcbench eval", plan.describe())
    outcome = run_evaluation(plan, progress=not args.quiet, on_wait=lambda text: say("zcbench eval", text))
    summary = outcome.summary
    if outcome.retried:
        say("zcbench eval", f"{outcome.retried} stored error rows were scored again (--retry-failed)")
    if summary.skipped:
        say("zcbench eval", f"{summary.skipped} architectures were already in the store (resumed)")
    if summary.n_failed:
        say("zcbench eval", f"{summary.n_failed} scores of this run failed or were NaN:")
        for line in summary.failure_lines():
            print(f"  {line}", file=sys.stderr)
    print(outcome.report.text, end="")
    print("wrote " + ", ".join(str(p) for p in outcome.report.paths.values()))
    return 0
