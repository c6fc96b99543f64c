"""Splitting one run over machines: ``--shard i/N``, or the shard a SLURM array task / torchrun rank is.

A shard takes every N-th task starting at i (round robin keeps shards of
similar cost) and writes its own store file, named after the shard, so shards
from many machines never write one file; ``zcbench merge`` joins them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import ConfigError

Shard = tuple[int, int]

SHARD_NAME = re.compile(r"\.shard-(\d+)-of-(\d+)$")


def parse_shard(text: str, source: str = "--shard") -> Shard:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; ``source`` names where the text came from in errors."""
    try:
        i_text, n_text = str(text).split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ConfigError(f"{source} must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"{source} {text}: need 0 <= i < N")
    return i, n


def _env_int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; it sets this run's shard "
                          "(unset it, or pass --shard i/N)") from None


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard a SLURM array task or a torchrun process is, or None.

    SLURM: ``SLURM_ARRAY_TASK_ID`` (minus ``SLURM_ARRAY_TASK_MIN``) of
    ``SLURM_ARRAY_TASK_COUNT``. torchrun: ``RANK`` of ``WORLD_SIZE``. A
    malformed variable raises :class:`ConfigError` naming it.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
        task = _env_int(env, "SLURM_ARRAY_TASK_ID")
        low = _env_int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        i, n = task - low, _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    elif "RANK" in env and "WORLD_SIZE" in env:
        names = ("RANK", "WORLD_SIZE")
        i, n = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    else:
        return None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"the environment makes this run shard {i} of {n} ({names[0]} of {names[1]}), which is "
                          "not 0 <= i < N; a SLURM array must be numbered consecutively (set SLURM_ARRAY_TASK_MIN "
                          "for one that does not start at 0), or pass --shard i/N")
    return i, n


def resolve_shard(text: str | None) -> Shard | None:
    """``--shard`` if given, else the environment's shard, else None."""
    return parse_shard(text) if text else shard_from_env()


def shard_items(items: Sequence, shard: Shard | None) -> list:
    """Every N-th item starting at i (all of them without a shard)."""
    if shard is None:
        return list(items)
    i, n = shard
    return list(items)[i::n]


def shard_path(path: str | os.PathLike, shard: Shard | None) -> Path:
    """``scores.jsonl`` -> ``scores.shard-III-of-NNN.jsonl`` for a shard (unchanged without one)."""
    path = Path(path)
    if shard is None or shard[1] == 1:
        return path
    return path.with_name(f"{path.stem}.shard-{shard[0]:03d}-of-{shard[1]:03d}{path.suffix}")


def shard_of_path(path: str | os.PathLike) -> Shard | None:
    """The shard a store file's name says it is (see :func:`shard_path`), or None."""
    m = SHARD_NAME.search(Path(path).stem)
    return (int(m[1]), int(m[2])) if m else None
