"""One writer per result store: an exclusive lock on a sidecar file that names its holder.

The lock is an ``flock`` on ``<store>.lock``, so the kernel releases it when
the holder exits, however it exits (a SIGKILL included): a lock is never
left stale. While held, the file records the holder's pid, host and start
time, which the refusal message of a second writer quotes.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from pathlib import Path

from ..errors import ConfigError, StoreLockedError


def lock_path(target: str | os.PathLike) -> Path:
    """The sidecar lock file of ``target``."""
    target = Path(target)
    return target.with_name(target.name + ".lock")


class WriterLock:
    """An exclusive, process-wide lock on writing ``target``.

    Parameters
    ----------
    target
        The file being written (a store, a checkpoint).
    wait
        False: refuse at once if another process holds the lock. True: block
        until it is released (``on_wait`` is called once first, to say so).
    """

    def __init__(self, target: str | os.PathLike, *, wait: bool = False, on_wait=None) -> None:
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot write in {str(self.path.parent)!r}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            if not wait:
                os.close(fd)
                raise StoreLockedError(
                    f"{str(self.target)!r} is being written by another process ({holder}); wait for it to "
                    "finish, pass --wait to queue behind it, or write to another --out") from None
            if on_wait is not None:
                on_wait(f"waiting for the other writer of {str(self.target)!r} ({holder}) to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        info = {"pid": os.getpid(), "host": platform.node(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
