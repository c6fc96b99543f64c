"""A run's worker process keeps the memory it frees, so the next network does not page-fault it back in.

Scoring one architecture after another allocates and frees the same large
activation and gradient buffers over and over. glibc's allocator serves
buffers above its (adaptive) mmap threshold with fresh ``mmap`` pages and hands
freed heap tops back to the kernel, so every network's first touch of its
buffers costs a page fault per 4 KiB: on a NAS-Bench-201 fisher score at one
thread, memory-bound kernels (BatchNorm and ReLU backward, elementwise
products) spent a visible share of their time there. Serving every allocation
from the heap and not trimming it removes that cost; the process's resident
size stays at its peak instead of shrinking between networks, which a worker
that scores one network after another reaches again anyway.

This tunes the whole process, so only an evaluation run calls it, once per
worker (:func:`zc_proxies.runs.evaluation.setup_worker`; without worker
processes that is the process that started the run), never
:func:`zc_proxies.score` called from someone else's program. It changes no arithmetic, so no score.
Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free heap top the allocator may keep before trimming: the largest value mallopt takes (2 GiB - 1).
_TRIM_AT = 2**31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve everything from its heap and never trim it; True where that took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc, or no symbol table for the process
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_AT) == 1
