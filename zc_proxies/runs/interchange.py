"""NAS-Bench-Suite-Zero (NASLib) score files in and out of result stores.

The conversions are :mod:`zc_proxies.naslib_format`'s; this module reads and
writes through the engine: imports become ordinary result stores (locked,
keyed, settings-checked), and an export reads its stores with the same checks
as ``zcbench merge`` (one experiment, no conflicting results) before it
writes its file, atomically.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import data_root
from ..errors import ConfigError, DataError, MissingDataError, UnknownNameError, ZCBenchError
from ..naslib_format import IMPORTED_VERSION, from_naslib, to_naslib
from ..spaces import SearchSpace, get_space
from .atomic import atomic_write_text
from .merge import check_same_experiment, load_stores
from .store import ResultStore, row_key


def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise MissingDataError(f"no NASLib score file at {str(path)!r}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not a JSON file ({exc})") from exc


def import_settings(space: SearchSpace, space_name: str, dataset: str) -> dict[str, Any]:
    """Store settings of imported rows: what is known, and None for what NASLib does not record."""
    try:
        classes: int | None = space.num_classes(dataset)
    except ZCBenchError:
        classes = None
    return {"space": space_name, "dataset": dataset, "num_classes": classes, "batch_size": None, "augment": None,
            "data_source": "naslib-import", "stand_in_for": None}


@dataclass
class Imported:
    """One dataset's imported rows and where they went."""

    dataset: str
    path: Path
    written: int
    already: int
    archs: int
    proxies: int
    statuses: dict[str, int] = field(default_factory=dict)


def import_naslib(file: str | os.PathLike, space_name: str, out: str | os.PathLike, *, dataset: str | None = None,
                  data: str | None = None) -> list[Imported]:
    """Read a NASLib score file into result stores under ``out`` (one per dataset); all checked first."""
    path = Path(file)
    obj = _load_json(path)
    space = get_space(space_name, data_root(data))

    def index_of(arch: Any) -> int:
        try:
            return int(space.index_of(arch))
        except ZCBenchError as exc:
            raise DataError(f"architecture {arch!r} of the NASLib file is not in space {space_name!r}: {exc}") from exc

    rows = from_naslib(obj, space_name, index_of=index_of, datasets=[dataset] if dataset else None)
    if not rows:
        raise DataError(f"{str(path)!r} holds no scores" + (f" for dataset {dataset!r}" if dataset else ""))
    by_dataset: dict[str, list[dict]] = {}
    for r in rows:
        by_dataset.setdefault(r["dataset"], []).append(r)
    out = Path(out)
    done = []
    for name, these in sorted(by_dataset.items()):
        target = out / "scores.jsonl" if len(by_dataset) == 1 else out / name / "scores.jsonl"
        versions = {r["proxy"]: IMPORTED_VERSION for r in these}
        with ResultStore(target, import_settings(space, space_name, name), proxy_versions=versions,
                         info={"imported_from": str(path), "spec": f"{space_name}-{name}"}) as store:
            new = [r for r in these if row_key(r) not in store]
            store.append(new)
        done.append(Imported(name, target, len(new), len(these) - len(new), len({r["index"] for r in these}),
                             len(versions), dict(Counter(r["status"] for r in these))))
    return done


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


@dataclass
class Exported:
    """What :func:`export_naslib` wrote."""

    path: Path
    rows: int
    archs: int
    datasets: list[str]
    no_accuracy: list[tuple[str, str]]


def export_naslib(stores: Sequence[str | os.PathLike], out: str | os.PathLike, *, seed: int | None = None,
                  proxies: Sequence[str] | None = None, accuracy: str = "auto",
                  data: str | None = None) -> Exported:
    """Write stored scores in NASLib's layout to ``out``; every store is checked before the file is written."""
    if accuracy not in ("auto", "val", "test", "none"):
        raise ConfigError(f"--accuracy must be val, test, auto or none, got {accuracy!r}")
    files = load_stores(stores)
    check_same_experiment(files)
    rows = [r for f in files for r in f.rows]
    if proxies:
        rows = [r for r in rows if r["proxy"] in set(proxies)]
    seeds = sorted({int(r["seed"]) for r in rows})
    if seed is not None:
        rows = [r for r in rows if int(r["seed"]) == seed]
    elif len(seeds) > 1:
        raise ConfigError(f"the stores hold seeds {seeds}; NASLib's layout keeps one score per architecture and "
                          "proxy, so choose one with --seed")
    if not rows:
        raise DataError("nothing to export: no stored rows match")
    acc = None if accuracy == "none" else _Accuracy(accuracy, data)
    body = to_naslib(rows, accuracy=acc)
    target = Path(out)
    if target.is_dir():
        raise ConfigError(f"--out {str(target)!r} is a folder; name the JSON file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(body))
    return Exported(target, len(rows), sum(len(v) for v in body.values()), sorted(body),
                    sorted(acc.missing) if acc is not None else [])
