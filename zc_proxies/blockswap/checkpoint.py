"""Network files and checkpoints of BlockSwap runs, written atomically.

Network files (``model.pt``, and the checkpoint too) are ``torch.save`` dicts
with a ``format`` marker, ``net`` (skeleton name), ``blocks`` (one block name
per block), ``num_classes`` and ``state_dict``; :func:`load_network` reads
either. Every file is written atomically (:mod:`zc_proxies.runs.atomic`), so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ArchError, DataError, MissingDataError, UnknownNameError
from ..runs.atomic import atomic_torch_save
from .config import Configuration
from .networks import BlockSwapNet, NetSpec, get_net

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
FORMAT = "zcbench-blockswap-network"
FORMAT_VERSION = 1


def state_digest(model: nn.Module) -> str:
    """A short hash of every parameter and buffer (identifies a teacher)."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def network_record(model: BlockSwapNet) -> dict[str, Any]:
    """What identifies a network in a file: skeleton, blocks, head size and weights."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "net": model.spec.name,
            "blocks": list(model.config), "num_classes": model.num_classes,
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def save_network(path: str | os.PathLike, model: BlockSwapNet, **extra: Any) -> None:
    """Write ``model`` (and ``extra`` keys) to ``path`` atomically, in the network-file format."""
    atomic_torch_save({**network_record(model), **extra}, Path(path))


def network_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/model.pt`` when ``path`` is a folder (a finished run's output)."""
    p = Path(path)
    if p.is_dir():
        if (p / MODEL).is_file():
            return p / MODEL
        hint = (f"; it has {CHECKPOINT} from an unfinished run (rerun that run to finish it, or pass the checkpoint "
                "file itself)") if (p / CHECKPOINT).is_file() else ""
        raise MissingDataError(f"network folder {str(p)!r} has no {MODEL}{hint}")
    if not p.is_file():
        raise MissingDataError(f"network file {str(p)!r} does not exist")
    return p


def read_torch_record(path: str | os.PathLike, what: str, fmt: str, required: Sequence[str],
                      wrong_format: Callable[[Any], str]) -> dict[str, Any]:
    """Load a ``torch.save`` file of format ``fmt`` and check it holds ``required`` keys.

    Raises :class:`MissingDataError` for a missing file and :class:`DataError`, naming the file, for
    a damaged one, another format (with the message ``wrong_format(obj)`` ends with) or missing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"{what} {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise DataError(f"{what} {str(path)!r} cannot be read as a torch.save file ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); it is damaged or not one") from exc
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise DataError(f"{what} {str(path)!r} {wrong_format(obj)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{what} {str(path)!r} lacks {', '.join(map(repr, missing))}")
    return obj


def read_record(path: str | os.PathLike, what: str = "network file") -> dict[str, Any]:
    """Load a network file or checkpoint and check its keys (raises DataError naming the file)."""
    return read_torch_record(
        path, what, FORMAT, ("net", "blocks", "num_classes", "state_dict"),
        lambda _obj: f"is not a zcbench BlockSwap network file (no format marker {FORMAT!r}); write one with "
                     "'zcbench blockswap train'")


def load_network(path: str | os.PathLike, net: str | NetSpec | None = None,
                 device: str | torch.device = "cpu") -> tuple[BlockSwapNet, dict[str, Any]]:
    """The network stored at ``path`` (a file, or a run's folder), and the file's other entries.

    Raises
    ------
    MissingDataError
        No such file, or a folder without ``model.pt``.
    DataError
        A damaged file, one of another format, or weights that do not fit the stored blocks.
    ArchError
        The file holds a network of another skeleton than ``net``.
    """
    path = network_file(path)
    record = read_record(path)
    if net is not None:
        want = get_net(net).name
        if record["net"] != want:
            raise ArchError(f"network file {str(path)!r} holds a {record['net']} network, not the {want} asked for")
    try:
        config = Configuration.create(record["net"], record["blocks"], record["num_classes"])
    except (UnknownNameError, ArchError) as exc:
        raise DataError(f"network file {str(path)!r}: {exc}") from exc
    model = config.build()
    try:
        model.load_state_dict(record["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(f"network file {str(path)!r}: its weights do not fit {config.net} with its blocks "
                        f"({str(exc).splitlines()[0]})") from exc
    return model.to(device), record
