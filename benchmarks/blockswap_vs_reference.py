#!/usr/bin/env python
"""Our BlockSwap candidate beside the paper's own code (BayesWatch/pytorch-blockswap), timed in one process.

The paper's search (``model_generator.py`` of the authors' repository) scores
each candidate by building a masked ``WideResNet(40, 2)`` with the sampled
block types, passing one image through it to create the block masks, and one
forward + backward pass of a 128-image minibatch, from which its ``Pruner``
collects the Fisher potential of every block. This script drives the
repository's own ``models`` and ``utils`` modules (imported from ``--reference``,
a checkout of it; nothing of it is copied here) through those three steps,
and times them per candidate beside our candidate task (``score_candidate``,
what every ``zcbench blockswap search`` worker runs: draw, minibatch, build,
score), alternating the two on the same machine, threads and images.

Each side scores its own candidates under the same nominal budget (800k by
default, +-2.5%). They are not the same networks: the reference's parameter
arithmetic counts each block type once per stage, so its candidates really hold
fewer parameters than the budget, and fewer multiply-accumulates. The script
counts both (parameters as built; MACs per image from forward hooks on every
Conv2d and Linear, outside the timed region) and prints them, so that the
comparison is read per candidate and per MAC.

    python benchmarks/blockswap_vs_reference.py --reference /path/to/pytorch-blockswap --samples 20 --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_nb201 import forward_macs  # this folder's script, beside this one
from torch import nn

from zc_proxies.blockswap import SearchSettings, get_net, parse_budget
from zc_proxies.blockswap.networks import count_parameters
from zc_proxies.blockswap.search import SearchJob, draw_candidate, score_candidate, setup_search
from zc_proxies.data import data_root
from zc_proxies.errors import ConfigError, DataError, guarded
from zc_proxies.runs.layout import LAYOUTS, resolve_layout
from zc_proxies.runs.runner import worker_state
from zc_proxies.runs.seeding import check_seed, derive_seed
from zc_proxies.runs.store import OK

#: The reference's WideResNet: depth 40, widening 2, 18 blocks of one sampled type each.
DEPTH, WIDTH, BLOCKS = 40, 2, 18


def load_reference(path: Path) -> tuple[Any, Any]:
    """The reference checkout's ``models`` and ``utils`` modules (its own code, imported as is)."""
    if not (path / "models" / "wide_resnet.py").is_file() or not (path / "utils.py").is_file():
        raise DataError(f"--reference {path}: not a pytorch-blockswap checkout (models/wide_resnet.py and utils.py "
                        f"expected)")
    for name in ("models", "utils"):
        if name in sys.modules:
            raise ConfigError(f"a module named {name!r} is already imported; the reference's cannot be loaded")
    sys.path.insert(0, str(path))
    try:
        return importlib.import_module("models"), importlib.import_module("utils")
    finally:
        sys.path.remove(str(path))


class ReferenceSampler:
    """The reference's candidates: 18 block types drawn uniformly, kept when its own count is in the window.

    Its count adds, per block position, the parameters of a one-block
    ``NetworkBlock`` of that type with the position's channels (stride 1), plus
    1,978 for the stem and head, as its ``generate_archs`` does.
    """

    def __init__(self, models: Any, utils: Any, budget: int, tolerance: float, seed: int) -> None:
        self.options = list(utils.string_to_conv.values())
        skeleton = models.WideResNet(DEPTH, WIDTH)
        shapes = [(sub.in_channels, sub.out_channels)
                  for stage in (skeleton.block1, skeleton.block2, skeleton.block3)
                  for block in stage for sub in block.layer]
        self.table = np.array([[utils.get_no_params(models.NetworkBlock(1, i, o, 1, convs=[c, c]))
                                for i, o in shapes] for c in self.options])
        self.low, self.high = budget * (1 - tolerance), budget * (1 + tolerance)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> list[Any]:
        """One candidate: the block classes, position by position."""
        positions = np.arange(BLOCKS)
        while True:
            choice = self.rng.integers(len(self.options), size=BLOCKS)
            counted = int(self.table[choice, positions].sum()) + 1978
            if self.low < counted < self.high:
                return [self.options[c] for c in choice]


def reference_candidate(models: Any, utils: Any, convs: Sequence[Any], batch: tuple[torch.Tensor, torch.Tensor]
                        ) -> tuple[float, nn.Module]:
    """The reference's per-candidate work: build, one-image mask pass, Fisher of one minibatch; its score."""
    net = models.WideResNet(DEPTH, WIDTH, masked=True, convs=list(convs))
    net.eval()
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 32))  # creates the block masks
    pruner = utils.Pruner()
    pruner._get_masks(net)
    net.train()
    x, y = batch
    out, _ = net(x)
    nn.functional.cross_entropy(out, y).backward()
    fisher = pruner.go_fish(net)
    score = float(fisher.abs().sum())  # the per-block sums, summed: every mask entry is 1
    for m in net.modules():  # as its script does: the blocks keep their last activation
        if hasattr(m, "act"):
            del m.act
    return score, net


def macs_per_image(model: nn.Module, x: torch.Tensor) -> float:
    """Conv2d and Linear multiply-accumulates of one forward pass, per image."""
    return forward_macs(model, x) / x.shape[0]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="a checkout of BayesWatch/pytorch-blockswap")
    p.add_argument("--samples", type=int, default=20, help="timed candidates per side (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="candidates per side scored first and not timed")
    p.add_argument("--budget", default="800k")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="ours: as zcbench blockswap search --layout (default auto: NHWC on the CPU)")
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    args = p.parse_args(argv)
    check_seed(args.seed, "--seed")
    for name in ("samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        budget = parse_budget(args.budget)
    except ValueError as exc:
        raise ConfigError(f"--budget: {exc}") from None
    models, utils = load_reference(Path(args.reference))
    root = data_root(args.data)
    settings = SearchSettings(net="wrn-40-2", budget=budget, samples=args.samples + args.warmup, seed=args.seed,
                              batch_size=args.batch_size)
    layout = resolve_layout(args.layout, get_net(settings.net), "cpu")
    state = worker_state(setup_search, SearchJob(settings, str(root), "cpu", args.threads, layout))
    sampler = ReferenceSampler(models, utils, budget, settings.tolerance, derive_seed(args.seed, "sample"))

    print("== BlockSwap candidate: ours beside the paper's code ==")
    print(f"machine : {platform.node()} | {platform.platform()} | {os.cpu_count()} logical CPUs | "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"software: python {platform.python_version()} | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()}")
    print(f"settings: WRN-{DEPTH}-{WIDTH} | budget {budget:,} +- {settings.tolerance:.1%} | batch {args.batch_size} | "
          f"{args.samples} candidates per side (+{args.warmup} warm-up), alternating | CPU | ours {layout.upper()}, "
          f"the reference NCHW (its code) | "
          f"reference {args.reference}")

    ours_s, ref_s, ours_macs, ref_macs, ours_params, ref_params = [], [], [], [], [], []
    for k in range(args.samples + args.warmup):
        timed = k >= args.warmup
        batch = state.source.batch(args.batch_size, derive_seed(args.seed, "candidate", k))
        convs = sampler.sample()
        order = ("ours", "ref") if k % 2 else ("ref", "ours")
        for side in order:
            t0 = time.perf_counter()
            if side == "ours":
                rows = score_candidate(state, k)
                elapsed = time.perf_counter() - t0
                if rows[0].get("status") != OK:
                    raise DataError(f"our candidate {k} failed: {rows[0].get('message')}")
                if timed:
                    ours_s.append(elapsed)
            else:
                _, net = reference_candidate(models, utils, convs, batch)
                elapsed = time.perf_counter() - t0
                if timed:
                    ref_s.append(elapsed)
                    ref_params.append(utils.get_no_params(net))
                    ref_macs.append(macs_per_image(net, batch[0]))
        if timed:
            _, config = draw_candidate(k, settings.seed, state.spec, state.sampler, settings.classes,
                                       settings.batch_size, False)
            model = config.build(generator=torch.Generator().manual_seed(0))
            ours_params.append(count_parameters(model))
            ours_macs.append(macs_per_image(model, batch[0]))

    def line(name: str, secs: list[float], params: list[int], macs: list[float]) -> str:
        med = statistics.median(secs)
        return (f"| {name} | {med:.3f} | {statistics.mean(secs):.3f} | {min(params) / 1e3:.0f}K-{max(params) / 1e3:.0f}K "
                f"| {statistics.mean(macs) / 1e6:.0f} M ({min(macs) / 1e6:.0f}-{max(macs) / 1e6:.0f}) "
                f"| {med / statistics.mean(macs) * 1e9:.2f} |")

    print()
    print("| code | s / candidate (median) | s (mean) | parameters as built | MACs / image, mean (range) "
          "| median s per G MACs/image |")
    print("|---|---|---|---|---|---|")
    print(line("zcbench (score_candidate)", ours_s, ours_params, ours_macs))
    print(line("pytorch-blockswap (build + mask pass + Fisher)", ref_s, ref_params, ref_macs))
    print()
    print(f"ours / reference: {statistics.median(ours_s) / statistics.median(ref_s):.2f}x per candidate (medians), "
          f"{sum(ours_s) / sum(ref_s):.2f}x (totals); per MAC: "
          f"{(statistics.median(ours_s) / statistics.mean(ours_macs)) / (statistics.median(ref_s) / statistics.mean(ref_macs)):.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("blockswap_vs_reference.py", main))
