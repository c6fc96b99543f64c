"""The search's candidate store: one JSON object per line, appended and fsynced one by one.

A killed search loses at most the candidate it was scoring. On a rerun the
store is read back, a torn last line (a write cut short: no closing newline,
or not valid JSON) is cut off, and finished candidates are skipped. A bad line
anywhere else is an error, never silently dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataError


class CandidateStore:
    """Append-only JSONL file of candidate rows (dicts)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fh = None
        self.torn_bytes = 0  # size of the torn tail found by the last read (0: none)

    def read(self) -> list[dict[str, Any]]:
        """All complete rows, in file order; a torn last line is reported in ``torn_bytes``."""
        self.torn_bytes = 0
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # text after the last newline: empty unless the last write was cut short
        rows: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if number == len(lines) and not tail:
                    # the last newline-terminated line is garbage: treat as torn as well
                    self.torn_bytes = len(line) + 1
                    break
                raise DataError(f"candidate store {str(self.path)!r}, line {number}: not valid JSON ({exc}); "
                                "only a torn last line is repaired") from exc
            if not isinstance(row, dict):
                raise DataError(f"candidate store {str(self.path)!r}, line {number}: expected a JSON object, "
                                f"got {type(row).__name__}")
            rows.append(row)
        if tail:
            self.torn_bytes += len(tail)
        return rows

    def repair(self) -> int:
        """Cut a torn tail off the file (after :meth:`read`); returns the bytes removed."""
        removed = self.torn_bytes
        if removed:
            size = self.path.stat().st_size
            with open(self.path, "r+b") as fh:
                fh.truncate(size - removed)
                fh.flush()
                os.fsync(fh.fileno())
            self.torn_bytes = 0
        return removed

    def __enter__(self) -> CandidateStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def append(self, row: dict[str, Any]) -> None:
        """Write one row as a line, then flush and fsync it."""
        if self._fh is None:
            raise RuntimeError("open the store with 'with store:' before appending")
        self._fh.write(json.dumps(row, allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())
