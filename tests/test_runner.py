"""The runner: the same results in this process, in a process pool and on a real Dask cluster; dead workers.

The Dask tests start a real ``LocalCluster`` (worker processes on loopback) and
reach it through its ``tcp://`` address, exactly as ``--scheduler`` does.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from zc_proxies.cli import main
from zc_proxies.errors import ConfigError, RunError
from zc_proxies.runs.runner import Runner, WorkerRestartWarning

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")


# -- tasks the worker processes import from this module --------------------------------------------------
def setup(config: dict) -> dict:
    return {"offset": config["offset"], "pid": os.getpid()}


def square(state: dict, item: int) -> tuple[int, int]:
    return item, item * item + state["offset"]


def die_once(state: dict, item: tuple[int, str]) -> tuple[int, int]:
    """Kill this worker process the first time ``item`` runs (a marker file remembers); then answer."""
    index, marker = item
    if index == 2 and not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return index, os.getpid()


def always_die(state: dict, item: int) -> int:
    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


# -- local ----------------------------------------------------------------------------------------------
def test_the_pool_gives_what_this_process_gives():
    items = list(range(12))
    here = sorted(Runner(1).map(setup, square, items, {"offset": 5}))
    pool = sorted(Runner(2).map(setup, square, items, {"offset": 5}))
    assert here == pool == [(i, i * i + 5) for i in items]


def test_a_killed_pool_worker_is_replaced_and_its_task_rerun(tmp_path):
    marker = tmp_path / "died"
    with pytest.warns(WorkerRestartWarning, match="a worker process died"):
        results = dict(Runner(2).map(setup, die_once, [(i, str(marker)) for i in range(6)], {"offset": 0}))
    assert sorted(results) == list(range(6)) and marker.exists()
    assert results[2] != int(marker.read_text())  # answered by another process than the one that died


def test_a_worker_that_keeps_dying_stops_the_run_keeping_what_finished():
    got = []
    with pytest.warns(WorkerRestartWarning), pytest.raises(RunError, match="a worker process died 3 times.*rerun to "
                                                                          "resume"):
        for item in Runner(2, max_restarts=2).map(setup, always_die, range(8), {"offset": 0}):
            got.append(item)
    # what finished came back before the run stopped (a pool breaks as a whole, so which items did varies)
    assert got and 3 not in got and len(set(got)) == len(got)


def test_bad_runner_options_are_config_errors():
    with pytest.raises(ConfigError, match="--workers must be a positive integer, got 0"):
        Runner(0)
    with pytest.raises(ConfigError, match="cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
        Runner(1, "tcp://127.0.0.1:9", connect_timeout=1)


# -- a real Dask cluster ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as c:
        yield c


def _scores(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    return {(r["index"], r["proxy"]): (r["status"], r["score"]) for r in rows}


def test_eval_on_a_dask_scheduler_gives_the_scores_of_one_worker(cluster, tmp_path, data_root, capsys):
    base = ["eval", "--proxy", "fisher,synflow", "--space", "nb201-cifar10", "--sample", "4", "--batch-size", "8",
            "--data", str(data_root), "--no-plot", "--bootstrap", "20", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "local")]) == 0
    assert main(base + ["--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]) == 0
    assert "Dask scheduler tcp://127.0.0.1" in capsys.readouterr().err
    local, dask = _scores(tmp_path / "local" / "scores.jsonl"), _scores(tmp_path / "dask" / "scores.jsonl")
    assert len(local) == 8 and local == dask  # bit-identical floats


def test_a_dask_worker_killed_mid_run_loses_nothing(cluster, tmp_path):
    marker = tmp_path / "died"
    with Runner(1, cluster.scheduler_address) as runner:
        results = dict(runner.map(setup, die_once, [(i, str(marker)) for i in range(6)], {"offset": 0}))
    assert sorted(results) == list(range(6)) and marker.exists()  # the task was retried on a live worker
    assert results[2] != int(marker.read_text())
