#!/usr/bin/env python
"""How fast ``fisher`` scores NAS-Bench-201 (or NB101) architectures, beside the network's own cost and a FLOP floor.

For a seeded sample of architectures (the evaluator's sampler, as
``zcbench eval --space nb201-cifar10 --sample N --seed S`` draws it), each one
goes through the evaluator's own task (``score_arch``: minibatch of 64 CIFAR-10
training images and build, both seeded by the architecture's ``arch_seed``,
one ``score`` call, in the layout ``zcbench eval`` uses) and is timed. Beside
it, the bare network: the same build, minibatch and layout, one forward pass
and one backward pass to the inputs (every activation's gradient, which is
what Fisher needs; no weight gradients), timed on the same architectures in
the same run, before the evaluator's task on every other architecture and
after it on the rest: an architecture's first pass also pays for the first
touch of memory that no earlier, smaller network used (page faults; up to 5x
the pass itself on an NB101 network larger than any before it), so a pass
that always came second would look cheaper than it is. The floor is what the arithmetic alone would
cost: the conv and linear multiply-accumulates of the forward pass (counted
with forward hooks) times 2 FLOPs, times 2 again for the backward pass to the
layer inputs that the proxy needs (no weight gradients), divided by the rate
of a large float32 matmul measured in the same run with the same threads.
(The stem conv's input gradient is not needed, so the floor is a slight
over-estimate of the work; BN, ReLU, pooling and the proxy's own arithmetic
are not counted.) Usage::

    python benchmarks/speed_nb201.py --data ../shared/data --sample 20 --threads 1
    python benchmarks/speed_nb201.py --space nb101-cifar10 --sample 10 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

from zc_proxies.data import data_root
from zc_proxies.errors import ConfigError, RunError, guarded
from zc_proxies.runs.evaluation import (
    EvalConfig,
    WorkerState,
    arch_seed,
    network_and_batch,
    parse_proxies,
    positive,
    sample_indices,
    score_arch,
    setup_worker,
)
from zc_proxies.runs.layout import LAYOUTS, resolve_layout
from zc_proxies.runs.runner import worker_state
from zc_proxies.runs.seeding import check_seed
from zc_proxies.runs.store import OK
from zc_proxies.spaces.spec import open_spec


def matmul_rate(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best observed float32 matmul rate in FLOP/s (n x n by n x n)."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    a @ b  # warm up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d and Linear call in one forward pass on ``x``."""
    total = 0

    def hook(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_out = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_out = module.in_features
        total += output.numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def build_network(state: WorkerState, index: int, seed: int):
    """Architecture ``index``'s network and minibatch, as the evaluator's task builds them."""
    model, (x, y) = network_and_batch(state, state.space[index], seed)
    return model, x, y


def bare_network(state: WorkerState, index: int, seed: int) -> float:
    """Seconds of :func:`bare_pass` on architecture ``index``'s network and minibatch."""
    return bare_pass(*build_network(state, index, seed))


def bare_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Seconds of one train-mode forward pass and one backward pass of the cross-entropy to the inputs."""
    model.train()
    x = x.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    loss = nn.functional.cross_entropy(model(x), y)
    torch.autograd.grad(loss, x)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201-cifar10", help="a space as zcbench eval names it")
    p.add_argument("--proxies", default="fisher", help="comma-separated, scored together (default fisher)")
    p.add_argument("--versus", default=None, metavar="PROXIES",
                   help="also time these proxies (scored together) on the same archs, alternating, and print the "
                        "ratio, e.g. --proxies fisher --versus fisher,grad_norm,snip,synflow,jacob_cov")
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="as zcbench eval --layout (default auto)")
    p.add_argument("--sample", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--warmup", type=int, default=2, help="architectures scored first and not timed")
    p.add_argument("--data", default=None)
    args = p.parse_args(argv)
    check_seed(args.seed, "--seed")
    positive(args.sample, "--sample")
    positive(args.batch_size, "--batch-size")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.threads is not None:
        positive(args.threads, "--threads")
    root = data_root(args.data)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''}".rstrip()
          + f", {os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, {threads} torch thread(s), "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    space, spec = open_spec(args.space, root, None)
    proxies = parse_proxies(args.proxies)
    versus = parse_proxies(args.versus) if args.versus else ()
    layout = resolve_layout(args.layout, space, "cpu", proxies + versus)  # the layout a run of both would take
    print(f"settings: {', '.join(proxies)}, {args.space}, batch {args.batch_size}, {args.sample} archs sampled "
          f"with seed {args.seed} (+{args.warmup} warm-up), {layout.upper()}, CPU, one process")

    config = EvalConfig(space=spec.space, dataset=spec.dataset, proxies=proxies, batch_size=args.batch_size,
                        seed=args.seed, data_root=str(root), threads=args.threads, layout=layout)
    state = worker_state(setup_worker, config)  # as the runner sets a worker up, process tuning included
    rate = matmul_rate(threads)
    indices = sample_indices(range(len(state.space)), args.sample + args.warmup, args.seed)
    warm, timed = indices[:args.warmup], indices[args.warmup:]
    for i in warm:
        score_arch(state, (i, proxies))

    if versus:
        for i in warm:
            score_arch(state, (i, versus))
    wall, proxy_s, bare_s, floor_s, macs_all, versus_s = [], [], [], [], [], []
    for k, i in enumerate(timed):
        s = arch_seed(args.seed, i)  # the same minibatch and weights as the evaluator task
        if k % 2:  # alternate which comes first: an architecture's first pass also pays its memory's first touch
            bare_s.append(bare_network(state, i, s))
        if versus and k % 2:  # alternate which goes first
            t0 = time.perf_counter()
            score_arch(state, (i, versus))
            versus_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rows = score_arch(state, (i, proxies))
        wall.append(time.perf_counter() - t0)
        if versus and not k % 2:
            t0 = time.perf_counter()
            score_arch(state, (i, versus))
            versus_s.append(time.perf_counter() - t0)
        proxy_s.append(sum(r["seconds"] for r in rows))
        for r in rows:
            if r["status"] != OK:
                raise RunError(f"architecture {i}: {r['proxy']} gave status {r['status']}: {r['message']}")
        if not k % 2:
            bare_s.append(bare_network(state, i, s))
        model, x, _ = build_network(state, i, s)
        macs = forward_macs(model, x)
        macs_all.append(macs)
        floor_s.append(2 * 2 * macs / rate)  # forward + input-gradient backward, 2 FLOPs per MAC

    n = len(timed)
    total_wall, total_floor, total_bare = sum(wall), sum(floor_s), sum(bare_s)
    print(f"matmul rate (float32, 2048^3, best of 5): {rate / 1e9:.1f} GFLOP/s")
    print(f"conv+linear forward MACs per arch at batch {args.batch_size}: mean {statistics.mean(macs_all) / 1e9:.2f} G "
          f"(min {min(macs_all) / 1e9:.2f}, max {max(macs_all) / 1e9:.2f})")
    print("")
    print("| measure | archs/s | s/arch (mean) | s/arch (median) |")
    print("|---|---|---|---|")
    print(f"| evaluator task (minibatch + build + score) | {n / total_wall:.3f} | {total_wall / n:.3f} "
          f"| {statistics.median(wall):.3f} |")
    if versus:
        print(f"| evaluator task with {', '.join(versus)} | {n / sum(versus_s):.3f} | {sum(versus_s) / n:.3f} "
              f"| {statistics.median(versus_s):.3f} |")
    print(f"| score() call alone | {n / sum(proxy_s):.3f} | {sum(proxy_s) / n:.3f} | {statistics.median(proxy_s):.3f} |")
    print(f"| bare network: forward + backward to the inputs | {n / total_bare:.3f} | {total_bare / n:.3f} "
          f"| {statistics.median(bare_s):.3f} |")
    print(f"| FLOP floor (fwd + input-grad bwd at the matmul rate) | {n / total_floor:.3f} | {total_floor / n:.3f} "
          f"| {statistics.median(floor_s):.3f} |")
    print("")
    if versus:
        print(f"{', '.join(versus)} / {', '.join(proxies)}: {sum(versus_s) / total_wall:.2f}x (totals), "
              f"{statistics.median(versus_s) / statistics.median(wall):.2f}x (medians)")
    print(f"evaluator task time / FLOP floor: {total_wall / total_floor:.1f}x; "
          f"score() / floor: {sum(proxy_s) / total_floor:.1f}x; score() / bare network: "
          f"{sum(proxy_s) / total_bare:.2f}x (medians {statistics.median(proxy_s) / statistics.median(bare_s):.2f}x)")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(guarded("speed_nb201.py", main))
