"""A `zcbench eval` killed mid-run resumes (every arch exactly once, the same correlations); one writer per store."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = 8


def command(out: Path, data_root: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "zc_proxies.cli", "eval", "--proxy", "fisher", "--space", "nb201-cifar10",
            "--sample", str(SAMPLE), "--seed", "5", "--batch-size", "16", "--workers", str(workers),
            "--threads", "1", "--bootstrap", "100", "--no-plot", "--quiet", "--out", str(out),
            "--data", str(data_root)]


def score_lines(store: Path) -> list[dict]:
    if not store.is_file():
        return []
    lines = store.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[1:-1] if line.strip()]  # the last piece may be torn


def run_to_end(out: Path, data_root: Path, workers: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(out, data_root, workers), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_run_then_resume(tmp_path, data_root):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    store = killed / "scores.jsonl"
    proc = subprocess.Popen(command(killed, data_root, workers=2), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(score_lines(store)) < 3:
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "no scores appeared within 300 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only, as a scheduler's kill would
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    partial = score_lines(store)
    assert 3 <= len(partial) < SAMPLE

    # The orphaned pool workers notice their parent is gone and exit.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("worker processes outlived their killed parent by 20 s")

    resumed = run_to_end(killed, data_root, workers=1)
    assert f"{len(partial)} architectures were already in the store (resumed)" in resumed.stderr
    run_to_end(clean, data_root, workers=1)

    rows = score_lines(store)
    assert len(rows) == SAMPLE and len({r["index"] for r in rows}) == SAMPLE  # every arch exactly once
    assert store.read_bytes().endswith(b"\n")
    first = {r["index"]: r["score"] for r in partial}
    final = {r["index"]: r["score"] for r in rows}
    assert all(final[i] == s for i, s in first.items())  # finished rows kept, not recomputed differently
    assert final == {r["index"]: r["score"] for r in score_lines(clean / "scores.jsonl")}
    assert correlations(killed) == correlations(clean)


def correlations(out: Path) -> list[dict]:
    """The correlation table without its timing column (wall times differ between runs)."""
    with open(out / "correlations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["n"] == str(SAMPLE) for r in rows)
    return [{k: v for k, v in r.items() if k != "median_seconds"} for r in rows]


def test_a_second_eval_on_the_same_out_refuses_or_waits(tmp_path, data_root):
    out = tmp_path / "one"
    store = out / "scores.jsonl"
    slow = ["--proxy", "sleepy", "--import", "sleepy_proxy"]  # 4 s an arch: the first run is still going
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "SLEEPY_SECONDS": "4"}  # two more processes must start (import torch) while it runs, on a busy machine
    first = subprocess.Popen(command(out, data_root, workers=1) + slow, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not score_lines(store):  # the first run holds the store and is scoring
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "no scores appeared within 300 s"
            time.sleep(0.05)
        refused = subprocess.run(command(out, data_root, workers=1) + slow, cwd=REPO, capture_output=True,
                                 text=True, timeout=300, env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert f"is being written by another process (pid {first.pid} on host" in refused.stderr
        waiting = subprocess.run(command(out, data_root, workers=1) + slow + ["--wait"], cwd=REPO,
                                 capture_output=True, text=True, timeout=600, env=env)
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()
    assert waiting.returncode == 0, waiting.stderr
    assert "waiting for the other writer" in waiting.stderr
    assert f"{SAMPLE} architectures were already in the store (resumed)" in waiting.stderr
    rows = score_lines(store)
    assert len(rows) == SAMPLE and len({(r["index"], r["proxy"], r["seed"]) for r in rows}) == SAMPLE
