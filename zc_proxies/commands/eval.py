"""``zcbench eval --proxy P --space nb201-cifar10``: score architectures, then print and write correlations.

Everything is stored in ``--out``: ``scores.jsonl`` (one row per architecture,
proxy and seed; a rerun resumes it), and ``correlations.{csv,md,tex}`` plus
``scatter.png``. With ``--shard i/N`` (or a SLURM array / torchrun
environment) the store and tables carry the shard in their names, and
``zcbench merge`` joins the shards.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..datasets import DATA_ENV, data_root
from ..errors import BatchError, UnknownNameError, ZCBenchError
from ..evaluate import (
    EvalConfig,
    candidate_indices,
    evaluate,
    open_store,
    parse_shard,
    read_arch_list,
    sample_indices,
    shard_from_env,
    shard_indices,
    store_path,
)
from ..minibatch_source import MinibatchSource, StandInWarning, source_for
from ..proxies import get_proxy, list_proxies
from ..report import ReportContext, scatter_plot, summarise, to_text, write_reports
from ..space_spec import SpaceSpec, resolve_spec, split_spec
from ..spaces import SearchSpace, get_space


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="score architectures of a benchmark with proxies and correlate with accuracy",
        description="Score architectures of a search space with zero-cost proxies, store every score "
                    "(resumable), and print how well each proxy ranks them (Spearman, Kendall).")
    p.add_argument("--proxy", default="fisher",
                   help="proxy name, comma-separated names, or 'all' (default: fisher)")
    p.add_argument("--space", required=True,
                   help="SPACE or SPACE-DATASET, e.g. nb201-cifar10, nb201-cifar100, nb201-imagenet16, nb101-cifar10")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sample", type=int, default=None, metavar="N",
                       help="score N architectures drawn with --seed (default: all)")
    which.add_argument("--archs", default=None, metavar="FILE",
                       help="file with one architecture per line (index or arch string)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample, each minibatch and each initialisation")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default: 64)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default: 1; the same count keeps scores bit-identical "
                        "whatever --workers is)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--out", default="zcbench-eval", help="output folder: store and tables (default: zcbench-eval)")
    p.add_argument("--data", default=None, help=f"data root (default: ${DATA_ENV})")
    p.add_argument("--shard", default=None, metavar="i/N",
                   help="score only shard i of N (default: from SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the tasks on this Dask scheduler (needs the 'dask' extra)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default: 1000)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no pad-crop/flip augmentation on the minibatch")
    p.add_argument("--balanced-batch", dest="sampling", action="store_const", const="balanced", default="uniform",
                   help="draw each minibatch with an equal number of images per class instead of uniformly; "
                        "removes the class-mix variance of label-grouping proxies such as epe_nas")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the scatter plot")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (and in every worker): registers your own proxies or spaces")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_proxies(text: str) -> tuple[str, ...]:
    """``"fisher,snip"`` -> ``("fisher", "snip")``; ``"all"`` -> every registered proxy. Unknown names raise."""
    if text.strip() == "all":
        names = list_proxies()
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownNameError("--proxy names no proxy")
    for n in names:
        get_proxy(n)
    return tuple(dict.fromkeys(names))


def open_spec(text: str, root: Path) -> tuple[SearchSpace, SpaceSpec]:
    """Open the space a ``--space`` value names and resolve its dataset alias."""
    name, alias = split_spec(text)
    space = get_space(name, root)
    return space, resolve_spec(text, space, alias)


def load_source(dataset: str, root: Path, num_classes: int, command: str) -> MinibatchSource:
    """The minibatch images, printing a notice (on stderr) for every stand-in."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StandInWarning)
        source = source_for(dataset, root, num_classes, warn=True)
    for w in caught:
        if issubclass(w.category, StandInWarning):
            print(f"zcbench {command}: NOTICE: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return source


def make_context(spec: SpaceSpec, num_classes: int, batch_size: int, seed: int, augment: bool,
                 settings: Mapping[str, Any], source_note: str, n_resamples: int,
                 extra: Sequence[str] = ()) -> ReportContext:
    return ReportContext(spec=spec.text, space=spec.space, dataset=spec.dataset, num_classes=num_classes,
                         batch_size=batch_size, seed=seed, augment=augment,
                         data_source=str(settings.get("data_source")), stand_in_for=settings.get("stand_in_for"),
                         source_note=source_note, targets=spec.targets, n_resamples=n_resamples,
                         extra_notes=tuple(extra), sampling=str(settings.get("sampling", "uniform")))


def report(out: Path, stem: str, rows: list[dict], space: SearchSpace, ctx: ReportContext,
           proxies: Sequence[str], indices: Sequence[int] | None, plot: bool) -> None:
    """Print the table and write CSV, Markdown, LaTeX (and the scatter PNG) under ``out``."""
    table = summarise(rows, space, dict(ctx.targets), proxies, ctx.seed, indices, n_resamples=ctx.n_resamples)
    print(to_text(table, ctx), end="")
    paths = write_reports(out, table, ctx, stem=stem)
    if plot:
        name = stem.replace("correlations", "scatter", 1) if "correlations" in stem else f"{stem}-scatter"
        paths["png"] = scatter_plot(out / f"{name}.png", rows, space, ctx, table, proxies, indices)
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def run(args: argparse.Namespace) -> int:
    for module in args.imports:
        importlib.import_module(module)
    root = data_root(args.data)
    space, spec = open_spec(args.space, root)
    proxies = parse_proxies(args.proxy)
    if args.batch_size < 1:
        raise BatchError(f"--batch-size must be positive, got {args.batch_size}")
    if args.sample is not None and args.sample < 1:
        raise ZCBenchError(f"--sample must be positive, got {args.sample}")
    try:
        shard = parse_shard(args.shard) if args.shard else shard_from_env()
    except ValueError as exc:
        raise ZCBenchError(str(exc)) from None
    targets = spec.target_map
    if args.archs:
        indices = read_arch_list(args.archs, space)
    else:
        indices = sample_indices(candidate_indices(space, targets), args.sample, args.seed)
    indices = shard_indices(indices, shard)
    num_classes = space.num_classes(spec.dataset)
    source = load_source(spec.dataset, root, num_classes, "eval")
    workers = max(1, args.workers)
    config = EvalConfig(space=spec.space, dataset=spec.dataset, proxies=proxies, batch_size=args.batch_size,
                        seed=args.seed, data_root=str(root), device=args.device,
                        threads=max(1, args.threads), augment=args.augment, sampling=args.sampling,
                        imports=tuple(args.imports))
    out = Path(args.out)
    path = store_path(out, shard)
    store = open_store(config, path, source, num_classes, info={"spec": spec.text, "targets": dict(spec.targets)})
    shard_text = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    print(f"zcbench eval: {len(indices)} architectures{shard_text} of {spec.text}, proxies {', '.join(proxies)}, "
          f"batch {args.batch_size}, seed {args.seed}, {workers} worker(s) x {config.threads} thread(s); "
          f"store {path}", file=sys.stderr)
    summary = evaluate(config, indices, store, workers=workers, scheduler=args.scheduler, progress=not args.quiet)
    if summary.skipped:
        print(f"zcbench eval: {summary.skipped} architectures were already in the store (resumed)", file=sys.stderr)
    extra = [f"Shard {shard[0]} of {shard[1]} only; merge the shards with `zcbench merge`."] if shard else []
    ctx = make_context(spec, num_classes, args.batch_size, args.seed, args.augment, store.settings, source.note,
                       args.bootstrap, extra)
    stem = "correlations" if path.name == "scores.jsonl" else "correlations" + path.stem[len("scores"):]
    report(out, stem, store.rows(), space, ctx, proxies, indices, args.plot)
    return 0

