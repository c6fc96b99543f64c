"""Files written whole or not at all: a temporary sibling, synced, then renamed over the target.

Every file zcbench writes in one piece (tables, plots, winner files, network
files, checkpoints, merged or rewritten stores) goes through :func:`atomic_open`,
so a run killed or a disk filled mid-write leaves either the old file or
nothing, never a truncated or empty one under the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; on success it replaces ``path``.

    ``mode`` is ``"w"`` (text, with ``encoding`` and ``\\n`` line ends) or
    ``"wb"``. If the block raises, the temporary file is removed and ``path``
    is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes with mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kwargs: dict[str, Any] = {"encoding": encoding, "newline": ""} if mode == "w" else {}
    fh = open(tmp, mode, **kwargs)
    try:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, path)
    except BaseException:
        fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns the path."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def _sync_folder(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk (not possible on every OS).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
