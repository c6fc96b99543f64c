#!/usr/bin/env python
"""NCHW against NHWC (channels-last): speed and rank agreement of the scores, side by side in one run.

A space's CPU layout (``cpu_layout``, :mod:`zc_proxies.runs.layout`) may be
NHWC only where NHWC is faster *and* ranks architectures as NCHW does
(Spearman >= 0.999 over a sample). This script measures both, per proxy:
for a seeded sample of the space (the evaluator's sampler), each
architecture goes through the evaluator's own task (``score_arch``: its
minibatch, weights and proxy seed from its ``arch_seed``) once per layout,
the two layouts alternating which goes first. For BlockSwap (``--space
blockswap``) the candidates of ``zcbench blockswap search`` are scored with
and without ``channels_last`` (``--dataset coco``: the
detectors of ``zcbench blockswap search --dataset coco``). Printed: the machine and settings, the median
seconds per architecture in each layout and their ratio, the Spearman
correlation of the two layouts' scores and the largest relative difference.
Usage::

    python benchmarks/layout_check.py --space nb201-cifar10 --sample 100 --proxies fisher,grad_norm,snip
    python benchmarks/layout_check.py --space nb101-cifar10 --sample 30
    python benchmarks/layout_check.py --space blockswap --sample 50
    python benchmarks/layout_check.py --space blockswap --net resnet-34 --budget 8000000 --sample 20
    python benchmarks/layout_check.py --space blockswap --net resnet-34 --dataset coco --budget 10000000 --sample 10
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from zc_proxies.data import data_root
from zc_proxies.errors import RunError, guarded
from zc_proxies.runs.evaluation import (
    EvalConfig,
    arch_seed,
    network_and_batch,
    parse_proxies,
    positive,
    sample_indices,
    score_arch,
    setup_worker,
)
from zc_proxies.runs.memory import prepare_worker
from zc_proxies.runs.runner import worker_state
from zc_proxies.runs.store import ERROR, OK
from zc_proxies.score import score_detailed
from zc_proxies.spaces.spec import open_spec


def machine_line(threads: int) -> str:
    return (f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}; python {platform.python_version()}, torch {torch.__version__}, "
            f"{threads} torch thread(s), load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def _space_runs(args: argparse.Namespace, root: str) -> tuple[dict, dict]:
    space, spec = open_spec(args.space, root, None)
    proxies = parse_proxies(args.proxies)
    base = EvalConfig(space=spec.space, dataset=spec.dataset, proxies=proxies, batch_size=args.batch_size,
                      seed=args.seed, data_root=root, threads=args.threads)
    states = {layout: setup_worker(dataclasses.replace(base, layout=layout)) for layout in ("nchw", "nhwc")}
    prepare_worker()  # as the runner tunes a worker once it is set up
    indices = sample_indices(range(len(space)), args.sample, args.seed)
    seconds: dict[str, list[float]] = defaultdict(list)
    scores: dict[str, dict[str, list[float]]] = {"nchw": defaultdict(list), "nhwc": defaultdict(list)}
    if args.float64:
        scores["float64"] = defaultdict(list)
    for k, i in enumerate(indices):

        def scored(layout: str, i: int = i) -> dict[str, float]:
            out = {}
            for r in score_arch(states[layout], (i, proxies)):
                if r["status"] == ERROR:
                    raise RunError(f"architecture {i}, {layout}: {r['proxy']} failed: {r['message']}")
                out[r["proxy"]] = r["score"] if r["status"] == OK else math.nan
            return out

        _both_layouts(k, scored, seconds, scores)
        if args.float64:  # the same network, minibatch and seed in float64 (NCHW): both layouts' yardstick
            seed = arch_seed(args.seed, i)
            model, (x, y) = network_and_batch(states["nchw"], space[i], seed)
            exact = score_detailed(model.double(), (x.double(), y), list(proxies), seed=seed, consume=True)
            for name in proxies:
                res = exact[name]
                scores["float64"][name].append(float(res.value) if res.status == OK else math.nan)
    print(f"settings: {args.space}, {len(indices)} archs sampled with seed {args.seed}, batch {args.batch_size}, "
          f"proxies {', '.join(proxies)} scored together, CPU, one process")
    return seconds, scores


def _blockswap_runs(args: argparse.Namespace, root: str) -> tuple[dict, dict]:
    from zc_proxies.blockswap.networks import get_net
    from zc_proxies.blockswap.search import (
        PROXY,
        SearchJob,
        SearchSettings,
        draw_candidate,
        score_configuration,
        setup_search,
    )

    spec = get_net(args.net)
    settings = SearchSettings(net=spec.name, budget=args.budget, samples=args.sample, seed=args.seed,
                              batch_size=args.batch_size, dataset=args.dataset or spec.default_dataset)
    state = worker_state(setup_search, SearchJob(settings, root, "cpu", args.threads))
    seconds: dict[str, list[float]] = defaultdict(list)
    scores: dict[str, dict[str, list[float]]] = {"nchw": defaultdict(list), "nhwc": defaultdict(list),
                                                 "float64": defaultdict(list)}
    for i in range(args.sample):
        row, config = draw_candidate(i, settings.seed, state.spec, state.sampler, settings.classes,
                                     settings.batch_size, False)
        batch = state.source.batch(settings.batch_size, row["seed"])

        def scored(layout: str, config=config, batch=batch, seed: int = row["seed"]) -> dict[str, float]:
            return {PROXY: score_configuration(config, batch, seed, "cpu", layout)}

        _both_layouts(i, scored, seconds, scores)
        # the same network, minibatch and seed in float64 (NCHW): the yardstick of both layouts' float32 error
        model = config.build(generator=torch.Generator().manual_seed(row["seed"])).double()
        exact = score_detailed(model, (batch[0].double(), batch[1]), [PROXY], seed=row["seed"], consume=True)
        scores["float64"][PROXY].append(float(exact[PROXY].value))
    print(f"settings: BlockSwap candidates of {spec.name} within {args.budget:,} parameters (search seed "
          f"{args.seed}), {settings.dataset} images, batch {args.batch_size}, fisher_potential, CPU, one process; "
          "NHWC with exact BatchNorm statistics (zc_proxies.runs.batchnorm), as the search scores it")
    return seconds, scores


def _detection_runs(args: argparse.Namespace, root: str) -> tuple[dict, dict]:
    from zc_proxies.blockswap.detection import (
        PROXY,
        DetectionBatch,
        DetectionSearchJob,
        DetectionSearchSettings,
        build_detector,
        score_detection_configuration,
        setup_detection_search,
    )
    from zc_proxies.blockswap.search import draw_candidate

    settings = DetectionSearchSettings(net=args.net, budget=args.budget, samples=args.sample, seed=args.seed,
                                       batch_size=args.batch_size, min_size=args.min_size, max_size=args.max_size)
    state = worker_state(setup_detection_search, DetectionSearchJob(settings, root, "cpu", args.threads))
    seconds: dict[str, list[float]] = defaultdict(list)
    scores: dict[str, dict[str, list[float]]] = {"nchw": defaultdict(list), "nhwc": defaultdict(list),
                                                 "float64": defaultdict(list)}
    for i in range(args.sample):
        row, config = draw_candidate(i, settings.seed, state.spec, state.sampler, settings.num_classes,
                                     settings.batch_size, False)
        images, targets = state.data.minibatch(settings.batch_size, row["seed"])

        def scored(layout: str, config=config, images=images, targets=targets,
                   seed: int = row["seed"]) -> dict[str, float]:
            value, _ = score_detection_configuration(config, images, targets, seed, min_size=settings.min_size,
                                                     max_size=settings.max_size, layout=layout)
            return {PROXY: value}

        _both_layouts(i, scored, seconds, scores)
        # the same detector, minibatch and seed in float64 (NCHW): the yardstick of both layouts' float32 error
        detector = build_detector(config, seed=row["seed"], min_size=settings.min_size,
                                  max_size=settings.max_size).double()
        batch = DetectionBatch([im.double() for im in images],
                               [{k: v.double() if v.is_floating_point() else v for k, v in t.items()} for t in targets])
        exact = score_detailed(detector, batch, [PROXY], seed=row["seed"], consume=True)
        scores["float64"][PROXY].append(float(exact[PROXY].value))
    print(f"settings: Mask R-CNN over BlockSwap backbones of {state.spec.name} within {args.budget:,} body parameters "
          f"(search seed {args.seed}), {state.data.name}, batch {args.batch_size}, images resized to "
          f"{args.min_size}-{args.max_size}, {PROXY}, CPU, one process; NHWC: the whole detector, with exact "
          "BatchNorm statistics, as the search scores it")
    return seconds, scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="nb201-cifar10", help="a space as zcbench eval names it, or 'blockswap'")
    p.add_argument("--proxies", default="fisher")
    p.add_argument("--sample", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 (128 for blockswap)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--net", default="wrn-40-2", help="BlockSwap skeleton (default wrn-40-2)")
    p.add_argument("--budget", type=int, default=800_000, help="BlockSwap budget (default 800000)")
    p.add_argument("--dataset", default=None,
                   help="BlockSwap images (default: cifar10 for WRN, imagenet for ResNet, as the search); coco "
                        "scores Mask R-CNN detectors over ResNet backbones, as the COCO search")
    p.add_argument("--min-size", type=int, default=800, help="coco: the detector's shorter image side (800)")
    p.add_argument("--max-size", type=int, default=1333, help="coco: the detector's longest image side (1333)")
    p.add_argument("--float64", action="store_true",
                   help="also score every architecture in float64 (NCHW) and compare both layouts with it "
                        "(always on for blockswap)")
    p.add_argument("--data", default=None)
    args = p.parse_args(argv)
    positive(args.sample, "--sample")
    positive(args.threads, "--threads")
    coco = args.space == "blockswap" and args.dataset == "coco"
    if args.batch_size is None:
        args.batch_size = 2 if coco else 128 if args.space == "blockswap" else 64
    positive(args.batch_size, "--batch-size")
    torch.set_num_threads(args.threads)
    root = str(data_root(args.data))
    print(machine_line(args.threads))
    run = _detection_runs if coco else _blockswap_runs if args.space == "blockswap" else _space_runs
    seconds, scores = run(args, root)
    nchw, nhwc = statistics.median(seconds["nchw"]), statistics.median(seconds["nhwc"])
    print(f"\nmedian s/arch: NCHW {nchw:.3f}, NHWC {nhwc:.3f}; NHWC is {nchw / nhwc:.2f}x as fast\n")
    print("| proxy | Spearman NCHW vs NHWC | largest relative difference | NaN in NCHW / NHWC |")
    print("|---|---|---|---|")
    for proxy in scores["nchw"]:  # float64 is reported below
        rho, rel, _ = _agreement(scores["nchw"][proxy], scores["nhwc"][proxy])
        nan_a, nan_b = (int((~np.isfinite(np.asarray(scores[k][proxy], float))).sum()) for k in ("nchw", "nhwc"))
        print(f"| {proxy} | {rho:.5f} | {rel:.2e} | {nan_a} / {nan_b} |")
    if "float64" in scores:
        print("\n| proxy | layout | Spearman with float64 | relative error vs float64: median | largest |")
        print("|---|---|---|---|---|")
        for proxy, exact in scores["float64"].items():
            for layout in ("nchw", "nhwc"):
                rho, rel, med = _agreement(exact, scores[layout][proxy])
                print(f"| {proxy} | {layout.upper()} | {rho:.5f} | {med:.2e} | {rel:.2e} |")
    return 0


def _both_layouts(k: int, scored: Callable[[str], dict[str, float]], seconds: dict[str, list[float]],
                  scores: dict[str, dict[str, list[float]]]) -> None:
    """Time ``scored(layout)`` in both layouts and keep its scores; NCHW goes first for an even ``k``."""
    for layout in ("nchw", "nhwc") if k % 2 == 0 else ("nhwc", "nchw"):
        t0 = time.perf_counter()
        values = scored(layout)
        seconds[layout].append(time.perf_counter() - t0)
        for name, value in values.items():
            scores[layout][name].append(value)


def _agreement(reference: list[float], other: list[float]) -> tuple[float, float, float]:
    """Spearman, largest and median relative difference of ``other`` from ``reference`` where both are finite.

    NaN scores (e.g. a cell with no input path) are left out here and counted apart.
    """
    a, b = np.asarray(reference, float), np.asarray(other, float)
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return math.nan, math.nan, math.nan
    rho = spearmanr(a[both], b[both]).statistic if both.sum() > 2 else math.nan
    rel = np.abs(a[both] - b[both]) / np.maximum(np.abs(a[both]), 1e-300)
    return float(rho), float(rel.max()), float(np.median(rel))


if __name__ == "__main__":
    sys.exit(guarded("layout_check.py", main))
