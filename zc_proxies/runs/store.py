"""The result store: one JSON object per line, a settings header, keyed rows, one writer at a time.

Every multi-task run keeps its results here: evaluations (one row per
architecture, proxy and seed), BlockSwap searches (one row per candidate),
merged shards and imported score files. Layout::

    {"format": "zcbench-scores", "format_version": 1, "key": [...], "settings": {...}, "info": {...}}
    {"index": 17, "proxy": "fisher", "seed": 0, "status": "ok", "score": ..., ...}
    ...

Rules, the same for every kind of run:

* **Settings.** The header's ``settings`` are what makes two results
  comparable. Opening a store under other settings is refused with a
  :class:`~zc_proxies.errors.DataError` naming each difference
  (:func:`settings_difference`), so one file never mixes incomparable numbers.
  ``info`` (versions, machine, shard) is informational and never compared.
* **Keys.** The header's ``key`` names the fields that identify a result
  (``index, proxy, seed`` for an evaluation, ``index`` for a search). A key is
  stored once: appending a stored key is refused, and a file holding one key
  with two different results is refused on opening (identical copies, as a
  hand-concatenation leaves, are read as one).
* **Durability.** Rows are appended and ``fsync``-ed one task at a time, so a
  killed run loses at most the task being written. That task can leave a torn
  last line (no newline, or not valid JSON); opening the store for writing cuts
  it away with a :class:`TornLineWarning`, and reading skips it with one. A
  bad line anywhere else is an error, never silently dropped. A failed append
  (disk full) is cut back at once, so the file stays whole.
* **One writer.** A store open for writing holds a :class:`~zc_proxies.runs.lock.WriterLock`:
  a second writer is refused at once with a message naming the holder, or waits.
  Whole-file rewrites (:meth:`ResultStore.discard`) are atomic.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, MissingDataError, RunError
from .atomic import atomic_open
from .lock import WriterLock

FORMAT = "zcbench-scores"
FORMAT_VERSION = 1

# Values of ``status`` in a row.
OK, NAN, ERROR = "ok", "nan", "error"
STATUSES = (OK, NAN, ERROR)

#: The key of an evaluation's score rows; a header without ``key`` (older stores) means this one.
SCORE_KEY = ("index", "proxy", "seed")

#: Fields every evaluation score row carries.
ROW_FIELDS = (
    "space", "dataset", "index", "arch", "proxy", "proxy_version", "seed", "arch_seed", "batch_size",
    "data_source", "stand_in_for", "score", "seconds", "status", "message",
)

#: Settings added after stores were first written, with the value a store that lacks them was made under.
SETTING_DEFAULTS: Mapping[str, Any] = {"sampling": "uniform", "seeding": 1}

#: The seed derivation (:mod:`zc_proxies.runs.seeding`) that new results are made under.
SEEDING = 2


class TornLineWarning(UserWarning):
    """A store ended in a partial line (a run was killed mid-write); that line was dropped."""


def _dumps(obj: Any) -> str:
    # allow_nan=False: a score is finite or null (with status "nan"), never a bare NaN token.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def normalise(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as it reads back from a store (tuples become lists, keys strings)."""
    return json.loads(_dumps(dict(obj)))


def key_of(row: Mapping[str, Any], key: Sequence[str] = SCORE_KEY) -> tuple:
    """The key of a row: its ``key`` fields, integers where the stored value is an integer."""
    return tuple(int(row[k]) if isinstance(row[k], (int, float)) and not isinstance(row[k], bool) else row[k]
                 for k in key)


def row_key(row: Mapping[str, Any]) -> tuple[int, str, int]:
    """The (arch index, proxy, seed) key of an evaluation's score row."""
    return int(row["index"]), str(row["proxy"]), int(row["seed"])


def result_of(row: Mapping[str, Any]) -> tuple:
    """What must agree between two copies of one key: status, score and arch."""
    return row.get("status"), row.get("score"), row.get("arch", row.get("blocks"))


def settings_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Descriptions of every setting that differs between two settings dicts (nested dicts by dotted name).

    A setting of :data:`SETTING_DEFAULTS` that one side lacks counts as its default.
    """
    if not isinstance(stored, Mapping):
        return [f"{prefix.rstrip('.') or 'settings'}: stored {stored!r}, now {dict(wanted)!r}"]
    out = []
    for name in sorted(set(stored) | set(wanted)):
        unset = SETTING_DEFAULTS.get(name, "<unset>") if not prefix else "<unset>"
        a, b = stored.get(name, unset), wanted.get(name, unset)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += settings_difference(a, b, f"{prefix}{name}.")
        elif a != b:
            out.append(f"{prefix}{name}: stored {a!r}, now {b!r}")
    return out


def check_proxy_versions(rows: Iterable[Mapping[str, Any]], versions: Mapping[str, str], where: str) -> None:
    """Refuse rows whose proxy was scored under another version than ``versions`` gives."""
    for row in rows:
        want = versions.get(row.get("proxy"))
        if want is not None and str(row.get("proxy_version")) != str(want):
            raise DataError(
                f"{where} holds {row['proxy']!r} scores of proxy version {row.get('proxy_version')!r}, "
                f"but the installed {row['proxy']!r} is version {want!r}: the numbers are not comparable. "
                "Write to another --out folder (or delete the old store)."
            )


# -- reading ----------------------------------------------------------------------------------------------
@dataclass
class Parsed:
    """A store file as read: header, one row per key, and what a repair would cut."""

    path: Path
    header: dict | None
    rows: dict[tuple, dict] = field(default_factory=dict)
    good_bytes: int = 0          # length of the file up to the end of its last good line
    torn: int = 0                # bytes after that (a torn last line)
    duplicates: int = 0          # identical extra copies of a key

    @property
    def key(self) -> tuple[str, ...]:
        return tuple((self.header or {}).get("key") or SCORE_KEY)

    @property
    def settings(self) -> dict:
        return dict((self.header or {}).get("settings") or {})

    @property
    def info(self) -> dict:
        return dict((self.header or {}).get("info") or {})


def _check_header(path: Path, obj: dict) -> None:
    if obj.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is not a zcbench result store: its first line has no "
                        f"\"format\": {FORMAT!r} header")
    if obj.get("format_version") != FORMAT_VERSION:
        raise DataError(f"result store {str(path)!r} has format version {obj.get('format_version')!r}; "
                        f"this zcbench reads version {FORMAT_VERSION}")


def _check_row(path: Path, lineno: int, obj: dict, key: Sequence[str]) -> None:
    missing = [k for k in (*key, "status") if k not in obj]
    if missing:
        raise DataError(f"result store {str(path)!r} line {lineno} lacks the field(s) {', '.join(missing)}")
    if obj["status"] not in STATUSES:
        raise DataError(f"result store {str(path)!r} line {lineno} has status {obj['status']!r}, "
                        f"expected one of {', '.join(STATUSES)}")


def parse_store(path: str | os.PathLike) -> Parsed:
    """Read a store file (no lock, no repair); raises DataError for anything but a torn last line."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a folder, not a result store file")
    if not path.is_file():
        raise MissingDataError(f"no result store at {str(path)!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read result store {str(path)!r}: {exc.strerror}") from exc
    lines = data.split(b"\n")
    parsed = Parsed(path, None)
    offset = 0
    last = len(lines) - 1  # lines[last] is what follows the last newline: empty unless torn
    for number, raw in enumerate(lines):
        end = offset + len(raw) + (number < last)
        if number == last:
            parsed.torn = len(raw)
            break
        if not raw.strip():
            parsed.good_bytes, offset = end, end
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if number == last - 1 and not lines[last]:
                parsed.torn = len(raw) + 1  # the final line is garbage though terminated: torn as well
                break
            raise DataError(f"result store {str(path)!r} line {number + 1} is not valid JSON ({exc}); "
                            "only the last line of a store may be torn") from exc
        if not isinstance(obj, dict):
            raise DataError(f"result store {str(path)!r} line {number + 1} is a JSON {type(obj).__name__}, "
                            "not an object")
        if parsed.header is None:
            _check_header(path, obj)
            parsed.header = obj
        else:
            _check_row(path, number + 1, obj, parsed.key)
            k = key_of(obj, parsed.key)
            old = parsed.rows.get(k)
            if old is None:
                parsed.rows[k] = obj
            elif result_of(old) == result_of(obj):
                parsed.duplicates += 1
            else:
                raise DataError(f"result store {str(path)!r} holds two different results for "
                                f"{dict(zip(parsed.key, k))} (line {number + 1}: {result_of(obj)}, earlier: "
                                f"{result_of(old)}); it was written by two runs at once or edited by hand")
        parsed.good_bytes, offset = end, end
    return parsed


def read_store(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """``(header, rows)`` of a store, read-only; a torn last line is skipped with a warning."""
    parsed = parse_store(path)
    if parsed.header is None:
        raise DataError(f"result store {str(path)!r} is empty or has no header line")
    if parsed.torn:
        warnings.warn(f"result store {str(path)!r} ends in a torn line of {parsed.torn} bytes "
                      "(a run was killed mid-write); it is ignored", TornLineWarning, stacklevel=2)
    return parsed.header, list(parsed.rows.values())


# -- writing ----------------------------------------------------------------------------------------------
def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before anything is written, a store path that cannot be a store file in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what}: {str(path)!r} is a folder where the result store file should be; "
                          "move it away or choose another --out")
    folder = path.parent
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what}: {str(parent)!r} is a file, not a folder; choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{what}: cannot write in {str(parent)!r} (permission denied)")
            break
    return path


def make_header(settings: Mapping[str, Any], key: Sequence[str], info: Mapping[str, Any] | None) -> dict:
    """The first line of a new store."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "key": list(key), "settings": normalise(settings),
            "info": normalise(info or {})}


def write_store(path: str | os.PathLike, settings: Mapping[str, Any], rows: Iterable[Mapping[str, Any]], *,
                key: Sequence[str] = SCORE_KEY, info: Mapping[str, Any] | None = None) -> dict:
    """Write a whole new store atomically, under the writer lock; returns its header."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = make_header(settings, key, info)
    with WriterLock(path), atomic_open(path, "w") as fh:
        fh.write("".join(_dumps(o) + "\n" for o in [header, *rows]))
    return header


class ResultStore:
    """An append-only result file opened for writing by one run (see the module docstring).

    Parameters
    ----------
    path
        The JSONL file; created (with its header) if absent. None keeps the
        rows in memory only (a run nobody needs to resume, e.g. in a notebook).
    settings
        The run's settings; an existing store must have been written under exactly these.
    key
        Fields that identify a result (for a new store; an existing one keeps its own).
    proxy_versions
        ``{proxy: version}`` for the proxies this run scores; stored rows of
        those proxies must carry the same versions.
    info
        Informational header fields for a new file (versions, machine, shard); not compared.
    wait
        If another process writes this store: False refuses at once, True waits for it.
    on_wait
        Called with a sentence when waiting starts.
    """

    def __init__(self, path: str | os.PathLike | None, settings: Mapping[str, Any], *,
                 key: Sequence[str] = SCORE_KEY, proxy_versions: Mapping[str, str] | None = None,
                 info: Mapping[str, Any] | None = None, wait: bool = False,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.settings = normalise(settings)
        if path is None:
            self.path, self.key, self._rows, self._lock = None, tuple(key), {}, None
            self._header(info)
            return
        self.path = check_writable(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.path, wait=wait, on_wait=on_wait)
        try:
            self._open(tuple(key), info)
            if proxy_versions:
                check_proxy_versions(self._rows.values(), proxy_versions, f"result store {str(self.path)!r}")
        except BaseException:
            self._lock.release()
            raise

    def _open(self, key: tuple[str, ...], info: Mapping[str, Any] | None) -> None:
        self.key = key
        self._rows: dict[tuple, dict] = {}
        if not self.path.exists():
            self._append_lines([self._header(info)])
            return
        parsed = parse_store(self.path)
        if parsed.torn:
            warnings.warn(
                f"result store {str(self.path)!r} ended in a torn line of {parsed.torn} bytes "
                "(a run was killed mid-write); it was cut away and that task will run again",
                TornLineWarning, stacklevel=3)
            self._truncate(parsed.good_bytes)
        if parsed.header is None:  # empty file, or only a torn header: start it afresh
            self._truncate(0)
            self._append_lines([self._header(info)])
            return
        diff = settings_difference(parsed.settings, self.settings)
        if diff:
            raise DataError(
                f"result store {str(self.path)!r} was written under other settings ({'; '.join(diff)}); "
                "results made under different settings are not comparable. Use another --out, "
                "or rerun with the stored settings."
            )
        if parsed.key != key:
            raise DataError(f"result store {str(self.path)!r} is keyed by {', '.join(parsed.key)}, not by "
                            f"{', '.join(key)}: it holds another kind of result")
        self.header = parsed.header
        self._rows = parsed.rows

    def _header(self, info: Mapping[str, Any] | None) -> dict:
        self.header = make_header(self.settings, self.key, info)
        return self.header

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())

    def _append_lines(self, objs: Iterable[Mapping[str, Any]]) -> None:
        if self.path is None:
            return
        data = "".join(_dumps(dict(o)) + "\n" for o in objs).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as exc:
                try:  # leave the file whole: cut the partial write away again
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                except OSError:
                    pass  # the next opening repairs the torn tail
                raise RunError(f"writing to result store {str(self.path)!r} failed ({exc.strerror or exc}); "
                               f"the {len(self._rows)} results stored before are kept: fix the cause and rerun "
                               "to resume") from exc
        finally:
            os.close(fd)

    # -- queries ------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> list[dict]:
        """Every stored row (one per key), in the order first stored."""
        return list(self._rows.values())

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows())

    def get(self, key: tuple) -> dict | None:
        """The row stored for ``key``, or None."""
        return self._rows.get(key)

    @property
    def info(self) -> dict:
        return dict(self.header.get("info") or {})

    # -- writing ------------------------------------------------------------------
    def _require_lock(self) -> None:
        if self._lock is not None and not self._lock.held:
            raise RunError(f"result store {str(self.path)!r} was closed; open it again to write")

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (one task's, typically) and fsync; a stored key is refused."""
        self._require_lock()
        rows = [normalise(r) for r in rows]
        keys = []
        for r in rows:
            if r.get("status") not in STATUSES:
                raise ValueError(f"row status must be one of {STATUSES}, got {r.get('status')!r}")
            k = key_of(r, self.key)
            if k in self._rows or k in keys:
                raise DataError(f"result store {str(self.path)!r} already holds a row for "
                                f"{dict(zip(self.key, k))}")
            keys.append(k)
        if not rows:
            return
        self._append_lines(rows)
        for k, r in zip(keys, rows):
            self._rows[k] = r

    def discard(self, keys: Iterable[tuple]) -> int:
        """Remove the rows of ``keys`` (to compute them again); the file is rewritten atomically."""
        self._require_lock()
        gone = [k for k in dict.fromkeys(keys) if k in self._rows]
        if not gone:
            return 0
        kept = {k: r for k, r in self._rows.items() if k not in set(gone)}
        if self.path is not None:
            with atomic_open(self.path, "w") as fh:
                fh.write("".join(_dumps(o) + "\n" for o in [self.header, *kept.values()]))
        self._rows = kept
        return len(gone)

    def close(self) -> None:
        """Release the writer lock; the rows stay readable through :meth:`rows`."""
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
