#!/usr/bin/env python
"""Reproduce the ``fisher`` rank correlation on NAS-Bench-101, and compare with NASLib's scores.

NAS-Bench-101 is where Fisher fails: NAS-Bench-Suite-Zero (Krishnakumar et al.,
NeurIPS 2022 Datasets and Benchmarks) reports a Spearman correlation of -0.28
between ``fisher`` and validation accuracy on NB101 / CIFAR-10 (1,000
architectures, batch 64). This script

1. draws a seeded sample (``--sample``, 1,000 by default) from the 20,001 cells
   that have a stored 108-epoch validation accuracy, scores each with
   ``zc_proxies.score(..., "fisher")`` on a batch of 64 real CIFAR-10 training
   images (one minibatch and one initialisation seed per architecture), and
   prints the Spearman correlation with validation (and test) accuracy beside
   the published -0.28;
2. scores the 292 distinct cells that NASLib sampled for its zero-cost
   benchmark (``<data>/nb101/nb101_naslib_zc500.csv.gz``; ``--naslib N`` takes
   a seeded N of them, 0 skips) and prints the Spearman correlation of our
   per-architecture fisher with NASLib's (NASLib's duplicate rows averaged).

A smaller ``--sample`` is a prefix of the same seeded order, so short runs are
nested in longer ones. NB101 networks reach 50 M parameters: on 2 CPU cores
expect several seconds per architecture (the script prints its rate and the
projected time for 1,000). Usage::

    python benchmarks/reproduce_nb101.py --data ../shared/data --sample 100 --naslib 100
    python benchmarks/reproduce_nb101.py --sample 1000 --naslib 292 --scores nb101_fisher.csv
"""

from __future__ import annotations

import argparse
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
from tqdm import tqdm

from zc_proxies import get_space, score
from zc_proxies.cli import guarded
from zc_proxies.datasets import ImageSet, data_root, load_cifar, minibatch

PUBLISHED = -0.28  # NAS-Bench-Suite-Zero, fisher vs validation accuracy, NB101 CIFAR-10
NASLIB_TABLE = "nb101_naslib_zc500.csv.gz"


def machine_lines(threads: int) -> list[str]:
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
        f"{threads} torch thread(s)" + (f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
    ]


def arch_seed(seed: int, index: int) -> int:
    """The seed of one architecture's minibatch and initialisation."""
    return int(np.random.SeedSequence([seed, int(index)]).generate_state(1)[0])


SCORE_COLUMNS = ["set", "index", "seed", "batch_size", "fisher", "seconds", "params"]


class ScoreFile:
    """Per-architecture scores, appended as they are computed, so a killed run resumes where it stopped."""

    def __init__(self, path: str | None, seed: int, batch_size: int) -> None:
        self.path = Path(path) if path else None
        self.done: dict[tuple[str, int], dict] = {}
        if self.path is not None and self.path.is_file():
            old = pd.read_csv(self.path)
            missing = set(SCORE_COLUMNS) - set(old.columns)
            if missing:
                raise SystemExit(f"{self.path} lacks the column(s) {sorted(missing)}; use another --scores file")
            same = old[(old["seed"] == seed) & (old["batch_size"] == batch_size)]
            self.done = {(r["set"], int(r["index"])): r for r in same[SCORE_COLUMNS].to_dict("records")}
            print(f"resuming: {len(self.done)} scores in {self.path} with seed {seed} and batch {batch_size}")

    def add(self, row: dict) -> None:
        self.done[(row["set"], row["index"])] = row
        if self.path is not None:
            header = not self.path.is_file()
            pd.DataFrame([row])[SCORE_COLUMNS].to_csv(self.path, mode="a", header=header, index=False)


def score_archs(space, images: ImageSet, indices: Sequence[int], *, seed: int, batch_size: int,
                device: str, label: str, store: ScoreFile) -> pd.DataFrame:
    """``fisher`` for each index: one seeded minibatch and initialisation per architecture."""
    todo = [int(i) for i in indices if (label, int(i)) not in store.done]
    for index in tqdm(todo, desc=label, unit=" arch", mininterval=2.0):
        s = arch_seed(seed, index)
        batch = minibatch(images, batch_size, s)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            model = space.build(index, images.num_classes).to(device)
        value = score(model, (batch[0].to(device), batch[1].to(device)), "fisher", seed=s)
        store.add({"set": label, "index": index, "seed": seed, "batch_size": batch_size, "fisher": value,
                   "seconds": time.perf_counter() - t0, "params": space.params(index, "cifar10")})
        del model
    return pd.DataFrame([store.done[(label, int(i))] for i in indices])


def rho(x, y) -> float:
    return float(spearmanr(x, y).statistic)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--sample", type=int, default=1000, help="architectures from the validation subset (1000)")
    p.add_argument("--naslib", type=int, default=292, help="NASLib cells to score too (0 skips; at most 292)")
    p.add_argument("--seed", type=int, default=0, help="sample, minibatch and initialisation seed (0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--scores", default=None,
                   help="CSV of per-architecture scores: appended as they come, reused when rerun (resume)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = data_root(args.data)

    for line in machine_lines(torch.get_num_threads()):
        print(line)
    t0 = time.perf_counter()
    space = get_space("nb101", root)
    images = load_cifar(root, 10, "train")
    print(f"settings: proxy fisher (BN in train mode, cross-entropy), batch {args.batch_size} of CIFAR-10 "
          f"training images ({len(images):,} available at {images.source}), random crop + flip, "
          f"seed {args.seed} (one minibatch and init seed per arch), device {args.device}; "
          f"loaded in {time.perf_counter() - t0:.1f} s")

    candidates = np.asarray(space.indices_with("cifar10", "val"))
    order = np.random.default_rng(args.seed).permutation(candidates)
    sample = order[:args.sample]
    print(f"sample: {len(sample)} of the {len(candidates):,} cells with a stored validation accuracy "
          f"(seeded permutation prefix)")
    store = ScoreFile(args.scores, args.seed, args.batch_size)
    ours = score_archs(space, images, sample, seed=args.seed, batch_size=args.batch_size, device=args.device,
                       label="val-subset", store=store)
    rate = ours["seconds"].mean()
    print(f"rate: {rate:.2f} s/arch (median {ours['seconds'].median():.2f}, build + score, "
          f"{int(ours['seconds'].notna().sum())} archs); 1,000 archs would take {1000 * rate / 60:.0f} min here")
    ours["val_acc"] = [space.accuracy(i, "cifar10", "val") for i in ours["index"]]
    ours["test_acc"] = [space.accuracy(i, "cifar10", "test") for i in ours["index"]]

    lines = [("fisher vs val_acc_108 (one run)", len(ours), rho(ours.fisher, ours.val_acc), PUBLISHED),
             ("fisher vs test acc (mean of 3)", len(ours), rho(ours.fisher, ours.test_acc), None),
             ("params vs val_acc_108 (baseline)", len(ours), rho(ours.params, ours.val_acc), None)]

    naslib_rows = None
    if args.naslib > 0:
        table = pd.read_csv(root / "nb101" / NASLIB_TABLE)
        per_arch = table.groupby("index").agg(naslib_fisher=("fisher", "mean"), naslib_val=("val_acc_108_pct", "mean"),
                                              rows=("fisher", "size")).reset_index()
        pick = np.random.default_rng(args.seed).permutation(per_arch["index"].to_numpy())[:args.naslib]
        per_arch = per_arch[per_arch["index"].isin(pick)]
        print(f"NASLib: {len(per_arch)} of {table['index'].nunique()} distinct cells "
              f"({int(per_arch['rows'].sum())} of {len(table)} rows)")
        theirs = score_archs(space, images, per_arch["index"].tolist(), seed=args.seed,
                             batch_size=args.batch_size, device=args.device, label="naslib", store=store)
        naslib_rows = per_arch.merge(theirs.drop(columns=["set"]), on="index")
        naslib_rows["test_acc"] = [space.accuracy(i, "cifar10", "test") for i in naslib_rows["index"]]
        n = len(naslib_rows)
        lines += [("our fisher vs NASLib fisher (same cells)", n, rho(naslib_rows.fisher, naslib_rows.naslib_fisher),
                   None),
                  ("our fisher vs test acc (NASLib cells)", n, rho(naslib_rows.fisher, naslib_rows.test_acc), None),
                  ("NASLib fisher vs test acc (NASLib cells)", n,
                   rho(naslib_rows.naslib_fisher, naslib_rows.test_acc), None),
                  ("NASLib fisher vs NASLib val (NASLib cells)", n,
                   rho(naslib_rows.naslib_fisher, naslib_rows.naslib_val), None)]

    print()
    print(f"| {'Spearman':<44} | {'archs':>5} | {'ours':>6} | {'published':>9} |")
    print(f"|{'-' * 46}|{'-' * 7}|{'-' * 8}|{'-' * 11}|")
    for name, n, value, published in lines:
        pub = f"{published:+.2f}" if published is not None else ""
        print(f"| {name:<44} | {n:>5} | {value:+.3f} | {pub:>9} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")

    if args.scores:
        print(f"per-architecture scores in {args.scores}")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("reproduce_nb101.py", main))
