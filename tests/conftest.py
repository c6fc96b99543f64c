"""Shared fixtures: the data root (``$ZCBENCH_DATA``, else ``../shared/data`` beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("ZCBENCH_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not root.is_dir():
        pytest.fail(f"data root {root} not found: set ZCBENCH_DATA (see README.md)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _data_env() -> None:
    os.environ.setdefault("ZCBENCH_DATA", str(_data_root()))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread per test process: the networks here are small, and with pytest-xdist
    using every core, more threads only contend (several times slower on 2 shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
