"""A run's worker keeps the memory it frees (glibc) and its setup objects out of the cyclic collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import zc_proxies.runs.runner as runner
from zc_proxies.runs.memory import keep_freed_memory

PROBE = textwrap.dedent("""
    import os, sys, torch
    from zc_proxies.runs.memory import keep_freed_memory
    applied = keep_freed_memory() if sys.argv[1] == "keep" else False
    page = os.sysconf("SC_PAGE_SIZE")
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page
    before = rss()
    x = torch.ones(64 * 2**20)  # 256 MiB, touched
    del x
    print(applied, (rss() - before) / 2**20)
""")


def freed_and_still_resident(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")
def test_freed_buffers_stay_mapped_only_where_asked():
    applied, kept = freed_and_still_resident("keep")
    if applied != "True":
        pytest.skip("this Linux's C library is not glibc")
    assert kept > 200  # the 256 MiB buffer is still resident after it was freed
    _, default = freed_and_still_resident("default")
    assert default < 50  # glibc's default maps such a buffer on its own and hands it back on free


def test_elsewhere_it_says_it_did_nothing(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False


FREEZE = textwrap.dedent("""
    import gc
    from zc_proxies.runs.memory import freeze_setup_objects
    kept = [[i] for i in range(1000)]
    first = freeze_setup_objects()
    frozen = gc.get_freeze_count()
    print(first, frozen >= 1000, freeze_setup_objects(), gc.get_freeze_count() == frozen)
""")


def test_setup_objects_are_frozen_once():
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "True"]  # a second call leaves what is frozen alone


def _setup(config: int) -> list[int]:
    return [config]


def test_runner_tunes_a_worker_once_per_setup(monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "prepare_worker", lambda: calls.append(1))
    monkeypatch.setattr(runner, "_STATE", {})
    assert runner.worker_state(_setup, 1) == [1]
    assert runner.worker_state(_setup, 1) == [1]
    assert len(calls) == 1
    assert runner.worker_state(_setup, 2) == [2]
    assert len(calls) == 2
