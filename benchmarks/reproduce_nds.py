#!/usr/bin/env python
"""Every proxy on the NDS ImageNet sweeps: rank correlation with the trained networks' accuracy.

For each sweep (by default the five cell spaces' ImageNet sweeps and
ResNeXt-A/B, every record of each) every requested proxy is scored through the
evaluator (``zcbench eval``'s engine: one resumable store per sweep under
``--out``, so a rerun continues where it stopped) on one minibatch per
architecture of ImageNet images at 224 px (the 250-image sample under the data
root here; any ImageFolder tree for users), and Spearman's rho and Kendall's
tau against ``100 - test_ep_top1[-1]`` are computed with bootstrap 95%
intervals. The combined table (proxies x sweeps) and the mean seconds per
architecture are printed and written as ``nds_spearman.md``, ``nds_kendall.md``
and ``nds.csv`` under ``--out``, with the machine and settings. Usage::

    python benchmarks/reproduce_nds.py --proxies all --workers 2
    python benchmarks/reproduce_nds.py --proxies fisher --sweeps nds-darts-imagenet --sample 20
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from zc_proxies.errors import ConfigError, guarded
from zc_proxies.runs.evaluation import EvalRequest, parse_proxies, plan_evaluation, run_evaluation
from zc_proxies.runs.layout import LAYOUTS
from zc_proxies.runs.store import read_store
from zc_proxies.spaces.nds import SWEEPS

#: The seven main sweeps: the five cell spaces and ResNeXt-A/B, all on ImageNet.
MAIN = ("nds-darts-imagenet", "nds-enas-imagenet", "nds-nasnet-imagenet", "nds-pnas-imagenet",
        "nds-amoeba-imagenet", "nds-resnext-a-imagenet", "nds-resnext-b-imagenet")


def machine_line(workers: int, threads: int) -> str:
    return (f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}; python {platform.python_version()}, torch {torch.__version__}, "
            f"{workers} worker(s) x {threads} torch thread(s)"
            + (f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))


def seconds_per_arch(rows: list[dict], seed: int) -> float:
    """Mean over architectures of the summed proxy seconds (all proxies of one architecture are scored together)."""
    per: dict[int, float] = defaultdict(float)
    for r in rows:
        if int(r["seed"]) == seed and r.get("seconds") is not None:
            per[int(r["index"])] += float(r["seconds"])
    return float(np.mean(list(per.values()))) if per else math.nan


def _f(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def cell(res) -> str:
    """``rho [lo, hi]`` for a table cell."""
    return f"{_f(res.statistic)} [{_f(res.ci_low)}, {_f(res.ci_high)}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxies", default="all", help="comma-separated proxy names or 'all' (default: all)")
    p.add_argument("--sweeps", default=",".join(MAIN), help="comma-separated NDS spaces (default: the 7 main)")
    p.add_argument("--sample", type=int, default=None, help="score N records per sweep (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="as zcbench eval --layout (default auto: NHWC on the CPU, NCHW with jacob_cov or epe_nas)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default="benchmark-results/reproduce_nds")
    p.add_argument("--data", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    proxies = parse_proxies(args.proxies)
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()]
    unknown = [s for s in sweeps if s not in SWEEPS]
    if unknown:
        raise ConfigError(f"--sweeps: no NDS space {', '.join(map(repr, unknown))} (known: {', '.join(SWEEPS)})")
    requests = [EvalRequest(space=s, proxy=",".join(proxies), sample=args.sample, seed=args.seed,
                            batch_size=args.batch_size, workers=args.workers, threads=args.threads,
                            device=args.device, layout=args.layout, out=str(Path(args.out) / s), data=args.data,
                            bootstrap=args.bootstrap, plot=False) for s in sweeps]
    plans = [plan_evaluation(r) for r in requests]  # every sweep checked before anything is scored
    header = [machine_line(args.workers, args.threads),
              f"settings: {len(proxies)} proxies ({', '.join(proxies)}); batch {args.batch_size} of "
              f"{plans[0].source.name} images ({plans[0].source.data.transform()}); seed {args.seed}; "
              f"device {plans[0].config.device}, {plans[0].config.layout.upper()}; bootstrap {args.bootstrap}"]
    print("\n".join(header), flush=True)
    results = {}
    wall = {}
    for plan in plans:
        t0 = time.perf_counter()
        for notice in plan.notices:
            print(f"  warning: {notice}", flush=True)
        outcome = run_evaluation(plan, progress=not args.quiet)
        wall[plan.spec.text] = time.perf_counter() - t0
        rows = [r for r in outcome.report.table if r.split == "test"]
        _, stored = read_store(plan.path)
        results[plan.spec.text] = (rows, seconds_per_arch(stored, args.seed), len(plan.indices))
        print(f"{plan.spec.text}: {len(plan.indices)} archs, {outcome.summary.scored} scored now, "
              f"{outcome.summary.skipped} from the store, {wall[plan.spec.text]:.0f} s", flush=True)
    write_tables(Path(args.out), header, proxies, results, wall)
    return 0


def write_tables(out: Path, header: list[str], proxies: tuple[str, ...], results: dict, wall: dict) -> None:
    """Print and write the Spearman and Kendall tables (proxies x sweeps) and the long CSV."""
    sweeps = list(results)
    out.mkdir(parents=True, exist_ok=True)
    by = {(s, r.proxy): r for s, (rows, _, _) in results.items() for r in rows}
    for stat in ("spearman", "kendall"):
        lines = ["| proxy | " + " | ".join(s.removeprefix("nds-").removesuffix("-imagenet") for s in sweeps) + " |",
                 "|---|" + "---|" * len(sweeps)]
        for proxy in proxies:
            cells = [cell(getattr(by[(s, proxy)], stat)) if (s, proxy) in by else "–" for s in sweeps]
            lines.append(f"| {proxy} | " + " | ".join(cells) + " |")
        lines.append("| n (NaN/failed) | " + " | ".join(
            f"{results[s][2]} ({sum(by[(s, p)].spearman.n_nan + by[(s, p)].spearman.n_error for p in proxies if (s, p) in by)})"
            for s in sweeps) + " |")
        lines.append("| s / arch (all proxies) | " + " | ".join(f"{results[s][1]:.1f}" for s in sweeps) + " |")
        lines.append("| wall time of this run (s) | " + " | ".join(f"{wall[s]:.0f}" for s in sweeps) + " |")
        text = "\n".join(lines) + "\n"
        (out / f"nds_{stat}.md").write_text("\n".join(f"<!-- {h} -->" for h in header) + "\n\n" + text)
        print(f"\n{stat.capitalize()} with 100 - final top-1 error [bootstrap 95% CI]:\n{text}", flush=True)
    with open(out / "nds.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sweep", "proxy", "n", "n_nan", "n_error", "spearman", "spearman_ci_low",
                         "spearman_ci_high", "kendall", "kendall_ci_low", "kendall_ci_high", "seconds_per_arch"])
        for s, (rows, secs, _) in results.items():
            for r in rows:
                writer.writerow([s, r.proxy, r.spearman.n, r.spearman.n_nan, r.spearman.n_error, r.spearman.statistic,
                                 r.spearman.ci_low, r.spearman.ci_high, r.kendall.statistic, r.kendall.ci_low,
                                 r.kendall.ci_high, secs])
    print(f"wrote {out / 'nds_spearman.md'}, {out / 'nds_kendall.md'}, {out / 'nds.csv'}")


if __name__ == "__main__":
    raise SystemExit(guarded("reproduce_nds", main))
