"""``zcbench import`` / ``zcbench export``: NAS-Bench-Suite-Zero score files in and out of score stores.

``zcbench import zc_nasbench201.json --space nb201 --out naslib-scores`` turns
NASLib's ``{dataset: {arch: {proxy: {score, time}}}}`` file (or a benchmark
runner's record list, with ``--dataset``) into score stores, one per dataset,
that every zcbench table reads. ``zcbench export STORE --out zc.json`` writes
our stored scores in NASLib's layout (with ``val_accuracy`` from the space's
stored results) so NASLib's zero-cost benchmark code can read them. The
conversions are documented in :mod:`zc_proxies.naslib_format`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..datasets import DATA_ENV, data_root
from ..errors import DataError, MissingDataError, UnknownNameError, ZCBenchError
from ..naslib_format import IMPORTED_VERSION, from_naslib, to_naslib
from ..spaces import SearchSpace, get_space
from ..store import ScoreStore, read_store, row_key


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="read a NAS-Bench-Suite-Zero (NASLib) score file into score stores",
        description="Convert NASLib's zero-cost score JSON ({dataset: {arch: {proxy: {score, time}}}}, or a "
                    "benchmark runner's list of records) into zcbench score stores, one per dataset.")
    p.add_argument("file", help="the NASLib JSON file")
    p.add_argument("--space", required=True, help="our space name, e.g. nb201")
    p.add_argument("--dataset", default=None,
                   help="import only this dataset (our name, e.g. cifar10, imagenet16-120); required for a record list")
    p.add_argument("--out", required=True, help="folder for the store(s): OUT/scores.jsonl, or OUT/<dataset>/...")
    p.add_argument("--data", default=None, help=f"data root, to look architecture indices up (default: ${DATA_ENV})")
    p.set_defaults(func=run_import)

    e = subparsers.add_parser(
        "export", help="write score stores in NAS-Bench-Suite-Zero's (NASLib's) score-file layout",
        description="Write stored scores as {dataset: {arch: {proxy: {score, time}, val_accuracy}}}, NASLib's "
                    "zero-cost benchmark layout (synflow as log, failures as -1e8, as NASLib stores them).")
    e.add_argument("stores", nargs="+", help="score store files (scores.jsonl)")
    e.add_argument("--out", required=True, help="the JSON file to write")
    e.add_argument("--seed", type=int, default=None, help="export rows of this seed (needed when several are stored)")
    e.add_argument("--proxy", default=None, help="comma-separated proxies to export (default: all stored)")
    e.add_argument("--accuracy", default="auto", metavar="SPLIT",
                   help="split whose stored accuracy becomes val_accuracy: val, test, auto (val if the space has "
                        "it, else test) or none (default: auto)")
    e.add_argument("--data", default=None, help=f"data root, for the accuracies (default: ${DATA_ENV})")
    e.set_defaults(func=run_export)


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise MissingDataError(f"no NASLib score file at {str(path)!r}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not a JSON file ({exc})") from exc


def _index_lookup(space: SearchSpace, space_name: str):
    def index_of(arch: Any) -> int:
        try:
            return int(space.index_of(arch))
        except (UnknownNameError, ZCBenchError) as exc:
            raise DataError(f"architecture {arch!r} of the NASLib file is not in space {space_name!r}: {exc}") from exc
    return index_of


def import_settings(space: SearchSpace, space_name: str, dataset: str) -> dict[str, Any]:
    """Store settings of imported rows: what is known, and None for what NASLib does not record."""
    try:
        classes: int | None = space.num_classes(dataset)
    except ZCBenchError:
        classes = None
    return {"space": space_name, "dataset": dataset, "num_classes": classes, "batch_size": None, "augment": None,
            "data_source": "naslib-import", "stand_in_for": None}


def run_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    obj = _load_json(path)
    space = get_space(args.space, data_root(args.data))
    rows = from_naslib(obj, args.space, index_of=_index_lookup(space, args.space),
                       datasets=[args.dataset] if args.dataset else None)
    if not rows:
        raise DataError(f"{str(path)!r} holds no scores" + (f" for dataset {args.dataset!r}" if args.dataset else ""))
    by_dataset: dict[str, list[dict]] = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], []).append(r)
    out = Path(args.out)
    for dataset, these in sorted(by_dataset.items()):
        target = out / "scores.jsonl" if len(by_dataset) == 1 else out / dataset / "scores.jsonl"
        versions = {r["proxy"]: IMPORTED_VERSION for r in these}
        store = ScoreStore(target, import_settings(space, args.space, dataset), versions,
                           info={"imported_from": str(path)})
        new = [r for r in these if row_key(r) not in store]
        store.append(new)
        counts = Counter(r["status"] for r in these)
        print(f"{dataset}: {len(new)} rows written to {target} ({len(these) - len(new)} already there; "
              f"{len({r['index'] for r in these})} archs, {len(versions)} proxies; "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
    return 0


class _Accuracy:
    """val_accuracy per row from the row's space, opened once per space; None when not available."""

    def __init__(self, split: str, data: str | None) -> None:
        self.split = split
        self.data = data
        self.spaces: dict[str, SearchSpace | None] = {}
        self.splits: dict[tuple[str, str], str | None] = {}
        self.missing: set[tuple[str, str]] = set()

    def _space(self, name: str) -> SearchSpace | None:
        if name not in self.spaces:
            try:
                self.spaces[name] = get_space(name, data_root(self.data))
            except ZCBenchError:
                self.spaces[name] = None
        return self.spaces[name]

    def __call__(self, row: Mapping[str, Any]) -> float | None:
        space = self._space(str(row["space"]))
        key = (str(row["space"]), str(row["dataset"]))
        if space is None:
            self.missing.add(key)
            return None
        splits = ("val", "test") if self.split == "auto" else (self.split,)
        for split in ([self.splits[key]] if key in self.splits else splits):
            if split is None:
                break
            try:
                value = float(space.accuracy(int(row["index"]), str(row["dataset"]), split))
            except UnknownNameError:
                continue
            self.splits[key] = split
            return value
        self.splits[key] = None
        self.missing.add(key)
        return None


def run_export(args: argparse.Namespace) -> int:
    rows: list[dict] = []
    for store in args.stores:
        _header, these = read_store(store)
        rows.extend(these)
    if args.proxy:
        wanted = {p.strip() for p in args.proxy.split(",") if p.strip()}
        rows = [r for r in rows if r["proxy"] in wanted]
    seeds = sorted({int(r["seed"]) for r in rows})
    if args.seed is not None:
        rows = [r for r in rows if int(r["seed"]) == args.seed]
    elif len(seeds) > 1:
        raise DataError(f"the stores hold seeds {seeds}; NASLib's layout keeps one score per architecture and "
                        "proxy, so choose one with --seed")
    if not rows:
        raise DataError("nothing to export: no stored rows match")
    accuracy = None if args.accuracy == "none" else _Accuracy(args.accuracy, args.data)
    out = to_naslib(rows, accuracy=accuracy)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    n_arch = sum(len(v) for v in out.values())
    print(f"wrote {len(rows)} scores of {n_arch} architectures ({', '.join(sorted(out))}) to {target}")
    if accuracy is not None and accuracy.missing:
        print("no val_accuracy for " + ", ".join(f"{s} {d}" for s, d in sorted(accuracy.missing))
              + " (the space's stored results are not available there)")
    return 0
