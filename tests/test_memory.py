"""A run's worker keeps the memory it frees (glibc), so the next network's buffers are already mapped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

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
