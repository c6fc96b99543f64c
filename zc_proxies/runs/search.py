"""A resumable search: candidates ``0..samples-1`` scored into a result store, the best one picked.

What a candidate is, and how it is scored, belongs to the caller (BlockSwap's
classification and COCO searches): it passes the engine a picklable job, a
``setup(job)`` and a ``task(state, i) -> [row]``. The engine does the rest, the
same way for every search: the store keyed by candidate ``index`` under the
search's settings (a rerun with the same settings resumes, other settings are
refused), workers, shards and Dask through the :class:`~zc_proxies.runs.runner.Runner`,
the progress bar, and the winner (highest score; ties: lowest index).
Candidate ``i`` depends only on the search seed and ``i``, so any worker count
or shard split gives the same rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NonFiniteScoreError, RunError, ZCBenchError
from .execute import RunSummary, execute
from .runner import Runner
from .shards import Shard, shard_items, shard_path
from .store import ERROR, NAN, OK, SEEDING, ResultStore

CANDIDATE_KEY = ("index",)


@dataclass
class SearchResult:
    """The winner and every stored candidate row of this run's candidates (sorted by index).

    ``best`` is None only when no candidate could be scored. ``complete`` says
    whether every candidate ``0..samples-1`` is in the store (a shard's store
    holds only its share: its ``best`` is the shard's best).
    """

    best: dict[str, Any] | None
    rows: list[dict[str, Any]]
    summary: RunSummary
    feasible: tuple[int, int]
    settings: dict[str, Any]
    complete: bool
    path: Path | None

    @property
    def scored(self) -> int:
        """Candidates scored in this run (the rest came from the store)."""
        return self.summary.scored

    @property
    def seconds(self) -> float:
        return self.summary.seconds


def best_row(rows: Any) -> dict[str, Any] | None:
    """The highest-scoring ``ok`` row (ties: the lowest index), or None."""
    ok = [r for r in rows if r.get("status") == OK and r.get("score") is not None]
    return max(ok, key=lambda r: (r["score"], -int(r["index"]))) if ok else None


def scored_row(row: dict[str, Any], started: float, compute: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """``row`` completed with ``compute(row)`` as its score and a status; failures are recorded, not raised.

    A :class:`NonFiniteScoreError` gives status ``nan``; a candidate the
    proxy refuses or torch fails on (out of memory, ...) status ``error``,
    so that one bad candidate does not end the search. ``compute`` may add
    fields to the row.
    """
    try:
        row["score"] = float(compute(row))
        row["status"], row["message"] = OK, None
    except NonFiniteScoreError as exc:
        row["score"], row["status"], row["message"] = None, NAN, str(exc)
    except (ZCBenchError, RuntimeError) as exc:
        row["score"], row["status"] = None, ERROR
        row["message"] = str(exc) if isinstance(exc, ZCBenchError) else f"{type(exc).__name__}: {exc}"
    row["seconds"] = round(time.perf_counter() - started, 6)
    return row


def run_search(job: Any, setup: Callable[[Any], Any], task: Callable[[Any, int], list[dict]], *, samples: int,
               settings: Mapping[str, Any], feasible: tuple[int, int], store: str | os.PathLike | None,
               runner: Runner | None = None, shard: Shard | None = None, progress: bool = True,
               desc: str = "search", wait: bool = False, on_wait: Callable[[str], None] | None = None,
               on_candidate: Callable[[dict[str, Any]], None] | None = None,
               info: Mapping[str, Any] | None = None) -> SearchResult:
    """Score the candidates of ``0..samples-1`` (this shard's) that ``store`` lacks; pick the best stored one.

    Parameters
    ----------
    job, setup, task
        ``setup(job)`` runs once per worker; ``task(state, i)`` returns candidate ``i``'s row, in a list.
    settings
        What the store is bound to (everything that determines a candidate's row but ``samples``).
    store
        The JSONL result store (None: keep the rows in memory); a shard writes its own file beside it.
    """
    path = shard_path(store, shard) if store is not None else None
    items = shard_items(range(samples), shard)
    full_info = dict(info or {})
    if shard:
        full_info["shard"] = list(shard)
    settings = {**settings, "seeding": SEEDING}
    with ResultStore(path, settings, key=CANDIDATE_KEY, info=full_info, wait=wait, on_wait=on_wait) as results:
        todo = [i for i in items if (i,) not in results]
        leader = [best_row(results.rows())]

        def postfix(rows: list[dict]) -> dict[str, str] | None:
            leader[0] = best_row([*rows, *([leader[0]] if leader[0] else [])])
            return {"best": f"{leader[0]['score']:.4g}"} if leader[0] else None

        summary = execute(results, runner or Runner(), setup, task, todo, job, total=len(items), desc=desc,
                          unit="cand", progress=progress, postfix=postfix,
                          on_rows=(lambda rows: [on_candidate(r) for r in rows]) if on_candidate else None)
        stored = {int(r["index"]): r for r in results.rows() if int(r["index"]) < samples}
        rows = [stored[i] for i in sorted(stored)]
        header_settings = results.settings
    best = best_row(rows)
    if best is None and rows:
        raise RunError(f"none of the {len(rows)} candidates could be scored; the store's messages say why, e.g. "
                       f"{rows[0].get('message')!r}")
    return SearchResult(best, rows, summary, feasible, header_settings, len(stored) == samples, path)
