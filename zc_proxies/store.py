"""The score store: one JSON object per line, appended and synced row by row.

Layout of a store file::

    {"format": "zcbench-scores", "format_version": 1, "settings": {...}, ...}   <- header
    {"space": "nb201", "index": 17, "proxy": "fisher", "seed": 0, "score": ..., ...}
    ...

A score row holds: ``space``, ``dataset`` (the classifier/minibatch dataset),
``index`` and ``arch``; ``proxy`` and ``proxy_version``; ``seed`` (the run's)
and ``arch_seed`` (derived from it and the index; it fixes the minibatch and
the initialisation); ``batch_size``; ``data_source`` (the images used) and
``stand_in_for`` (null, or the dataset images they replace); ``score`` (null
unless ``status`` is ``ok``); ``seconds`` (that proxy's wall time);
``status`` (``ok``, ``nan``, ``error``) and ``message``; plus ``device``,
``threads`` and ``n_scored_together``. Rows are keyed by (index, proxy, seed).

The header's ``settings`` are what makes two scores comparable (space,
dataset, batch size, data source, stand-in, augmentation, classifier width).
Opening a store under other settings is refused with a :class:`DataError`
that names the differing setting, so one file never mixes incomparable numbers.
A row's proxy version is checked the same way, per proxy.

Why JSONL: every finished architecture is appended and ``os.fsync``-ed, so a
run killed at any moment loses at most the row being written. That row can be
left torn (partial JSON without its newline); opening the store for writing
cuts it away with a warning, and reading skips it with a warning. Shards from
many machines are separate files that :func:`merge_stores` joins.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError, MissingDataError

FORMAT = "zcbench-scores"
FORMAT_VERSION = 1

# Values of ``status`` in a row.
OK, NAN, ERROR = "ok", "nan", "error"
STATUSES = (OK, NAN, ERROR)

# The fields that identify one score: a rerun skips a row whose key is stored.
KEY_FIELDS = ("index", "proxy", "seed")

# Fields every score row carries.
ROW_FIELDS = (
    "space", "dataset", "index", "arch", "proxy", "proxy_version", "seed", "arch_seed", "batch_size",
    "data_source", "stand_in_for", "score", "seconds", "status", "message",
)

RowKey = tuple[int, str, int]


class TornLineWarning(UserWarning):
    """A store ended in a partial line (a run was killed mid-write); that line was dropped."""


def row_key(row: Mapping[str, Any]) -> RowKey:
    """The (arch index, proxy, seed) key of a score row."""
    return int(row["index"]), str(row["proxy"]), int(row["seed"])


def _dumps(obj: Any) -> str:
    # allow_nan=False: a score is finite or null (with status "nan"), never a bare NaN token.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


@dataclass
class _Parsed:
    header: dict | None
    rows: list[dict] = field(default_factory=list)
    good_bytes: int = 0          # length of the file up to the end of its last complete line
    torn: bytes = b""            # the partial last line, if any


def _parse(path: Path) -> _Parsed:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    parsed = _Parsed(header=None, good_bytes=end, torn=data[end:])
    for lineno, raw in enumerate(data[:end].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"score store {str(path)!r} line {lineno} is not valid JSON ({exc.msg}); "
                            "only the last line of a store may be torn") from exc
        if not isinstance(obj, dict):
            raise DataError(f"score store {str(path)!r} line {lineno} is a JSON {type(obj).__name__}, not an object")
        if parsed.header is None:
            if obj.get("format") != FORMAT:
                raise DataError(f"{str(path)!r} is not a zcbench score store: its first line has no "
                                f"\"format\": {FORMAT!r} header")
            if obj.get("format_version") != FORMAT_VERSION:
                raise DataError(f"score store {str(path)!r} has format version {obj.get('format_version')!r}; "
                                f"this zcbench reads version {FORMAT_VERSION}")
            parsed.header = obj
            continue
        missing = [k for k in KEY_FIELDS + ("status",) if k not in obj]
        if missing:
            raise DataError(f"score store {str(path)!r} line {lineno} lacks the field(s) {', '.join(missing)}")
        if obj["status"] not in STATUSES:
            raise DataError(f"score store {str(path)!r} line {lineno} has status {obj['status']!r}, "
                            f"expected one of {', '.join(STATUSES)}")
        parsed.rows.append(obj)
    return parsed


#: Settings added after stores were first written, with the value a store that lacks them was made under.
SETTING_DEFAULTS: Mapping[str, Any] = {"sampling": "uniform"}


def settings_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Descriptions of every setting that differs between two settings dicts.

    A setting of :data:`SETTING_DEFAULTS` that one side lacks counts as its default.
    """
    out = []
    for key in sorted(set(stored) | set(wanted)):
        unset = SETTING_DEFAULTS.get(key, "<unset>")
        a, b = stored.get(key, unset), wanted.get(key, unset)
        if a != b:
            out.append(f"{key}: stored {a!r}, now {b!r}")
    return out


def check_proxy_versions(rows: Iterable[Mapping[str, Any]], versions: Mapping[str, str], where: str) -> None:
    """Refuse rows whose proxy was scored under another version than ``versions`` gives."""
    for row in rows:
        want = versions.get(row["proxy"])
        if want is not None and str(row.get("proxy_version")) != str(want):
            raise DataError(
                f"{where} holds {row['proxy']!r} scores of proxy version {row.get('proxy_version')!r}, "
                f"but the installed {row['proxy']!r} is version {want!r}: the numbers are not comparable. "
                "Write to another --out folder (or delete the old store)."
            )


def read_store(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """``(header, rows)`` of a store, read-only; a torn last line is skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"no score store at {str(path)!r}")
    parsed = _parse(path)
    if parsed.header is None:
        raise DataError(f"score store {str(path)!r} is empty or has no header line")
    if parsed.torn:
        warnings.warn(f"score store {str(path)!r} ends in a torn line of {len(parsed.torn)} bytes "
                      "(a run was killed mid-write); it is ignored", TornLineWarning, stacklevel=2)
    return parsed.header, parsed.rows


class ScoreStore:
    """An append-only score file opened for one run's settings.

    Parameters
    ----------
    path
        The JSONL file; created (with its header) if absent.
    info
        Informational header fields for a new file (versions, machine); not compared.
    settings
        The run's settings. An existing store must have been written under
        exactly these, else :class:`DataError` names each difference.
    proxy_versions
        ``{proxy: version}`` for the proxies this run scores; stored rows of
        those proxies must carry the same versions.
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any],
                 proxy_versions: Mapping[str, str] | None = None, info: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.settings = dict(json.loads(_dumps(dict(settings))))  # normalised as stored
        self._rows: dict[RowKey, dict] = {}
        if self.path.exists():
            self._open_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_lines([self._header(info)])
        if proxy_versions:
            check_proxy_versions(self._rows.values(), proxy_versions, f"score store {str(self.path)!r}")

    def _header(self, info: Mapping[str, Any] | None) -> dict:
        # ``info`` (versions, host, ...) is informational; only ``settings`` are compared on reopening.
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": self.settings, "info": dict(info or {})}

    def _open_existing(self) -> None:
        parsed = _parse(self.path)
        if parsed.torn:
            warnings.warn(
                f"score store {str(self.path)!r} ended in a torn line of {len(parsed.torn)} bytes "
                "(a run was killed mid-write); it was cut away and that architecture will be scored again",
                TornLineWarning, stacklevel=3)
            with open(self.path, "r+b") as fh:
                fh.truncate(parsed.good_bytes)
                fh.flush()
                os.fsync(fh.fileno())
        if parsed.header is None:  # empty file, or only a torn header: start it afresh
            self._write_lines([self._header(None)])
            return
        diff = settings_difference(parsed.header.get("settings", {}), self.settings)
        if diff:
            raise DataError(
                f"score store {str(self.path)!r} was written under other settings ({'; '.join(diff)}); "
                "scores made under different settings are not comparable. Use another --out folder, "
                "or rerun with the stored settings."
            )
        for row in parsed.rows:
            self._rows[row_key(row)] = row

    def _write_lines(self, objs: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(_dumps(dict(o)) + "\n" for o in objs)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    # -- queries ------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        """Every stored row (one per key)."""
        return list(self._rows.values())

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows())

    # -- writing ------------------------------------------------------------------
    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (one architecture's, typically) and fsync; stored keys are refused."""
        rows = [dict(r) for r in rows]
        for r in rows:
            if r.get("status") not in STATUSES:
                raise ValueError(f"row status must be one of {STATUSES}, got {r.get('status')!r}")
            if row_key(r) in self._rows:
                raise DataError(f"score store {str(self.path)!r} already holds a row for "
                                f"(index, proxy, seed) = {row_key(r)}")
        if not rows:
            return
        self._write_lines(rows)
        for r in rows:
            self._rows[row_key(r)] = json.loads(_dumps(r))


def merge_stores(paths: Iterable[str | os.PathLike], out: str | os.PathLike) -> tuple[dict, int, int]:
    """Join store files (shards) into ``out``; return ``(settings, rows written, duplicates dropped)``.

    All inputs must share their settings and proxy versions. A key stored twice
    with the same result is kept once; stored twice with different results it
    is refused (that means the inputs are not the same experiment).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("nothing to merge: give at least one score store")
    settings: dict | None = None
    first = ""
    merged: dict[RowKey, dict] = {}
    versions: dict[str, tuple[str, str]] = {}
    dropped = 0
    for path in paths:
        header, rows = read_store(path)
        these = header.get("settings", {})
        if settings is None:
            settings, first = these, str(path)
        else:
            diff = settings_difference(settings, these)
            if diff:
                raise DataError(f"cannot merge {str(path)!r} with {first!r}: other settings ({'; '.join(diff)})")
        for row in rows:
            version = str(row.get("proxy_version"))
            seen = versions.setdefault(row["proxy"], (version, str(path)))
            if seen[0] != version:
                raise DataError(f"cannot merge: proxy {row['proxy']!r} is version {seen[0]!r} in {seen[1]!r} "
                                f"but {version!r} in {str(path)!r}")
            key = row_key(row)
            old = merged.get(key)
            if old is None:
                merged[key] = row
                continue
            dropped += 1
            if _result(old) != _result(row):
                raise DataError(f"cannot merge: (index, proxy, seed) = {key} has two different results "
                                f"({_result(old)} and {_result(row)}, the second in {str(path)!r})")
    out = Path(out)
    if out.exists():
        raise DataError(f"merge output {str(out)!r} exists already; choose a new file")
    store = ScoreStore(out, settings or {}, info={"merged_from": [str(p) for p in paths]})
    ordered = sorted(merged.values(), key=row_key)
    store.append(ordered)
    return settings or {}, len(ordered), dropped


def _result(row: Mapping[str, Any]) -> tuple:
    return row.get("status"), row.get("score"), row.get("arch")
