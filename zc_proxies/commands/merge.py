"""``zcbench merge --out DIR STORE...``: join shard stores into one, then print and write the correlations.

Inputs must share their settings (space, dataset, batch size, data source,
...) and proxy versions; identical rows stored twice are kept once, and a key
stored twice with different results is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..datasets import DATA_ENV, data_root
from ..errors import DataError
from ..minibatch_source import source_for
from ..proxies import get_proxy
from ..store import merge_stores, read_store
from .eval import make_context, open_spec, report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge", help="join score stores (shards) and correlate the result",
                              description="Join score stores written by sharded `zcbench eval` runs into "
                                          "OUT/scores.jsonl, then print and write the correlation tables.")
    p.add_argument("stores", nargs="+", help="score store files (scores*.jsonl) or folders holding them")
    p.add_argument("--out", required=True, help="output folder (must not hold a scores.jsonl yet)")
    p.add_argument("--space", default=None,
                   help="space spec for the tables, e.g. nb201-cifar10 (default: the one the stores record)")
    p.add_argument("--seed", type=int, default=None, help="which run seed to correlate (default: the only one)")
    p.add_argument("--data", default=None, help=f"data root (default: ${DATA_ENV})")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default: 1000)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the scatter plot")
    p.set_defaults(func=run)


def _expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(p.glob("scores*.jsonl"))
            if not found:
                raise DataError(f"folder {str(p)!r} holds no scores*.jsonl store")
            out.extend(found)
        else:
            out.append(p)
    return out


def run(args: argparse.Namespace) -> int:
    inputs = _expand(args.stores)
    out = Path(args.out)
    target = out / "scores.jsonl"
    if any(p.resolve() == target.resolve() for p in inputs):
        raise DataError(f"the merge output {str(target)!r} is also an input; choose another --out")
    header, _ = read_store(inputs[0])
    settings, n_rows, n_dup = merge_stores(inputs, target)
    print(f"zcbench merge: {len(inputs)} stores -> {target}: {n_rows} rows ({n_dup} duplicates dropped)",
          file=sys.stderr)
    _, rows = read_store(target)
    if not rows:
        return 0
    root = data_root(args.data)
    spec_text = args.space or header.get("info", {}).get("spec") or f"{settings['space']}-{settings['dataset']}"
    space, spec = open_spec(spec_text, root)
    if spec.space != settings.get("space") or spec.dataset != settings.get("dataset"):
        raise DataError(f"--space {spec_text} means space {spec.space!r} with dataset {spec.dataset!r}, but the "
                        f"stores hold {settings.get('space')!r} with {settings.get('dataset')!r}")
    seeds = sorted({int(r["seed"]) for r in rows})
    seed = args.seed if args.seed is not None else seeds[0]
    if args.seed is None and len(seeds) > 1:
        raise DataError(f"the stores hold runs of several seeds ({', '.join(map(str, seeds))}); pick one with --seed")
    proxies = sorted({r["proxy"] for r in rows if int(r["seed"]) == seed})
    for p in proxies:
        get_proxy(p)
    num_classes = int(settings.get("num_classes") or space.num_classes(spec.dataset))
    note = source_for(spec.dataset, root, num_classes, warn=False).note
    ctx = make_context(spec, num_classes, int(settings["batch_size"]), seed, bool(settings.get("augment", True)),
                       settings, note, args.bootstrap, [f"Merged from {len(inputs)} store(s)."])
    report(out, "correlations", rows, space, ctx, proxies, None, args.plot)
    return 0
