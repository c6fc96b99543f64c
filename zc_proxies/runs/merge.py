"""Joining result stores: shards of one run, reruns, imported score files.

Every input is read and checked before anything is written: all must be
result stores of one experiment (the same settings, key and proxy versions),
and a key stored twice must hold the same result. :func:`load_stores` and
:func:`check_same_experiment` are shared by ``zcbench merge`` and ``zcbench
export``, so both refuse exactly the same inputs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .shards import shard_of_path
from .store import (
    SCORE_KEY,
    check_writable,
    key_of,
    make_header,
    parse_store,
    result_of,
    settings_difference,
    write_store,
)


class MissingShardWarning(UserWarning):
    """The stores merged are shards of a run, and some of its shards are not among them."""


@dataclass
class StoreFile:
    """One input store, read whole."""

    path: Path
    header: dict
    rows: list[dict]

    @property
    def settings(self) -> dict:
        return dict(self.header.get("settings") or {})

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.header.get("key") or SCORE_KEY)

    @property
    def shard(self) -> tuple[int, int] | None:
        """The shard this store is, from its header or else its file name."""
        recorded = (self.header.get("info") or {}).get("shard")
        return (int(recorded[0]), int(recorded[1])) if recorded else shard_of_path(self.path)


def expand(paths: Iterable[str | os.PathLike], pattern: str = "scores*.jsonl", *,
           recursive: bool = False) -> list[Path]:
    """Store files named directly, or found in folders (``pattern``, in subfolders too if ``recursive``); each once.

    A folder without any is an error.
    """
    out: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(f for f in (p.rglob(pattern) if recursive else p.glob(pattern))
                           if f.is_file() and not f.name.startswith("."))
            if not found:
                raise DataError(f"folder {str(p)!r} holds no {pattern} result store")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise DataError("no result store given")
    return [Path(p) for p in dict.fromkeys(p.resolve() for p in out)]


def load_stores(paths: Iterable[str | os.PathLike]) -> list[StoreFile]:
    """Read every store (a torn last line is skipped with a warning); any other problem raises DataError."""
    stores = []
    for path in expand(paths):
        parsed = parse_store(path)
        if parsed.header is None:
            raise DataError(f"result store {str(path)!r} is empty or has no header line")
        if parsed.torn:
            warnings.warn(f"result store {str(path)!r} ends in a torn line of {parsed.torn} bytes; it is ignored",
                          stacklevel=2)
        stores.append(StoreFile(path, parsed.header, list(parsed.rows.values())))
    return stores


def check_same_experiment(stores: Sequence[StoreFile]) -> dict[str, Any]:
    """The common settings of ``stores``; refuses other settings, keys, proxy versions or conflicting results."""
    first = stores[0]
    versions: dict[str, tuple[str, Path]] = {}
    seen: dict[tuple, tuple[Any, Path]] = {}
    for store in stores:
        diff = settings_difference(first.settings, store.settings)
        if diff:
            raise DataError(f"{str(store.path)!r} and {str(first.path)!r} hold results of different settings "
                            f"({'; '.join(diff)}); they are not one experiment")
        if store.key != first.key:
            raise DataError(f"{str(store.path)!r} is keyed by {', '.join(store.key)} but {str(first.path)!r} by "
                            f"{', '.join(first.key)}: they hold different kinds of results")
        for row in store.rows:
            if "proxy" in row:
                version = str(row.get("proxy_version"))
                known = versions.setdefault(row["proxy"], (version, store.path))
                if known[0] != version:
                    raise DataError(f"proxy {row['proxy']!r} is version {known[0]!r} in {str(known[1])!r} but "
                                    f"{version!r} in {str(store.path)!r}: the scores are not comparable")
            k = key_of(row, store.key)
            old = seen.setdefault(k, (result_of(row), store.path))
            if old[0] != result_of(row):
                raise DataError(f"{dict(zip(store.key, k))} has two different results: {old[0]} in "
                                f"{str(old[1])!r} and {result_of(row)} in {str(store.path)!r}")
    return first.settings


def missing_shards(stores: Sequence[StoreFile]) -> list[str]:
    """``"shard i of N"`` for each shard of a sharded run that is not among ``stores``."""
    counts = {s.shard[1] for s in stores if s.shard}
    present = {s.shard for s in stores if s.shard}
    return [f"shard {i} of {n}" for n in sorted(counts) for i in range(n) if (i, n) not in present]


@dataclass
class Merge:
    """A checked merge of input stores, not yet written (see :func:`prepare_merge`)."""

    path: Path
    settings: dict[str, Any]
    key: tuple[str, ...]
    info: dict[str, Any]
    rows: list[dict]
    inputs: list[Path]
    duplicates: int
    missing: list[str] = field(default_factory=list)

    @property
    def header(self) -> dict[str, Any]:
        return make_header(self.settings, self.key, self.info)

    def write(self) -> Path:
        """Write the merged store atomically (it must still not exist)."""
        if self.path.exists():
            raise DataError(f"merge output {str(self.path)!r} exists already; choose a new file")
        write_store(self.path, self.settings, self.rows, key=self.key, info=self.info)
        return self.path


def prepare_merge(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Merge:
    """Read and check every input for a merge into the new store ``out``; writes nothing.

    Warns (:class:`MissingShardWarning`) when the inputs are some but not all shards of a run.
    """
    out = check_writable(out)
    if out.exists():
        raise DataError(f"merge output {str(out)!r} exists already; choose a new file")
    stores = load_stores(paths)
    if any(s.path.resolve() == out.resolve() for s in stores):
        raise DataError(f"the merge output {str(out)!r} is also an input; choose another --out")
    settings = check_same_experiment(stores)
    missing = missing_shards(stores)
    if missing:
        warnings.warn(f"merging an incomplete set of shards: {', '.join(missing)} "
                      f"{'is' if len(missing) == 1 else 'are'} missing", MissingShardWarning, stacklevel=2)
    merged: dict[tuple, dict] = {}
    total = 0
    for store in stores:
        for row in store.rows:
            total += 1
            merged.setdefault(key_of(row, store.key), row)
    info = {**(stores[0].header.get("info") or {}), "merged_from": [str(s.path) for s in stores]}
    info.pop("shard", None)
    return Merge(out, settings, stores[0].key, info, [merged[k] for k in sorted(merged)],
                 [s.path for s in stores], total - len(merged), missing)


def merge_stores(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> Merge:
    """:func:`prepare_merge`, then write it."""
    merge = prepare_merge(paths, out)
    merge.write()
    return merge
