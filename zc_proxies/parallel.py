"""Run independent tasks on worker processes, or on a Dask cluster, in completion order.

Every backend takes the same three things: ``setup(config)`` run once per
worker process (it loads the data and the search space and returns the
worker's state), ``task(state, item)`` run per item, and the items. Results
come back as soon as each task finishes, so the caller can store them one by
one and a killed run keeps everything that had finished.

* ``workers <= 1``: in this process (no pickling, easiest to debug).
* ``workers > 1``: a local pool of *spawned* processes (fresh interpreters:
  safe with torch's threads, and the same behaviour on Linux, macOS and Windows).
* ``scheduler="tcp://host:port"``: a Dask distributed cluster (``pip install
  zcbench[dask]``); each Dask worker process runs ``setup`` once and keeps it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .errors import ZCBenchError

C = TypeVar("C")
S = TypeVar("S")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

# Per-process worker state, keyed by the setup function and its config (one entry per process in practice).
_STATE: dict[tuple[str, str], Any] = {}


def _state_key(setup: Callable, config: Any) -> tuple[str, str]:
    return f"{setup.__module__}.{setup.__qualname__}", repr(config)


def _ensure_state(setup: Callable[[C], S], config: C) -> S:
    key = _state_key(setup, config)
    if key not in _STATE:
        _STATE.clear()  # a process serves one evaluation at a time
        _STATE[key] = setup(config)
    return _STATE[key]


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """Poll for the parent's death (a SIGKILL leaves pool workers orphaned and blocked) and exit with it."""
    while True:
        time.sleep(every)
        if os.getppid() != parent:
            os._exit(1)


def _pool_init(setup: Callable[[C], S], config: C, parent: int) -> None:
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="zcbench-parent-watch").start()
    _ensure_state(setup, config)


def _pool_call(args: tuple[Callable, Callable, Any, Any]) -> Any:
    setup, task, config, item = args
    return task(_ensure_state(setup, config), item)


def map_unordered(setup: Callable[[C], S], task: Callable[[S, I], R], items: Iterable[I], config: C, *,
                  workers: int = 1, scheduler: str | None = None) -> Iterator[R]:
    """Yield ``task(state, item)`` for every item, in completion order.

    ``setup``, ``task``, ``config`` and the items must be picklable
    (module-level functions, plain data) when ``workers > 1`` or with a
    ``scheduler``. Closing the iterator early stops the workers.
    """
    items = list(items)
    if scheduler:
        yield from _dask_map(setup, task, items, config, scheduler)
        return
    if workers <= 1 or len(items) <= 1:
        state = _ensure_state(setup, config)
        for item in items:
            yield task(state, item)
        return
    ctx = mp.get_context("spawn")
    pool = ctx.Pool(processes=min(workers, len(items)), initializer=_pool_init,
                    initargs=(setup, config, os.getpid()))
    try:
        yield from pool.imap_unordered(_pool_call, [(setup, task, config, it) for it in items], chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _dask_map(setup: Callable, task: Callable, items: list, config: Any, scheduler: str) -> Iterator:
    try:
        from dask.distributed import Client, as_completed
    except ImportError as exc:
        raise ZCBenchError(f"--scheduler {scheduler} needs Dask: pip install 'zcbench[dask]' ({exc})") from exc
    client = Client(scheduler)
    try:
        futures = [client.submit(_pool_call, (setup, task, config, it), pure=False) for it in items]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
