#!/usr/bin/env python
"""torch's average pooling against the NHWC runs' BoxAvgPool2d, at NAS-Bench-201's map sizes, in one run.

NAS-Bench-201's ``avg_pool_3x3`` (stride 1, padding 1, padding excluded) on the
maps of its three stages at batch 64 (16 x 32 x 32, 32 x 16 x 16, 64 x 8 x 8),
channels-last, float32: the forward pass and the input gradient, each the
median of ``--repeats`` calls, torch's ``nn.AvgPool2d`` and
:class:`zc_proxies.runs.pooling.BoxAvgPool2d` one after the other, with the largest
difference of their outputs and gradients. Usage::

    python benchmarks/pooling_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from zc_proxies.errors import guarded
from zc_proxies.runs.evaluation import positive
from zc_proxies.runs.pooling import use_box_avgpool

SHAPES = ((16, 32), (32, 16), (64, 8))


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    args = p.parse_args(argv)
    positive(args.batch_size, "--batch-size")
    positive(args.repeats, "--repeats")
    if args.threads is not None:
        positive(args.threads, "--threads")
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''}".rstrip()
          + f", {os.cpu_count()} CPUs; python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch thread(s), load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"settings: avg_pool_3x3 (stride 1, padding 1, count_include_pad=False), batch {args.batch_size}, "
          f"NHWC float32, CPU, medians of {args.repeats}\n")
    native = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    box = use_box_avgpool(copy.deepcopy(native))
    print("| map (C x H x W) | forward: torch / box (ms) | input gradient: torch / box (ms) | largest difference |")
    print("|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for channels, size in SHAPES:
        shape = (args.batch_size, channels, size, size)
        x = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
        g = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
        results = {}
        for name, module in (("torch", native), ("box", box)):
            leaf = x.clone().requires_grad_(True)
            out = module(leaf)
            forward = _median_ms(lambda m=module, v=x: m(v), args.repeats)
            backward = _median_ms(lambda o=out, v=leaf, w=g: torch.autograd.grad(o, v, w, retain_graph=True),
                                  args.repeats)
            (grad,) = torch.autograd.grad(out, leaf, g)
            results[name] = (forward, backward, out.detach(), grad)
        (tf, tb, to, tg), (bf, bb, bo, bg) = results["torch"], results["box"]
        diff = max(float((to - bo).abs().max()), float((tg - bg).abs().max()))
        print(f"| {channels} x {size} x {size} | {tf:.3f} / {bf:.3f} ({tf / bf:.2f}x) | "
              f"{tb:.3f} / {bb:.3f} ({tb / bb:.2f}x) | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("pooling_speed.py", main))
