#!/usr/bin/env python
"""Reproduce the ``fisher`` rank correlation on NAS-Bench-101, and compare with NASLib's scores.

NAS-Bench-101 is where Fisher fails: NAS-Bench-Suite-Zero (Krishnakumar et al.,
NeurIPS 2022 Datasets and Benchmarks) reports a Spearman correlation of -0.28
between ``fisher`` and validation accuracy on NB101 / CIFAR-10 (1,000
architectures, batch 64). This script

1. draws a seeded sample (``--sample``, 1,000 by default) from the 20,001 cells
   that have a stored 108-epoch validation accuracy (the evaluator's sampler:
   the sample ``zcbench eval --space nb101 --sample N --seed S`` scores),
   scores each with ``fisher`` through the evaluator on a batch of 64 real
   CIFAR-10 training images with training augmentation (minibatch and
   initialisation seeded by the architecture's ``arch_seed``), and prints the
   Spearman correlation with validation (and test) accuracy beside the
   published -0.28;
2. scores the 292 distinct cells that NASLib sampled for its zero-cost
   benchmark (``<data>/nb101/nb101_naslib_zc500.csv.gz``; ``--naslib N`` takes
   a seeded N of them, 0 skips) and prints the Spearman correlation of our
   per-architecture fisher with NASLib's (NASLib's duplicate rows averaged).

Both sets are scored into one resumable result store,
``<--out>/nb101/scores.jsonl`` (as ``zcbench eval`` writes it): a killed run
resumes where it stopped, and an architecture in both sets, or in an earlier
run with another ``--sample``, is scored once. NB101 networks reach 50 M
parameters: on 2 CPU cores expect several seconds per architecture (the script
prints its rate and the projected time for 1,000). Usage::

    python benchmarks/reproduce_nb101.py --data ../shared/data --sample 100 --naslib 100
    python benchmarks/reproduce_nb101.py --sample 1000 --naslib 292 --scores nb101_fisher.csv
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from zc_proxies.data import data_root
from zc_proxies.errors import ConfigError, guarded
from zc_proxies.runs.device import check_device
from zc_proxies.runs.evaluation import (
    EvalConfig,
    candidate_indices,
    evaluate,
    load_source,
    open_store,
    positive,
    sample_indices,
)
from zc_proxies.runs.execute import RunSummary
from zc_proxies.runs.runner import Runner
from zc_proxies.runs.seeding import check_seed
from zc_proxies.runs.store import OK
from zc_proxies.spaces.spec import open_spec

PUBLISHED = -0.28  # NAS-Bench-Suite-Zero, fisher vs validation accuracy, NB101 CIFAR-10
NASLIB_TABLE = "nb101_naslib_zc500.csv.gz"
PROXY = "fisher"


def machine_lines(threads: int, workers: int = 1) -> list[str]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.2f} at start" if hasattr(os, "getloadavg") else ""
    return [
        f"machine: {platform.node()} {platform.machine()} {cpu}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}{load}",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{workers} worker(s) x {threads} torch thread(s)"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
    ]


SCORE_COLUMNS = ["set", "index", "seed", "batch_size", "fisher", "status", "seconds", "params"]


def score_set(config: EvalConfig, indices: Sequence[int], store, runner: Runner, space, *, label: str,
              progress: bool = True) -> tuple[pd.DataFrame, RunSummary]:
    """``fisher`` of ``indices`` through the evaluator (stored ones reused), one row per architecture.

    ``fisher`` is NaN where the store holds a failure (status ``nan`` or ``error``); ``seconds`` is the
    stored time of the ``score()`` call.
    """
    summary = evaluate(config, indices, store, runner=runner, progress=progress)
    rows = []
    for index in indices:
        r = store.get((int(index), PROXY, config.seed))
        rows.append({"set": label, "index": int(index), "seed": config.seed, "batch_size": config.batch_size,
                     "fisher": float(r["score"]) if r["status"] == OK else math.nan, "status": r["status"],
                     "seconds": r["seconds"], "params": space.params(int(index), config.dataset)})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS), summary


def rho(x, y) -> float:
    return float(spearmanr(x, y).statistic)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--sample", type=int, default=1000, help="architectures from the validation subset (1000)")
    p.add_argument("--naslib", type=int, default=292, help="NASLib cells to score too (0 skips; at most 292)")
    p.add_argument("--seed", type=int, default=0, help="sample, minibatch and initialisation seed (0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads per worker (default: torch's)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmark-results/reproduce_nb101",
                   help="folder of the result store (resumable; default: benchmark-results/reproduce_nb101)")
    p.add_argument("--scores", default=None,
                   help="also write the per-architecture scores of this run's two sets to this CSV")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    check_seed(args.seed, "--seed")
    positive(args.sample, "--sample")
    positive(args.batch_size, "--batch-size")
    if args.threads is not None:
        positive(args.threads, "--threads")
    if args.naslib < 0:
        raise ConfigError(f"--naslib must be 0 (skip) or a positive integer, got {args.naslib}")
    device = check_device(args.device)
    root = data_root(args.data)
    with Runner(args.workers) as runner:
        if args.threads:
            torch.set_num_threads(args.threads)
        for line in machine_lines(torch.get_num_threads(), args.workers):
            print(line)
        return run(args, root, device, runner)


def run(args, root: Path, device: str, runner: Runner) -> int:
    """Score the validation-subset sample and the NASLib cells, print the correlations."""
    t0 = time.perf_counter()
    space, spec = open_spec("nb101", root)
    num_classes = space.num_classes(spec.dataset)
    source, notices = load_source(spec.dataset, root, num_classes)
    for notice in notices:
        print(f"note: {notice}")
    images = source.data
    print(f"settings: proxy fisher (BN in train mode, cross-entropy), batch {args.batch_size} of CIFAR-10 "
          f"training images ({len(images):,} available at {images.source}), random crop + flip, "
          f"seed {args.seed} (one minibatch and init seed per arch), device {device}; "
          f"loaded in {time.perf_counter() - t0:.1f} s")

    candidates = candidate_indices(space, {"val": spec.dataset})
    sample = sample_indices(candidates, args.sample, args.seed)
    print(f"sample: {len(sample)} of the {len(candidates):,} cells with a stored validation accuracy "
          f"(the evaluator's seeded sample)")
    config = EvalConfig(space=spec.space, dataset=spec.dataset, proxies=(PROXY,), batch_size=args.batch_size,
                        seed=args.seed, data_root=str(root), device=device, threads=args.threads)
    path = Path(args.out) / spec.text / "scores.jsonl"
    info = {"spec": spec.text, "targets": dict(spec.targets), "benchmark": "reproduce_nb101"}
    with open_store(config, path, source, num_classes, info) as store:
        if len(store):
            print(f"resuming: {len(store)} scores in {path}")
        ours, summary = score_set(config, sample, store, runner, space, label="val-subset", progress=not args.quiet)
        stored = ours["seconds"].dropna()
        if summary.scored:
            wall = summary.seconds / summary.scored
            print(f"rate: {wall:.2f} s/arch this run ({summary.scored} archs: minibatch + build + score, "
                  f"{runner.describe()}); score() alone {stored.mean():.2f} s/arch (median {stored.median():.2f}, "
                  f"{len(stored)} archs); 1,000 archs would take {1000 * wall / 60:.0f} min here")
        else:
            print(f"rate: all {len(ours)} archs from the store; score() alone {stored.mean():.2f} s/arch (median "
                  f"{stored.median():.2f}); 1,000 archs would take about {1000 * stored.mean() / 60:.0f} min here")

        naslib_rows = theirs = None
        if args.naslib > 0:
            table = pd.read_csv(root / "nb101" / NASLIB_TABLE)
            per_arch = table.groupby("index").agg(naslib_fisher=("fisher", "mean"),
                                                  naslib_val=("val_acc_108_pct", "mean"),
                                                  rows=("fisher", "size")).reset_index()
            cells = per_arch["index"].astype(int).tolist()
            pick = sample_indices(cells, args.naslib if args.naslib < len(cells) else None, args.seed)
            per_arch = per_arch[per_arch["index"].isin(pick)]
            print(f"NASLib: {len(per_arch)} of {table['index'].nunique()} distinct cells "
                  f"({int(per_arch['rows'].sum())} of {len(table)} rows)")
            theirs, _ = score_set(config, pick, store, runner, space, label="naslib", progress=not args.quiet)
            naslib_rows = per_arch.merge(theirs.drop(columns=["set"]), on="index")
            naslib_rows["test_acc"] = [space.accuracy(i, "cifar10", "test") for i in naslib_rows["index"]]

    failed = ours[ours["status"] != OK]
    if len(failed):
        print(f"failed: {len(failed)} of {len(ours)} sample archs have no fisher score (status "
              f"{', '.join(sorted(set(failed['status'])))}); see {path}")
    ok = ours[ours["status"] == OK].copy()
    ok["val_acc"] = [space.accuracy(i, "cifar10", "val") for i in ok["index"]]
    ok["test_acc"] = [space.accuracy(i, "cifar10", "test") for i in ok["index"]]

    lines = [("fisher vs val_acc_108 (one run)", len(ok), rho(ok.fisher, ok.val_acc), PUBLISHED),
             ("fisher vs test acc (mean of 3)", len(ok), rho(ok.fisher, ok.test_acc), None),
             ("params vs val_acc_108 (baseline)", len(ok), rho(ok.params, ok.val_acc), None)]
    if naslib_rows is not None:
        both = naslib_rows[naslib_rows["status"] == OK]
        n = len(both)
        lines += [("our fisher vs NASLib fisher (same cells)", n, rho(both.fisher, both.naslib_fisher), None),
                  ("our fisher vs test acc (NASLib cells)", n, rho(both.fisher, both.test_acc), None),
                  ("NASLib fisher vs test acc (NASLib cells)", n, rho(both.naslib_fisher, both.test_acc), None),
                  ("NASLib fisher vs NASLib val (NASLib cells)", n, rho(both.naslib_fisher, both.naslib_val),
                   None)]

    print()
    print(f"| {'Spearman':<44} | {'archs':>5} | {'ours':>6} | {'published':>9} |")
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 8}|{'-' * 11}|")
    for name, n, value, published in lines:
        pub = f"{published:+.2f}" if published is not None else ""
        print(f"| {name:<44} | {n:>5} | {value:+.3f} | {pub:>9} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")

    print(f"result store: {path}")
    if args.scores:
        frames = [ours] + ([theirs] if theirs is not None else [])
        pd.concat(frames, ignore_index=True)[SCORE_COLUMNS].to_csv(args.scores, index=False)
        print(f"per-architecture scores in {args.scores}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("reproduce_nb101.py", main))
