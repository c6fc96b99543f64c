"""Our proxies against NAS-Bench-Suite-Zero's published per-architecture scores (NB201, CIFAR-10).

For a seeded sample of the architectures in
``<data>/nb201/reference_scores/zc_suite_zero_cifar10.csv.gz`` (the engine's
sampler over that file's architectures) every proxy of that file is scored
with zcbench's evaluator (batch 64 of real CIFAR-10 train images with the
benchmark's augmentation, one minibatch and initialisation per architecture,
seeded by the evaluator's ``arch_seed``; scores kept in a resumable store under
``--out``), and the Spearman rank correlation between our score and the
published one is printed per proxy beside the threshold it must reach and the
between-run correlation of two published runs (the noise floor).

With ``--repeats K`` every architecture is scored under K run seeds (new
minibatch and initialisation each time). The table then adds how well our own
runs agree with each other and how well the mean of our K runs (mean rank per
architecture) agrees with the published scores: as K grows our side's noise
averages out, so that column estimates the highest agreement that any one
published run allows. ``--balanced-batch`` draws class-balanced minibatches.

Run::

    python benchmarks/proxies_vs_reference.py --data ../shared/data --sample 300
    python benchmarks/proxies_vs_reference.py --sample 30 --proxies params,flops,synflow
    python benchmarks/proxies_vs_reference.py --proxies epe_nas --repeats 6 [--balanced-batch]

A killed run resumes where it stopped (the store keeps every finished
architecture). Exit status 1 when a proxy misses its threshold.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata, spearmanr

from zc_proxies.data import data_root as resolve_root
from zc_proxies.errors import ConfigError, guarded
from zc_proxies.runs.evaluation import EvalConfig, evaluate, open_store, positive, sample_indices, setup_worker
from zc_proxies.runs.runner import Runner
from zc_proxies.runs.seeding import MAX_SEED, check_seed
from zc_proxies.runs.store import OK

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
    repeats: int = 1
    ours_run_vs_run: float | None = None
    mean_of_runs: float | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.threshold is None else bool(self.spearman >= self.threshold)


def load_reference(root: Path) -> pd.DataFrame:
    """The published table, indexed by the NB201 architecture index."""
    return pd.read_csv(root / REFERENCE).set_index("index")


def sample_reference(reference: pd.DataFrame, sample: int, seed: int) -> list[int]:
    """``sample`` architecture indices of the reference file, drawn with ``seed``; sorted.

    The engine's sampler (:func:`~zc_proxies.runs.evaluation.sample_indices`, seed stream ``"sample"``)
    over the file's architectures, so the same sample as ``reproduce_nb201.py --parity`` and the tests' parity check.
    """
    if sample > len(reference):
        raise ConfigError(f"--sample {sample}: the reference file holds only {len(reference)} architectures")
    return sample_indices(reference.index.to_numpy().tolist(), sample, seed)


def score_sample(root: Path, indices: Sequence[int], proxies: Sequence[str], *, seed: int, batch_size: int,
                 out: Path, workers: int = 1, threads: int | None = None, progress: bool = True,
                 sampling: str = "uniform") -> list[dict]:
    """Score ``indices`` with ``proxies`` under run seed ``seed`` into ``out/scores.jsonl`` (resuming it).

    Returns that seed's rows for ``indices`` and ``proxies``.
    """
    config = EvalConfig(space="nb201", dataset="cifar10", proxies=tuple(proxies), batch_size=batch_size,
                        seed=seed, data_root=str(root), threads=threads, sampling=sampling)
    state = setup_worker(config)
    with Runner(workers) as runner, open_store(config, Path(out) / "scores.jsonl", state.source, state.num_classes,
                                               info={"benchmark": "proxies_vs_reference"}) as store:
        evaluate(config, indices, store, runner=runner, progress=progress)
        rows = store.rows()
    wanted = set(int(i) for i in indices)
    return [r for r in rows if int(r["index"]) in wanted and r["proxy"] in proxies and int(r["seed"]) == seed]


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    return float(spearmanr(a, b)[0]) if len(a) > 2 else float("nan")


def repeat_agreement(runs: Sequence[Mapping[int, float]], theirs: pd.Series) -> tuple[float, float]:
    """``(mean Spearman between our runs, Spearman of our mean rank over the runs with the published)``.

    Only architectures every run scored take part; ranks rather than values are
    averaged, so proxies of any scale or sign average alike.
    """
    common = sorted(set.intersection(*(set(r) for r in runs)))
    if len(common) < 3:
        return float("nan"), float("nan")
    ranks = np.array([rankdata([run[i] for i in common]) for run in runs])
    pairs = [_rho(ranks[a], ranks[b]) for a in range(len(runs)) for b in range(a + 1, len(runs))]
    return float(np.mean(pairs)), _rho(ranks.mean(axis=0), theirs.loc[common].to_numpy(dtype=float))


def compare(rows: Sequence[dict], reference: pd.DataFrame, proxies: Sequence[str],
            seeds: Sequence[int] | None = None) -> list[Comparison]:
    """Spearman between stored scores and the published column, per proxy (failed rows counted, not hidden).

    The headline Spearman is that of the first of ``seeds`` (default: the
    lowest seed in ``rows``), one run as the published protocol has it; with
    several seeds the repeat columns are filled (:func:`repeat_agreement`).
    """
    seeds = list(seeds) if seeds is not None else sorted({int(r["seed"]) for r in rows})[:1]
    out = []
    for proxy in proxies:
        column = REFERENCE_NAME[proxy]
        mine = [r for r in rows if r["proxy"] == proxy and int(r["seed"]) == seeds[0]]
        ok = [r for r in mine if r["status"] == OK]
        ours = np.array([float(r["score"]) for r in ok])
        theirs = reference.loc[[int(r["index"]) for r in ok], column].to_numpy(dtype=float)
        diff = float(np.max(np.abs(ours - theirs))) if len(ok) else float("nan")
        within = mean_runs = None
        if len(seeds) > 1:
            runs = [{int(r["index"]): float(r["score"]) for r in rows
                     if r["proxy"] == proxy and int(r["seed"]) == s and r["status"] == OK} for s in seeds]
            within, mean_runs = repeat_agreement(runs, reference[column])
        out.append(Comparison(proxy, column, len(ok), len(mine) - len(ok), _rho(ours, theirs), THRESHOLD[proxy],
                              BETWEEN_RUNS.get(proxy), diff, len(seeds), within, mean_runs))
    return out


def seconds_per_arch(rows: Sequence[dict]) -> float:
    """Mean joint scoring time per architecture.

    Each row holds its proxy's own share of the joint call (a shared pass is charged to the first proxy
    that needs it), so an architecture's joint time is the sum over its rows.
    """
    per_arch: dict[int, float] = {}
    for r in rows:
        per_arch[int(r["index"])] = per_arch.get(int(r["index"]), 0.0) + float(r.get("seconds") or 0.0)
    return float(np.mean(list(per_arch.values()))) if per_arch else float("nan")


def table(results: Sequence[Comparison]) -> str:
    """A plain-text table of the comparisons (repeat columns only when there were repeats)."""
    repeats = max((c.repeats for c in results), default=1)
    head = f"{'proxy':<10} {'reference':<10} {'n':>4} {'failed':>6} {'spearman':>9} {'needs':>6} {'pass':>5} " \
           f"{'between-runs':>12} {'max|diff|':>10}"
    if repeats > 1:
        head += f" {'ours run-vs-run':>15} {f'mean of {repeats} runs':>15}"
    lines = [head, "-" * len(head)]
    for c in results:
        need = "-" if c.threshold is None else f"{c.threshold:.2f}"
        ok = "-" if c.passed is None else ("yes" if c.passed else "NO")
        floor = "-" if c.between_runs is None else f"{c.between_runs:.2f}"
        line = (f"{c.proxy:<10} {c.reference:<10} {c.n:>4} {c.failed:>6} {c.spearman:>9.3f} {need:>6} "
                f"{ok:>5} {floor:>12} {c.max_abs_diff:>10.4g}")
        if repeats > 1:
            line += f" {c.ours_run_vs_run:>15.3f} {c.mean_of_runs:>15.3f}"
        lines.append(line)
    if repeats > 1:
        lines.append("spearman, pass: our first run alone, one minibatch per architecture as published; "
                     "ours run-vs-run: mean Spearman between our runs; mean of runs: our mean rank per "
                     "architecture over all runs vs published.")
    return "\n".join(lines)


def machine() -> str:
    """One line describing where this ran."""
    return (f"{platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores, "
            f"torch {torch.__version__} | python {platform.python_version()}")


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
    p.add_argument("--repeats", type=int, default=1,
                   help="score every architecture under this many run seeds (seed, seed+1, ...) and report how "
                        "our runs agree with each other and how their mean agrees with the published scores")
    p.add_argument("--balanced-batch", dest="sampling", action="store_const", const="balanced", default="uniform",
                   help="class-balanced minibatches instead of uniform ones (NAS-Bench-Suite-Zero drew uniformly)")
    p.add_argument("--out", default="results/proxies_vs_reference", help="store folder (resumable)")
    args = p.parse_args(argv)
    check_seed(args.seed, "--seed")
    positive(args.sample, "--sample")
    positive(args.batch_size, "--batch-size")
    positive(args.workers, "--workers")
    if args.threads is not None:
        positive(args.threads, "--threads")
    root = resolve_root(args.data)
    proxies = [s.strip() for s in args.proxies.split(",") if s.strip()]
    unknown = [q for q in proxies if q not in REFERENCE_NAME]
    if unknown:
        p.error(f"not in the reference file: {', '.join(unknown)} (known: {', '.join(REFERENCE_NAME)})")
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.seed + args.repeats - 1 > MAX_SEED:
        p.error(f"--seed {args.seed} with --repeats {args.repeats} runs past the largest seed {MAX_SEED}")
    reference = load_reference(root)
    indices = sample_reference(reference, args.sample, args.seed)
    out = Path(args.out) / (f"sample{args.sample}-seed{args.seed}-batch{args.batch_size}"
                            + ("-balanced" if args.sampling == "balanced" else ""))
    seeds = list(range(args.seed, args.seed + args.repeats))
    print(f"machine: {machine()}")
    print(f"settings: nb201 cifar10, {args.sample} archs of {len(reference)} (seed {args.seed}), "
          f"{'class-balanced' if args.sampling == 'balanced' else 'uniformly drawn'} batch of {args.batch_size} "
          f"CIFAR-10 train images with augmentation, run seed(s) {', '.join(map(str, seeds))}, "
          f"{args.workers} worker(s) x {args.threads or torch.get_num_threads()} thread(s), store {out}")
    start = time.perf_counter()
    rows = []
    for seed in seeds:
        rows += score_sample(root, indices, proxies, seed=seed, batch_size=args.batch_size, out=out,
                             workers=args.workers, threads=args.threads, sampling=args.sampling)
    print(f"scored in {time.perf_counter() - start:.0f} s this run; stored joint time "
          f"{seconds_per_arch([r for r in rows if int(r['seed']) == seeds[0]]):.2f} s per architecture "
          f"(all {len(proxies)} proxies together)")
    results = compare(rows, reference, proxies, seeds)
    print(table(results))
    return 0 if all(c.passed is not False for c in results) else 1


if __name__ == "__main__":
    sys.exit(guarded("proxies_vs_reference.py", main))
