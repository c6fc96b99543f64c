"""How a run's worker process handles memory: freed buffers stay mapped, setup objects stay out of the collector's way.

Scoring one architecture after another allocates and frees the same large
activation and gradient buffers over and over. glibc's allocator serves
buffers above its (adaptive) mmap threshold with fresh ``mmap`` pages and hands
freed heap tops back to the kernel, so every network's first touch of its
buffers costs a page fault per 4 KiB: on a NAS-Bench-201 fisher score at one
thread, memory-bound kernels (BatchNorm and ReLU backward, elementwise
products) spent a visible share of their time there. Serving every allocation
from the heap and not trimming it removes that cost; the process's resident
size stays at its peak instead of shrinking between networks, which a worker
that scores one network after another reaches again anyway
(:func:`keep_freed_memory`).

Each network also creates and drops tens of thousands of Python objects
(modules, parameters, autograd nodes), which trigger Python's cyclic garbage
collector; its full collections walk every live object, and a worker's setup
(torch, the space's tables, the images) holds about 250,000 of them, none of
them garbage: a full collection took 0.15 s and found nothing, costing about
9 ms per NB201 architecture on average. :func:`freeze_setup_objects` moves the
objects alive after setup out of the collector's sight for the process's life.

Both tune the whole process, so only the runner calls them, through
:func:`prepare_worker`, once a worker's setup is done
(:func:`zc_proxies.runs.runner.worker_state`: every evaluation and search;
without worker processes the worker is the process that started the run),
never :func:`zc_proxies.score` called from someone else's program. Neither changes arithmetic, so no score.
Elsewhere than glibc (macOS, Windows, musl) the allocator is left as it is.
"""

from __future__ import annotations

import ctypes
import gc
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


def freeze_setup_objects() -> bool:
    """Exempt every object alive now from the cyclic collector; False where something had frozen objects already.

    Frozen objects are never collected, so this is for a worker's long-lived
    setup state. A process whose objects someone else froze is left alone.
    """
    if gc.get_freeze_count():
        return False
    gc.collect()
    gc.freeze()
    return True


def prepare_worker() -> None:
    """Tune this process for scoring network after network: the last step of a run's worker setup."""
    keep_freed_memory()
    freeze_setup_objects()
