"""Our proxies against NAS-Bench-Suite-Zero's published per-architecture scores (NB201, CIFAR-10).

For a seeded sample of the architectures in
``<data>/nb201/reference_scores/zc_suite_zero_cifar10.csv.gz`` every proxy of
that file is scored with zcbench's evaluator (batch 64 of real CIFAR-10 train
images with the benchmark's augmentation, one seeded minibatch and
initialisation per architecture; scores kept in a resumable store under
``--out``), and the Spearman rank correlation between our score and the
published one is printed per proxy beside the threshold it must reach and the
between-run correlation of two published runs (the noise floor).

Run::

    python benchmarks/proxies_vs_reference.py --data ../shared/data --sample 300
    python benchmarks/proxies_vs_reference.py --sample 30 --proxies params,flops,synflow

A killed run resumes where it stopped (the store keeps every finished
architecture). Exit status 1 when a proxy misses its threshold.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from zc_proxies.datasets import data_root as resolve_root
from zc_proxies.evaluate import EvalConfig, evaluate, open_store, setup_worker
from zc_proxies.store import OK, read_store

REFERENCE = Path("nb201") / "reference_scores" / "zc_suite_zero_cifar10.csv.gz"

#: our proxy name -> the reference file's column
REFERENCE_NAME = {
    "epe_nas": "epe_nas", "fisher": "fisher", "flops": "flops", "grad_norm": "grad_norm", "grasp": "grasp",
    "jacob_cov": "jacov", "l2_norm": "l2_norm", "naswot": "nwot", "params": "params", "plain": "plain",
    "snip": "snip", "synflow": "synflow", "zen": "zen",
}

#: the Spearman correlation with the published scores each proxy must reach (None: no threshold)
THRESHOLD = {name: 0.9 for name in REFERENCE_NAME} | {"grasp": 0.7, "plain": None}

#: Spearman between two published NAS-Bench-Suite-Zero-style runs (PROVENANCE.md), where known
BETWEEN_RUNS = {"synflow": 1.00, "snip": 0.99, "grad_norm": 0.99, "fisher": 0.98, "jacob_cov": 0.94,
                "epe_nas": 0.80, "grasp": 0.78, "plain": 0.18}


@dataclass
class Comparison:
    """One proxy's agreement with the published scores."""

    proxy: str
    reference: str
    n: int
    failed: int
    spearman: float
    threshold: float | None
    between_runs: float | None
    max_abs_diff: float

    @property
    def passed(self) -> bool | None:
        return None if self.threshold is None else bool(self.spearman >= self.threshold)


def load_reference(root: Path) -> pd.DataFrame:
    """The published table, indexed by the NB201 architecture index."""
    return pd.read_csv(root / REFERENCE).set_index("index")


def sample_reference(reference: pd.DataFrame, sample: int, seed: int) -> list[int]:
    """``sample`` architecture indices of the reference file, drawn with ``seed``; sorted."""
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(reference.index.to_numpy(), size=sample, replace=False))


def score_sample(root: Path, indices: Sequence[int], proxies: Sequence[str], *, seed: int, batch_size: int,
                 out: Path, workers: int = 1, threads: int | None = None, progress: bool = True) -> list[dict]:
    """Score ``indices`` with ``proxies`` into ``out/scores.jsonl`` (resuming it); return its rows."""
    config = EvalConfig(space="nb201", dataset="cifar10", proxies=tuple(proxies), batch_size=batch_size,
                        seed=seed, data_root=str(root), threads=threads)
    state = setup_worker(config)
    out.mkdir(parents=True, exist_ok=True)
    store = open_store(config, out / "scores.jsonl", state.source, state.num_classes,
                       info={"benchmark": "proxies_vs_reference"})
    evaluate(config, indices, store, workers=workers, progress=progress)
    _header, rows = read_store(out / "scores.jsonl")
    wanted = set(int(i) for i in indices)
    return [r for r in rows if int(r["index"]) in wanted and r["proxy"] in proxies and int(r["seed"]) == seed]


def compare(rows: Sequence[dict], reference: pd.DataFrame, proxies: Sequence[str]) -> list[Comparison]:
    """Spearman between stored scores and the published column, per proxy (failed rows counted, not hidden)."""
    out = []
    for proxy in proxies:
        mine = [r for r in rows if r["proxy"] == proxy]
        ok = [r for r in mine if r["status"] == OK]
        ours = np.array([float(r["score"]) for r in ok])
        theirs = reference.loc[[int(r["index"]) for r in ok], REFERENCE_NAME[proxy]].to_numpy(dtype=float)
        rho = float(spearmanr(ours, theirs)[0]) if len(ok) > 2 else float("nan")
        diff = float(np.max(np.abs(ours - theirs))) if len(ok) else float("nan")
        out.append(Comparison(proxy, REFERENCE_NAME[proxy], len(ok), len(mine) - len(ok), rho,
                              THRESHOLD[proxy], BETWEEN_RUNS.get(proxy), diff))
    return out


def seconds_per_arch(rows: Sequence[dict]) -> float:
    """Mean joint scoring time per architecture (rows of one architecture share the joint time)."""
    per_arch: dict[int, float] = {}
    for r in rows:
        per_arch[int(r["index"])] = max(per_arch.get(int(r["index"]), 0.0), float(r.get("seconds") or 0.0))
    return float(np.mean(list(per_arch.values()))) if per_arch else float("nan")


def table(results: Sequence[Comparison]) -> str:
    """A plain-text table of the comparisons."""
    head = f"{'proxy':<10} {'reference':<10} {'n':>4} {'failed':>6} {'spearman':>9} {'needs':>6} {'pass':>5} " \
           f"{'between-runs':>12} {'max|diff|':>10}"
    lines = [head, "-" * len(head)]
    for c in results:
        need = "-" if c.threshold is None else f"{c.threshold:.2f}"
        ok = "-" if c.passed is None else ("yes" if c.passed else "NO")
        floor = "-" if c.between_runs is None else f"{c.between_runs:.2f}"
        lines.append(f"{c.proxy:<10} {c.reference:<10} {c.n:>4} {c.failed:>6} {c.spearman:>9.3f} {need:>6} "
                     f"{ok:>5} {floor:>12} {c.max_abs_diff:>10.4g}")
    return "\n".join(lines)


def machine() -> str:
    """One line describing where this ran."""
    return (f"{platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads | python {platform.python_version()}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--sample", type=int, default=300, help="architectures to score (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample, minibatches and initialisations")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--proxies", default=",".join(REFERENCE_NAME), help="comma-separated (default: all 13)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: torch's; use 1 on a busy machine, where "
                        "spinning OpenMP threads cost more than they give)")
    p.add_argument("--out", default="results/proxies_vs_reference", help="store folder (resumable)")
    args = p.parse_args(argv)
    root = resolve_root(args.data)
    proxies = [s.strip() for s in args.proxies.split(",") if s.strip()]
    unknown = [q for q in proxies if q not in REFERENCE_NAME]
    if unknown:
        p.error(f"not in the reference file: {', '.join(unknown)} (known: {', '.join(REFERENCE_NAME)})")
    reference = load_reference(root)
    indices = sample_reference(reference, args.sample, args.seed)
    out = Path(args.out) / f"sample{args.sample}-seed{args.seed}-batch{args.batch_size}"
    print(f"machine: {machine()}")
    print(f"settings: nb201 cifar10, {args.sample} archs of {len(reference)} (seed {args.seed}), batch "
          f"{args.batch_size} CIFAR-10 train images with augmentation, {args.workers} worker(s) x "
          f"{args.threads or torch.get_num_threads()} thread(s), store {out}")
    start = time.perf_counter()
    rows = score_sample(root, indices, proxies, seed=args.seed, batch_size=args.batch_size, out=out,
                        workers=args.workers, threads=args.threads)
    print(f"scored in {time.perf_counter() - start:.0f} s this run; stored joint time "
          f"{seconds_per_arch(rows):.2f} s per architecture (all {len(proxies)} proxies together)")
    results = compare(rows, reference, proxies)
    print(table(results))
    return 0 if all(c.passed is not False for c in results) else 1


if __name__ == "__main__":
    sys.exit(main())
