"""Scoring every proxy in one call vs one call per proxy, on NAS-Bench-201 networks.

``score(model, batch, [p1, p2, ...])`` shares one working copy per BatchNorm
mode and one forward pass for fisher, grad_norm, snip, plain, grasp, jacob_cov,
epe_nas and naswot. This script measures what that saves: for a seeded sample
of NB201 architectures (batch of real CIFAR-10 train images), the time of one
joint call against the sum of the single-proxy calls, alternating which goes
first, as wall time and as this process's CPU time. It prints the machine,
the settings, per-architecture times and the ratio joint / separate.

Architectures, minibatches and initialisations come from the experiment
engine, as ``zcbench eval --space nb201-cifar10 --sample N --seed S`` has
them: the sample is the evaluator's (seed stream ``"sample"``), and each
architecture's minibatch (the data layer's, with training augmentation),
weights and proxy randomness use its ``arch_seed``.

Run::

    python benchmarks/proxies_shared_speed.py --data ../shared/data --archs 5 --repeats 3 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from zc_proxies import score
from zc_proxies.data import data_root
from zc_proxies.errors import guarded
from zc_proxies.runs.evaluation import EvalConfig, arch_seed, parse_proxies, positive, sample_indices, setup_worker
from zc_proxies.runs.runner import worker_state
from zc_proxies.runs.seeding import check_seed


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--archs", type=int, default=5, help="NB201 architectures to time (default: 5)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per architecture (default: 3)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--proxies", default="all", help="comma-separated, or 'all' registered (default)")
    args = p.parse_args(argv)
    check_seed(args.seed, "--seed")
    for option, value in (("--archs", args.archs), ("--repeats", args.repeats), ("--batch-size", args.batch_size)):
        positive(value, option)
    if args.threads is not None:
        positive(args.threads, "--threads")
    if args.threads:
        torch.set_num_threads(args.threads)
    root = data_root(args.data)
    names = list(parse_proxies(args.proxies))
    # The evaluator's worker state: the space and the data layer's CIFAR-10 training images.
    config = EvalConfig(space="nb201", dataset="cifar10", proxies=tuple(names), batch_size=args.batch_size,
                        seed=args.seed, data_root=str(root), threads=args.threads)
    state = worker_state(setup_worker, config)
    space = state.space
    indices = sample_indices(range(len(space)), args.archs, args.seed)
    print(f"machine: {platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads | python {platform.python_version()}")
    print(f"settings: nb201 cifar10, {args.archs} archs (seed {args.seed}), batch {args.batch_size} CIFAR-10 "
          f"train images, {args.repeats} repeats, median per arch; proxies ({len(names)}): {', '.join(names)}")
    joint_wall, sep_wall, joint_cpu, sep_cpu = [], [], [], []
    for index in indices:
        s = arch_seed(args.seed, index)  # as the evaluator's task: minibatch, weights and proxy seed
        batch = state.source.batch(args.batch_size, s, config.augment, config.sampling)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            model = space.build(space[index], state.num_classes)
        score(model, batch, names, seed=s)  # warm-up (allocator, oneDNN primitives)
        jw, jc, sw, sc = [], [], [], []
        for rep in range(args.repeats):
            order = ("joint", "separate") if rep % 2 == 0 else ("separate", "joint")
            for which in order:
                if which == "joint":
                    w, c = timed(lambda m=model, b=batch, s=s: score(m, b, names, seed=s))
                    jw.append(w)
                    jc.append(c)
                else:
                    parts = [timed(lambda n=n, m=model, b=batch, s=s: score(m, b, n, seed=s)) for n in names]
                    sw.append(sum(w for w, _ in parts))
                    sc.append(sum(c for _, c in parts))
        joint_wall.append(statistics.median(jw))
        sep_wall.append(statistics.median(sw))
        joint_cpu.append(statistics.median(jc))
        sep_cpu.append(statistics.median(sc))
        print(f"  arch {index:5d}: joint {joint_wall[-1]:7.2f} s wall {joint_cpu[-1]:7.2f} s cpu | one by one "
              f"{sep_wall[-1]:7.2f} s wall {sep_cpu[-1]:7.2f} s cpu | ratio {joint_wall[-1] / sep_wall[-1]:.2f} "
              f"({space[index]})")
    print(f"total: joint {sum(joint_wall):.1f} s wall / {sum(joint_cpu):.1f} s cpu; one by one {sum(sep_wall):.1f} s "
          f"wall / {sum(sep_cpu):.1f} s cpu")
    print(f"ratio joint / one-by-one: {sum(joint_wall) / sum(sep_wall):.3f} (wall), "
          f"{sum(joint_cpu) / sum(sep_cpu):.3f} (cpu)")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("proxies_shared_speed.py", main))
