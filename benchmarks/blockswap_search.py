"""Time BlockSwap's search (WRN-40-2, 800k budget) beside the paper's "under 5 minutes on one GPU".

Runs ``zc_proxies.blockswap.search`` for ``--samples`` candidates (default 1,000,
as in the paper) on real CIFAR-10 training images and prints the machine, the
settings, the time split (data loading, sampling, building + scoring), the rate
and the time extrapolated to 1,000 candidates, next to the paper's claim
(Turner et al., ICLR 2020: "under 5 minutes on a single GPU for CIFAR-10",
i.e. at most 0.3 s per candidate).

The search runs on the experiment engine exactly as ``zcbench blockswap search``
does (result store in a temporary folder, the runner in this process, the
data layer's images): candidate ``i`` is drawn, initialised and given its
minibatch from ``derive_seed(seed, "candidate", i)``. The sampling line times
the same draws (the rejection sampler alone) before the search.

    python benchmarks/blockswap_search.py --samples 100 --data DIR [--device cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from zc_proxies.blockswap import SearchSettings, get_net, parse_budget, search
from zc_proxies.blockswap.search import Sampler, load_images
from zc_proxies.data import data_root
from zc_proxies.errors import ConfigError, guarded
from zc_proxies.runs.device import check_device
from zc_proxies.runs.layout import LAYOUTS, resolve_layout
from zc_proxies.runs.seeding import check_seed, derive_seed

PAPER_SECONDS = 5 * 60  # "under 5 minutes on a single GPU" for 1,000 candidates on CIFAR-10


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=1000, help="candidates to score (default 1000)")
    p.add_argument("--net", default="wrn-40-2")
    p.add_argument("--budget", default="800k")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--shared-batch", action="store_true")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="as zcbench blockswap search --layout (default auto: NHWC for WRNs on the CPU)")
    args = p.parse_args(argv)

    check_seed(args.seed, "--seed")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        budget = parse_budget(args.budget)
    except ValueError as exc:
        raise ConfigError(f"--budget: {exc}") from None
    settings = SearchSettings(net=args.net, budget=budget, samples=args.samples, seed=args.seed,
                              batch_size=args.batch_size, shared_batch=args.shared_batch)
    device = torch.device(check_device(args.device))
    root = data_root(args.data)

    print("== BlockSwap search benchmark ==")
    print(f"machine : {platform.node()} | {platform.platform()} | {_cpu_name()} | {os.cpu_count()} logical CPUs")
    if device.type == "cuda":
        print(f"device  : {torch.cuda.get_device_name(device)}")
    else:
        print("device  : cpu")
    print(f"software: python {platform.python_version()} | torch {torch.__version__} | "
          f"threads {torch.get_num_threads()} | load average {os.getloadavg()[0]:.2f} at start")
    print(f"settings: net {settings.net} | budget {budget:,} +- {settings.tolerance:.1%} | samples {args.samples} | "
          f"batch {settings.batch_size} | seed {settings.seed} | "
          f"{'shared minibatch' if settings.shared_batch else 'a minibatch per candidate'} | "
          f"{resolve_layout(args.layout, get_net(settings.net), str(device)).upper()} | "
          f"pool {len(settings.pool)} block types")

    t0 = time.perf_counter()
    source = load_images(settings, root)
    t_data = time.perf_counter() - t0
    data = source.data

    sampler = Sampler(get_net(settings.net), settings.pool, settings.classes, budget, settings.tolerance,
                      settings.max_draws)
    t0 = time.perf_counter()
    draws = [sampler.sample(derive_seed(settings.seed, "candidate", i))[2] for i in range(args.samples)]
    t_sample = time.perf_counter() - t0

    # The search loads its images itself (a check before it starts, then its worker's setup in this process);
    # the candidate times below are taken inside each task (draw + minibatch + build + score), without those loads.
    cpu0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        result = search(settings, data_dir=root, store=Path(tmp) / "candidates.jsonl", device=str(device),
                        threads=args.threads, layout=args.layout, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cpu = time.process_time() - cpu0
    per = [r["seconds"] for r in result.rows]
    steady = per[1:] if len(per) > 1 else per
    total = sum(per)
    rate = args.samples / total
    extrapolated = 1000 * statistics.mean(steady)

    print(f"data    : {len(data):,} {settings.dataset} training images ({source.name}) loaded in {t_data:.2f} s")
    print(f"sampling: {args.samples} configurations in {t_sample:.2f} s "
          f"(mean {statistics.mean(draws):.0f} draws each: acceptance {args.samples / sum(draws):.1%})")
    print(f"scoring : first candidate {per[0]:.2f} s (warm-up); then mean {statistics.mean(steady):.3f} s, "
          f"median {statistics.median(steady):.3f} s, min {min(steady):.3f} s, max {max(steady):.3f} s")
    print(f"total   : {args.samples} candidates in {total:.1f} s = {rate:.3f} candidates/s "
          f"(sum of the candidate times; the engine's wall time {result.seconds:.1f} s also holds its image "
          f"load and the store)")
    print(f"cpu time: {cpu / args.samples:.3f} s of process CPU per candidate over {torch.get_num_threads()} "
          f"thread(s) (with --threads 1 about the wall time on an otherwise idle core; includes the search's "
          f"image load)")
    print(f"1,000   : about {extrapolated:.0f} s = {extrapolated / 60:.1f} min extrapolated "
          f"(mean steady candidate time x 1,000)")
    print(f"paper   : under {PAPER_SECONDS} s (5 min) on one GPU, <= {PAPER_SECONDS / 1000:.2f} s per candidate; "
          f"this run is {extrapolated / PAPER_SECONDS:.1f}x that")
    print(f"best    : index {result.best['index']}, {result.best['params']:,} parameters, "
          f"fisher_potential {result.best['score']:.6g}: {', '.join(result.best['blocks'])}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("blockswap_search.py", main))
