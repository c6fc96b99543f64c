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
from ..spaces import SearchSpace
from ..spaces.spec import open_space, resolve_spec, split_spec
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
                  data: str | None = None, source: str | os.PathLike | None = None) -> list[Imported]:
    """Read a NASLib score file into result stores under ``out`` (one per dataset); all checked first.

    ``source`` opens the space from that results file (to look indices up); it is recorded in the stores' info.
    """
    from .evaluation import check_source

    path = Path(file)
    obj = _load_json(path)
    source = check_source(source)
    space = open_space(space_name, data_root(data), source)

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
                         info={"imported_from": str(path), "spec": f"{space_name}-{name}",
                               **({"results_source": source} if source else {})}) as store:
            new = [r for r in these if row_key(r) not in store]
            store.append(new)
        done.append(Imported(name, target, len(new), len(these) - len(new), len({r["index"] for r in these}),
                             len(versions), dict(Counter(r["status"] for r in these))))
    return done


class _Accuracy:
    """val_accuracy per row: the stored accuracy of one target, resolved per (space, dataset) as ``zcbench eval``
    resolves its ``--target`` (same names, same default).

    ``target`` is a target name of the rows' space (``val``, ``test-12ep``,
    ``test-best`` ...) or ``auto``, the space's first default target for the
    store's ``--space`` spec. :meth:`resolve` is called for every (space,
    dataset) before anything is written: an unknown or unavailable name is an
    error then; with ``auto``, a space whose results cannot be opened is only
    noted (:attr:`missing`).
    """

    def __init__(self, target: str, data: str | None, source: str | None = None,
                 specs: Mapping[tuple[str, str], str] | None = None) -> None:
        self.target = target
        self.data = data
        self.source = source
        self.specs = dict(specs or {})
        self.spaces: dict[str, SearchSpace] = {}
        self.resolved: dict[tuple[str, str], tuple[SearchSpace, str, str] | None] = {}
        self.missing: set[tuple[str, str]] = set()
        self.no_value: dict[tuple[str, str], set[int]] = {}
        self.used: dict[tuple[str, str], str] = {}

    def _space(self, name: str) -> SearchSpace:
        if name not in self.spaces:
            self.spaces[name] = open_space(name, data_root(self.data), self.source)
        return self.spaces[name]

    def resolve(self, key: tuple[str, str]) -> SearchSpace | None:
        """Choose the target of ``key`` = (space, dataset); raises for a name the space cannot give."""
        if key in self.resolved:
            entry = self.resolved[key]
            return None if entry is None else entry[0]
        name, dataset = key
        explicit = self.target != "auto"
        try:
            space = self._space(name)
        except ZCBenchError:
            if explicit:
                raise
            self.resolved[key] = None
            self.missing.add(key)
            return None
        texts = dict.fromkeys(t for t in (self.specs.get(key), f"{name}-{dataset}") if t)
        spec, error = None, None
        for text in texts:  # the spec the store records, else SPACE-DATASET
            try:
                alias = split_spec(text, [name])[1]
                candidate = resolve_spec(text, space, alias, [self.target] if explicit else None)
            except ZCBenchError as exc:
                error = error or exc
                continue
            if candidate.dataset == dataset:
                spec = candidate
                break
        if spec is None:
            if explicit:
                raise error or UnknownNameError(f"--accuracy {self.target}: space {name!r} has no such target for "
                                                f"dataset {dataset!r} (targets: {space.describe_targets()})")
            self.resolved[key] = None
            self.missing.add(key)
            return None
        split, acc_dataset = spec.targets[0]
        self.resolved[key] = (space, split, acc_dataset)
        self.used[key] = f"{spec.text} {split} = {space.target_note(split, acc_dataset)}"
        return space

    def __call__(self, row: Mapping[str, Any]) -> float | None:
        key = (str(row["space"]), str(row["dataset"]))
        self.resolve(key)
        entry = self.resolved[key]
        if entry is None:
            return None
        space, split, dataset = entry
        try:
            return float(space.accuracy(int(row["index"]), dataset, split))
        except DataError:  # this architecture has no stored value for the target (e.g. outside a subset)
            self.no_value.setdefault(key, set()).add(int(row["index"]))
            return None


@dataclass
class Exported:
    """What :func:`export_naslib` wrote.

    ``accuracy``: per "space dataset", what ``val_accuracy`` holds;
    ``no_accuracy``: (space, dataset) pairs whose space could not be opened
    (``auto`` only); ``no_value``: architectures without a stored value, per pair.
    """

    path: Path
    rows: int
    archs: int
    datasets: list[str]
    no_accuracy: list[tuple[str, str]]
    accuracy: dict[str, str] = field(default_factory=dict)
    no_value: dict[tuple[str, str], int] = field(default_factory=dict)
    population: list[str] = field(default_factory=list)
    """Population proxies left out: NASLib's layout holds one score per architecture, theirs exist per population."""


def export_naslib(stores: Sequence[str | os.PathLike], out: str | os.PathLike, *, seed: int | None = None,
                  proxies: Sequence[str] | None = None, accuracy: str = "auto",
                  data: str | None = None, source: str | os.PathLike | None = None) -> Exported:
    """Write stored scores in NASLib's layout to ``out``; every store is checked before the file is written.

    ``accuracy`` names the target whose stored accuracy becomes each
    architecture's ``val_accuracy``: a target name of the rows' space (the
    names ``zcbench eval --target`` takes), ``auto`` (the space's first
    default target, the one ``zcbench eval`` plots) or ``none``. A name the
    space does not have (or whose results are missing) is refused before
    anything is written. ``source`` opens the space from that results file.
    """
    from .evaluation import check_same_archs, check_source

    accuracy = str(accuracy).strip()
    if not accuracy:
        raise ConfigError("--accuracy must name a target (val, test, ...), auto or none")
    files = load_stores(stores)
    check_same_experiment(files)
    rows = [r for f in files for r in f.rows]
    if proxies:
        rows = [r for r in rows if r["proxy"] in set(proxies)]
    population = sorted({r["proxy"] for r in rows if "components" in r})
    rows = [r for r in rows if "components" not in r]
    seeds = sorted({int(r["seed"]) for r in rows})
    if seed is not None:
        rows = [r for r in rows if int(r["seed"]) == seed]
    elif len(seeds) > 1:
        raise ConfigError(f"the stores hold seeds {seeds}; NASLib's layout keeps one score per architecture and "
                          "proxy, so choose one with --seed")
    if not rows:
        raise DataError("nothing to export: no stored rows match")
    acc = None
    if accuracy != "none":
        source = check_source(source)
        specs: dict[tuple[str, str], str] = {}
        recorded: dict[tuple[str, str], str | None] = {}
        for f in files:
            key = (str(f.settings.get("space")), str(f.settings.get("dataset")))
            info = f.header.get("info") or {}
            if info.get("spec"):
                specs.setdefault(key, str(info["spec"]))
            recorded.setdefault(key, info.get("results_source"))
        acc = _Accuracy(accuracy, data, source, specs)
        keys = dict.fromkeys((str(r["space"]), str(r["dataset"])) for r in rows)
        for key in keys:  # every target resolved (or refused) before anything is written
            space = acc.resolve(key)
            if space is not None:
                check_same_archs(space, (r for r in rows if (str(r["space"]), str(r["dataset"])) == key),
                                 recorded.get(key), source, f"the stores of {key[0]} {key[1]}")
    body = to_naslib(rows, accuracy=acc)
    target = Path(out)
    if target.is_dir():
        raise ConfigError(f"--out {str(target)!r} is a folder; name the JSON file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, json.dumps(body))
    return Exported(target, len(rows), sum(len(v) for v in body.values()), sorted(body),
                    sorted(acc.missing) if acc is not None else [],
                    {f"{k[0]} {k[1]}": v for k, v in acc.used.items()} if acc is not None else {},
                    {k: len(v) for k, v in acc.no_value.items()} if acc is not None else {}, population)
