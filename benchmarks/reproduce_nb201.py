#!/usr/bin/env python
"""Reproduce NAS-Bench-Suite-Zero's NAS-Bench-201 rank correlations with our proxies.

For each dataset (CIFAR-10, CIFAR-100, ImageNet16-120) a seeded sample of
architectures (1,000 by default, drawn from all 15,625) is scored at batch
size 64 with the evaluator and its resumable store (a rerun continues where it
stopped), and the Spearman correlation with validation accuracy is printed
beside

* the value NAS-Bench-Suite-Zero (Krishnakumar et al., NeurIPS 2022 Datasets
  and Benchmarks) reports for 1,000 architectures at batch 64 (``fisher`` only:
  0.50 / 0.54 / 0.48),
* the same correlation computed here from the published per-architecture scores
  in ``<data>/nb201/reference_scores/``, over the whole reference set and over
  this sample's architectures that the reference set holds (the like-for-like
  published value for every proxy), and
* the agreement (Spearman) of our per-architecture scores with the published
  ones on the architectures both have.

With ``--parity N`` (default 300) a seeded N-architecture sample of the CIFAR-10
reference file is scored too (same store, same settings) and our scores are
correlated with the published ones: the check that we compute the same proxy.
Both samples come from the engine's sampler (``sample_indices``, seed stream
``"sample"``): the main one is the sample ``zcbench eval --space nb201-<dataset>
--sample N --seed S`` scores, the parity one is drawn over the reference file's
architectures (the same sample as ``proxies_vs_reference.py --sample N``).
Every architecture's minibatch and initialisation come from the evaluator's
``arch_seed``.

Minibatch stand-ins (CIFAR-100 and ImageNet16-120 training images are not in
the shared data) are named in the table. Usage::

    python benchmarks/reproduce_nb201.py --data ../shared/data --workers 2
    python benchmarks/reproduce_nb201.py --proxies all --sample 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from zc_proxies.data import data_root
from zc_proxies.errors import ConfigError, guarded
from zc_proxies.proxies import get_proxy
from zc_proxies.report import summarise
from zc_proxies.runs.device import check_device
from zc_proxies.runs.evaluation import (
    EvalConfig,
    candidate_indices,
    evaluate,
    load_source,
    open_store,
    parse_proxies,
    positive,
    sample_indices,
)
from zc_proxies.runs.runner import Runner
from zc_proxies.runs.seeding import check_seed
from zc_proxies.runs.store import OK
from zc_proxies.spaces.spec import open_spec
from zc_proxies.stats import spearman

# Spearman with validation accuracy, 1,000 architectures, batch 64, as NAS-Bench-Suite-Zero reports it.
PAPER = {"fisher": {"cifar10": 0.50, "cifar100": 0.54, "imagenet16": 0.48}}
SPECS = {"cifar10": "nb201-cifar10", "cifar100": "nb201-cifar100", "imagenet16": "nb201-imagenet16"}
# Published per-architecture scores: file under <data>/nb201/reference_scores/ and its dataset filter.
REFERENCE = {"cifar10": ("zc_suite_zero_cifar10.csv.gz", None),
             "cifar100": ("zc_naslib_benchmarks_branch_subset.csv.gz", "cifar100"),
             "imagenet16": ("zc_suite_zero_imagenet16.csv.gz", None)}
# Our proxy name -> column name in the reference files, where they differ.
COLUMN = {"jacob_cov": "jacov", "naswot": "nwot"}


def machine_lines(threads: int | None, workers: int) -> list[str]:
    return [
        f"machine: {platform.node()} {platform.machine()} {platform.processor() or ''}".rstrip()
        + f", {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{workers} worker(s) x {threads or torch.get_num_threads()} torch thread(s)"
        + (f", CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
    ]


def reference_table(root: Path, dataset: str) -> pd.DataFrame | None:
    name, subset = REFERENCE[dataset]
    path = root / "nb201" / "reference_scores" / name
    if not path.is_file():
        print(f"  (no published scores: {path} missing)")
        return None
    df = pd.read_csv(path)
    if subset is not None:
        df = df[df["dataset"] == subset]
    return df.set_index("index")


def oriented(values, proxy: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v if get_proxy(proxy).spec.higher_is_better else -v


def run_dataset(args, key: str, proxies: tuple[str, ...], root: Path, runner: Runner, indices_override=None,
                label: str = "sample") -> tuple:
    """Evaluate one dataset's sample into ``<out>/<spec>/scores.jsonl`` (resuming it); its stored rows."""
    space, spec = open_spec(SPECS[key], root)
    num_classes = space.num_classes(spec.dataset)
    source, notices = load_source(spec.dataset, root, num_classes)
    for notice in notices:
        print(f"  note: {notice}", flush=True)
    if indices_override is None:
        indices = sample_indices(candidate_indices(space, spec.target_map), args.sample, args.seed)
    else:
        indices = indices_override
    config = EvalConfig(space=spec.space, dataset=spec.dataset, proxies=proxies, batch_size=args.batch_size,
                        seed=args.seed, data_root=str(root), device=args.device, threads=args.threads)
    t0 = time.perf_counter()
    with open_store(config, Path(args.out) / spec.text / "scores.jsonl", source, num_classes,
                    info={"spec": spec.text, "targets": dict(spec.targets)}) as store:
        summary = evaluate(config, indices, store, runner=runner, progress=not args.quiet)
        rows = store.rows()
    print(f"  {spec.text} {label}: {len(indices)} archs, {summary.scored} scored now, {summary.skipped} from the "
          f"store, {time.perf_counter() - t0:.0f} s", flush=True)
    return space, spec, source, rows, indices


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--proxies", default="fisher", help="comma-separated proxy names or 'all' (default: fisher)")
    p.add_argument("--datasets", default="cifar10,cifar100,imagenet16")
    p.add_argument("--sample", type=int, default=1000)
    p.add_argument("--parity", type=int, default=300, help="reference-file sample for the per-arch check (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", default="benchmark-results/reproduce_nb201")
    p.add_argument("--data", default=None)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    check_seed(args.seed, "--seed")
    positive(args.sample, "--sample")
    positive(args.batch_size, "--batch-size")
    positive(args.threads, "--threads")
    positive(args.bootstrap, "--bootstrap")
    if args.parity < 0:
        raise ConfigError(f"--parity must be 0 (skip) or a positive integer, got {args.parity}")
    args.device = check_device(args.device)
    root = data_root(args.data)
    proxies = parse_proxies(args.proxies)
    keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    for k in keys:
        if k not in SPECS:
            p.error(f"unknown dataset {k!r} (choose from {', '.join(SPECS)})")
    with Runner(args.workers) as runner:
        return run(args, root, proxies, keys, runner)


def run(args, root: Path, proxies: tuple[str, ...], keys: list[str], runner: Runner) -> int:
    """Score every dataset's sample (and the parity sample), print the table and write it under ``--out``."""
    header = machine_lines(args.threads, args.workers) + [
        f"settings: proxies {', '.join(proxies)}; {args.sample} archs per dataset sampled with seed {args.seed} "
        f"from all 15,625; batch {args.batch_size}, training augmentation, default PyTorch init, BN in the "
        f"proxy's mode; device {args.device}; bootstrap {args.bootstrap}; data {root}"]
    print("\n".join(header), flush=True)
    warnings.simplefilter("ignore", pd.errors.PerformanceWarning)

    lines = []
    for key in keys:
        space, spec, source, rows, indices = run_dataset(args, key, proxies, root, runner)
        table = summarise(rows, space, spec.target_map, proxies, args.seed, indices, n_resamples=args.bootstrap)
        ref = reference_table(root, key)
        val_ds = spec.target_map["val"]
        for proxy in proxies:
            val = next(r for r in table if r.proxy == proxy and r.split == "val")
            test = next(r for r in table if r.proxy == proxy and r.split == "test")
            pub_whole = pub_sample = ours_sample = agree = None
            col = COLUMN.get(proxy, proxy)
            if ref is not None and col in ref.columns:
                acc = [space.accuracy(int(i), val_ds, "val") for i in ref.index]
                pub_whole = spearman(oriented(ref[col], proxy), acc, n_resamples=0)
                in_ref = [i for i in indices if i in ref.index]
                if len(in_ref) >= 3:
                    pub_sample = spearman(oriented(ref.loc[in_ref, col], proxy),
                                          [space.accuracy(int(i), val_ds, "val") for i in in_ref], n_resamples=0)
                ours = {int(r["index"]): r["score"] for r in rows
                        if r["proxy"] == proxy and int(r["seed"]) == args.seed and r["status"] == OK}
                both = [i for i in indices if i in ours and i in ref.index]
                if len(both) >= 3:
                    agree = spearman([ours[i] for i in both], ref.loc[both, col].to_numpy(), n_resamples=0)
                    ours_sample = spearman(oriented([ours[i] for i in both], proxy),
                                           [space.accuracy(int(i), val_ds, "val") for i in both], n_resamples=0)
            lines.append((key, proxy, val, test, PAPER.get(proxy, {}).get(key), pub_whole, pub_sample, ours_sample,
                          agree,
                          source.name + (f" (STAND-IN for {source.stand_in_for})" if source.stand_in_for else "")))

    parity_line = None
    ref = reference_table(root, "cifar10") if args.parity and "cifar10" in keys else None
    if ref is not None:
        if args.parity > len(ref):
            raise ConfigError(f"--parity {args.parity}: the CIFAR-10 reference file holds only {len(ref)} "
                              "architectures")
        chosen = sample_indices(ref.index.to_numpy().tolist(), args.parity, args.seed)
        space, spec, source, rows, _ = run_dataset(args, "cifar10", proxies, root, runner, chosen,
                                                   label="parity sample of the reference file")
        parity_line = []
        for proxy in proxies:
            col = COLUMN.get(proxy, proxy)
            if col not in ref.columns:
                continue
            ours = {int(r["index"]): r["score"] for r in rows
                    if r["proxy"] == proxy and int(r["seed"]) == args.seed and r["status"] == OK}
            both = [i for i in chosen if i in ours]
            res = spearman([ours[i] for i in both], ref.loc[both, col].to_numpy(), n_resamples=args.bootstrap,
                           n_error=len(chosen) - len(both))
            parity_line.append((proxy, res))

    out = []
    out.append("")
    out.append("| dataset | proxy | n | NaN | failed | ours: Spearman vs val [95% CI] | paper (1,000 archs) "
               "| ours - paper | published scores vs val (whole ref. set, n) "
               "| published scores vs val (this sample's archs in the ref. set, n) "
               "| ours vs val on those archs (n) | ours: vs test "
               "| agreement with published per arch (n) | minibatch images |")
    out.append("|" + "---|" * 14)
    for key, proxy, val, test, paper, pub, pub_sample, ours_sample, agree, data in lines:
        s = val.spearman
        diff = f"{s.statistic - paper:+.3f}" if paper is not None else "-"
        out.append(
            f"| {key} | {proxy} | {s.n} | {s.n_nan} | {s.n_error} | {s.statistic:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]"
            f" | {paper if paper is not None else '-'} | {diff} | "
            + (f"{pub.statistic:.3f} ({pub.n})" if pub else "-") + " | "
            + (f"{pub_sample.statistic:.3f} ({pub_sample.n})" if pub_sample else "-") + " | "
            + (f"{ours_sample.statistic:.3f} ({ours_sample.n})" if ours_sample else "-")
            + f" | {test.spearman.statistic:.3f} | "
            + (f"{agree.statistic:.3f} ({agree.n})" if agree else "-")
            + f" | {data} |")
    out.append("")
    out.append("val = cifar10-valid x-valid (CIFAR-10), x-valid (CIFAR-100, ImageNet16-120); test = cifar10 "
               "ori-test, x-test. Accuracies: NAS-Bench-201 v1_0, hp=200, seed mean. Published per-arch scores: "
               "NAS-Bench-Suite-Zero (C10, IN16: 9,445-arch set; C100: NASLib 491-arch benchmarks subset). "
               "The reference sets leave out cells with unreachable operations, so compare the two "
               "'on those archs' columns like for like; the whole-sample column also holds such cells.")
    if parity_line:
        out.append("")
        out.append(f"Per-architecture agreement on a seeded {args.parity}-arch sample of "
                   "reference_scores/zc_suite_zero_cifar10.csv.gz (Spearman of our score with the published one):")
        for proxy, res in parity_line:
            out.append(f"  {proxy}: {res.statistic:.4f} [{res.ci_low:.4f}, {res.ci_high:.4f}] "
                       f"(n={res.n}, NaN {res.n_nan}, failed {res.n_error})")
    text = "\n".join(out)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "reproduce_nb201.md").write_text("\n".join(header) + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(guarded("reproduce_nb201.py", main))
