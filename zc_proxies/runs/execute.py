"""The loop every run shares: tasks through the runner, each task's rows into the store as it finishes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .runner import Runner
from .store import ERROR, NAN, ResultStore

#: How many failure messages a summary keeps verbatim (the rest are counted).
KEEP_FAILURES = 5


@dataclass
class RunSummary:
    """What one pass of :func:`execute` did.

    ``failures`` holds the first :data:`KEEP_FAILURES` ``(key, message)``
    pairs of rows whose status was ``nan`` or ``error``; ``n_failed`` counts all.
    """

    requested: int
    skipped: int
    scored: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    n_failed: int = 0

    def add(self, rows: Iterable[Mapping[str, Any]], key: tuple[str, ...]) -> None:
        for r in rows:
            self.statuses[r["status"]] = self.statuses.get(r["status"], 0) + 1
            if r["status"] in (NAN, ERROR):
                self.n_failed += 1
                if len(self.failures) < KEEP_FAILURES:
                    self.failures.append(({k: r.get(k) for k in key}, str(r.get("message") or r["status"])))

    def failure_lines(self) -> list[str]:
        """The kept failure messages, then a count of the others: for a run's closing output."""
        lines = [", ".join(f"{k} {v}" for k, v in where.items()) + f": {msg}" for where, msg in self.failures]
        if self.n_failed > len(self.failures):
            lines.append(f"... and {self.n_failed - len(self.failures)} more (status nan or error in the store)")
        return lines


def execute(store: ResultStore, runner: Runner, setup: Callable[[Any], Any], task: Callable[[Any, Any], list[dict]],
            items: list, config: Any, *, total: int, desc: str, unit: str = "task", progress: bool = True,
            on_rows: Callable[[list[dict]], None] | None = None,
            postfix: Callable[[list[dict]], Mapping[str, Any] | None] | None = None) -> RunSummary:
    """Run ``task`` over ``items`` and append each one's rows to ``store`` as soon as it finishes.

    Parameters
    ----------
    total
        How many tasks the whole run has (``total - len(items)`` were stored already).
    desc, unit
        The progress bar's label and unit.
    on_rows
        Called with each task's rows after they are stored.
    postfix
        Given each task's rows, returns fields to show beside the progress bar (or None).
    """
    summary = RunSummary(requested=total, skipped=total - len(items))
    bar = None
    if progress and items:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=summary.skipped, unit=unit, dynamic_ncols=True, desc=desc[:60])
    start = time.perf_counter()
    threads_before = torch.get_num_threads()  # in-process tasks may set this process's threads; put them back
    try:
        for rows in runner.map(setup, task, items, config):
            store.append(rows)
            summary.scored += 1
            summary.add(rows, store.key)
            if on_rows is not None:
                on_rows(rows)
            if bar is not None:
                fields = dict(postfix(rows) or {}) if postfix is not None else {}
                if summary.n_failed:
                    fields["nan_or_failed"] = summary.n_failed
                if fields:
                    bar.set_postfix(fields, refresh=False)
                bar.update(1)
    finally:
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - start
    return summary
