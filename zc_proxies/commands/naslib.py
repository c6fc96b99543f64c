"""``zcbench import`` / ``zcbench export``: NAS-Bench-Suite-Zero score files in and out of result stores.

``zcbench import zc_nasbench201.json --space nb201 --out naslib-scores`` turns
NASLib's ``{dataset: {arch: {proxy: {score, time}}}}`` file (or a benchmark
runner's record list, with ``--dataset``) into result stores, one per dataset,
that every zcbench table reads. ``zcbench export STORE --out zc.json`` writes
our stored scores in NASLib's layout (with ``val_accuracy`` from the space's
stored results: ``--accuracy NAME`` takes the target names of ``zcbench eval
--target``, ``auto`` the space's first default target). The work is
:mod:`zc_proxies.runs.interchange`'s.
"""

from __future__ import annotations

import argparse

from ..data.images import DATA_ENV
from ..runs.interchange import export_naslib, import_naslib


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="read a NAS-Bench-Suite-Zero (NASLib) score file into result stores",
        description="Convert NASLib's zero-cost score JSON ({dataset: {arch: {proxy: {score, time}}}}, or a "
                    "benchmark runner's list of records) into zcbench result stores, one per dataset.")
    p.add_argument("file", help="the NASLib JSON file")
    p.add_argument("--space", required=True, help="our space name, e.g. nb201")
    p.add_argument("--dataset", default=None,
                   help="import only this dataset (our name, e.g. cifar10, imagenet16-120); required for a record list")
    p.add_argument("--out", required=True, help="folder for the store(s): OUT/scores.jsonl, or OUT/<dataset>/...")
    p.add_argument("--data", default=None, help=f"data root, to look architecture indices up (default: ${DATA_ENV})")
    p.add_argument("--source", default=None, metavar="FILE",
                   help="read the space from this official results file instead of the tables under --data")
    p.set_defaults(func=run_import)

    e = subparsers.add_parser(
        "export", help="write result stores in NAS-Bench-Suite-Zero's (NASLib's) score-file layout",
        description="Write stored scores as {dataset: {arch: {proxy: {score, time}, val_accuracy}}}, NASLib's "
                    "zero-cost benchmark layout (synflow as log, failures as -1e8, as NASLib stores them).")
    e.add_argument("stores", nargs="+", help="result store files (scores.jsonl) or folders holding them")
    e.add_argument("--out", required=True, help="the JSON file to write")
    e.add_argument("--seed", type=int, default=None, help="export rows of this seed (needed when several are stored)")
    e.add_argument("--proxy", default=None, help="comma-separated proxies to export (default: all stored)")
    e.add_argument("--accuracy", default="auto", metavar="TARGET",
                   help="target whose stored accuracy becomes val_accuracy, by the names of zcbench eval --target "
                        "(nb201: val, test, val-12ep, test-12ep; nb101: val, test, val-36ep, ...; nds-*: test, "
                        "test-best), auto (the space's first default target, as zcbench eval correlates and "
                        "plots first) or none (default: auto); a name the space lacks is an error")
    e.add_argument("--data", default=None, help=f"data root, for the accuracies (default: ${DATA_ENV})")
    e.add_argument("--source", default=None, metavar="FILE",
                   help="read the accuracies from this official results file instead of the tables under --data")
    e.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    for d in import_naslib(args.file, args.space, args.out, dataset=args.dataset, data=args.data, source=args.source):
        print(f"{d.dataset}: {d.written} rows written to {d.path} ({d.already} already there; {d.archs} archs, "
              f"{d.proxies} proxies; " + ", ".join(f"{k} {v}" for k, v in sorted(d.statuses.items())) + ")")
    return 0


def run_export(args: argparse.Namespace) -> int:
    proxies = [p.strip() for p in args.proxy.split(",") if p.strip()] if args.proxy else None
    done = export_naslib(args.stores, args.out, seed=args.seed, proxies=proxies, accuracy=args.accuracy,
                         data=args.data, source=args.source)
    print(f"wrote {done.rows} scores of {done.archs} architectures ({', '.join(done.datasets)}) to {done.path}")
    for what in done.accuracy.values():
        print(f"val_accuracy: {what}")
    if done.population:
        print(f"not exported: {', '.join(done.population)} (population-relative scores; NASLib's layout holds one "
              "score per architecture)")
    for (space, dataset), k in sorted(done.no_value.items()):
        print(f"no val_accuracy for {k} architectures of {space} {dataset} (no stored value for the target)")
    if done.no_accuracy:
        print("no val_accuracy for " + ", ".join(f"{s} {d}" for s, d in done.no_accuracy)
              + " (the space's stored results are not available there)")
    return 0
