"""Independent tasks on this process, on worker processes, or on a Dask cluster, in completion order.

Every run (evaluation, BlockSwap search, benchmarks) hands the runner the same
three things: ``setup(config)``, run once per worker process (it loads the
data and the search space and returns the worker's state), ``task(state,
item)``, run per item, and the items. Results come back as each task finishes,
so the caller stores them one by one and a stopped run keeps everything that
had finished.

* ``workers <= 1``: in this process (no pickling, easiest to debug).
* ``workers > 1``: a pool of *spawned* processes (fresh interpreters: safe with
  torch's threads, and the same on Linux, macOS and Windows). A worker that
  dies (killed, out of memory) never hangs the run: the pool is restarted and
  the unfinished tasks are run again, up to ``max_restarts`` times; then the
  run stops with a :class:`~zc_proxies.errors.RunError`, finished results kept.
* ``scheduler="tcp://host:port"``: a Dask distributed cluster (``pip install
  zcbench[dask]``). Each Dask worker process runs ``setup`` once and keeps it;
  Dask reruns the tasks of a worker that dies on another one.

``setup``, ``task``, ``config`` and the items must be picklable (module-level
functions, plain data) for the last two.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from ..errors import ConfigError, RunError
from .memory import prepare_worker

C = TypeVar("C")
S = TypeVar("S")
R = TypeVar("R")

# Per-process worker state, keyed by the setup function and its config (one entry per process in practice).
_STATE: dict[tuple[str, str], Any] = {}
_STATE_LOCK = threading.Lock()
_WATCHING = False


class WorkerRestartWarning(UserWarning):
    """A worker process died; its pool was restarted and the unfinished tasks resubmitted."""


def _state_key(setup: Callable, config: Any) -> tuple[str, str]:
    return f"{setup.__module__}.{setup.__qualname__}", repr(config)


def worker_state(setup: Callable[[C], S], config: C) -> S:
    """``setup(config)``, computed once per process and kept (the state of the process's last run).

    After the first setup the process is tuned for scoring one network after
    another (:func:`~zc_proxies.runs.memory.prepare_worker`).
    """
    key = _state_key(setup, config)
    with _STATE_LOCK:
        if key not in _STATE:
            _STATE.clear()  # a process serves one run at a time
            _STATE[key] = setup(config)
            prepare_worker()
        return _STATE[key]


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """Poll for the parent's death (a SIGKILL leaves pool workers orphaned) and exit with it."""
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            os._exit(1)


def _call(setup: Callable, task: Callable, config: Any, item: Any, parent: int | None = None) -> Any:
    global _WATCHING
    if parent is not None and not _WATCHING:
        _WATCHING = True
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="zcbench-parent-watch").start()
    return task(worker_state(setup, config), item)


class Runner:
    """Where a run's tasks execute: this process, ``workers`` processes, or a Dask scheduler.

    Constructing it checks the choice (and connects to the scheduler), so a
    bad ``--workers`` or an unreachable scheduler stops a run before anything
    is stored.

    Parameters
    ----------
    workers
        Worker processes; 1 runs tasks in this process.
    scheduler
        A Dask scheduler address (``tcp://host:port``); overrides ``workers``.
    max_restarts
        How often a pool whose worker died is restarted before the run stops.
    connect_timeout
        How long to try reaching the scheduler, in seconds.
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None, *, max_restarts: int = 2,
                 connect_timeout: float = 10.0) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self.scheduler = scheduler
        self.max_restarts = max_restarts
        self._client = _connect(scheduler, connect_timeout) if scheduler else None

    def describe(self) -> str:
        """Where the tasks run, in words."""
        if self._client is not None:
            return f"Dask scheduler {self.scheduler} ({len(self._client.scheduler_info().get('workers', {}))} workers)"
        return f"{self.workers} worker process(es)" if self.workers > 1 else "this process"

    def map(self, setup: Callable[[C], S], task: Callable[[S, Any], R], items: Iterable[Any], config: C) -> Iterator[R]:
        """Yield ``task(state, item)`` for every item, in completion order; closing the iterator stops the work."""
        items = list(items)
        if not items:
            return iter(())
        if self._client is not None:
            return self._dask(setup, task, items, config)
        if self.workers <= 1 or len(items) == 1:
            return (task(worker_state(setup, config), item) for item in items)
        return self._pool(setup, task, items, config)

    def _pool(self, setup: Callable, task: Callable, items: list, config: Any) -> Iterator:
        todo = list(reversed(items))  # popped from the end: submitted in the given order
        restarts = 0
        workers = min(self.workers, len(items))
        while True:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
            running: dict[Future, Any] = {}
            try:
                while todo or running:
                    while todo and len(running) < 2 * workers:
                        item = todo.pop()
                        running[pool.submit(_call, setup, task, config, item, os.getpid())] = item
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        item = running.pop(future)
                        try:
                            result = future.result()
                        except BrokenProcessPool:
                            todo.append(item)
                            raise
                        yield result
                return
            except BrokenProcessPool as exc:
                todo.extend(running.values())
                restarts += 1
                if restarts > self.max_restarts:
                    raise RunError(
                        f"a worker process died {restarts} times ({exc}); {len(todo)} tasks are unfinished. "
                        "Finished results are kept: rerun to resume (with --workers 1 a failing task shows its "
                        "error)") from None
                warnings.warn(f"a worker process died ({exc}); restarting the pool and rerunning "
                              f"{len(todo)} unfinished tasks (restart {restarts} of at most {self.max_restarts})",
                              WorkerRestartWarning, stacklevel=2)
            finally:
                _shutdown(pool)

    def _dask(self, setup: Callable, task: Callable, items: list, config: Any) -> Iterator:
        from dask.distributed import as_completed
        from distributed import KilledWorker

        futures = [self._client.submit(_call, setup, task, config, item, pure=False) for item in items]
        try:
            for future in as_completed(futures):
                try:
                    yield future.result()
                except KilledWorker as exc:
                    raise RunError(f"Dask gave up on a task after its workers died repeatedly ({exc}); finished "
                                   "results are kept: rerun to resume") from None
        finally:
            self._client.cancel([f for f in futures if not f.done()])

    def close(self) -> None:
        """Disconnect from the scheduler (nothing to do for local runs)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel what has not started and end the processes that are running."""
    processes = list(getattr(pool, "_processes", {}).values())  # private, but the only handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(timeout=5)


def _connect(address: str, timeout: float):
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise ConfigError(f"--scheduler {address} needs Dask: pip install 'zcbench[dask]' ({exc})") from None
    try:
        return Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Dask scheduler at {address!r}: {exc}") from None
