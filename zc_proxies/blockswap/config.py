"""A BlockSwap configuration (network + one block type per block) and its JSON form.

The JSON form is an object::

    {"net": "wrn-40-2", "num_classes": 10, "blocks": ["S", "G(N/2)", "BG(2,M/4)", ...]}

Extra keys are allowed and kept out of the way (the search's winner file adds
``params``, ``score``, ``seed``...), so a winner file is itself a configuration
file. Reading one checks everything and names the first problem.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ArchError, DataError, MissingDataError, UnknownNameError
from ..runs.atomic import atomic_write_text
from .blocks import BlockType
from .networks import BlockSwapNet, NetSpec, get_net


@dataclass(frozen=True)
class Configuration:
    """A network skeleton, a head size and one canonical block name per block."""

    net: str
    blocks: tuple[str, ...]
    num_classes: int

    @classmethod
    def create(cls, net: str | NetSpec, blocks: Sequence[str | BlockType],
               num_classes: int | None = None) -> Configuration:
        """Check and canonicalise (raises UnknownNameError or ArchError)."""
        spec = get_net(net)
        types = spec.check(blocks)
        k = spec.num_classes if num_classes is None else num_classes
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ArchError(f"num_classes must be a positive integer, got {k!r}")
        return cls(spec.name, tuple(t.name for t in types), k)

    @property
    def spec(self) -> NetSpec:
        return get_net(self.net)

    @property
    def params(self) -> int:
        """Exact trainable-parameter count of the built network."""
        return self.spec.params(self.blocks, self.num_classes)

    def build(self, generator: torch.Generator | None = None) -> BlockSwapNet:
        """The network, freshly initialised from ``generator``."""
        return self.spec.build(self.blocks, self.num_classes, generator)

    # -- JSON --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"net": self.net, "num_classes": self.num_classes, "blocks": list(self.blocks)}

    @classmethod
    def from_json(cls, obj: Any, source: str = "configuration") -> Configuration:
        """Read the JSON form; any problem raises DataError naming ``source`` and the problem."""
        if not isinstance(obj, dict):
            raise DataError(f"{source}: expected a JSON object with 'net' and 'blocks', got {type(obj).__name__}")
        for key in ("net", "blocks"):
            if key not in obj:
                raise DataError(f"{source}: missing key {key!r} (a configuration needs 'net' and 'blocks')")
        net, blocks = obj["net"], obj["blocks"]
        if not isinstance(net, str):
            raise DataError(f"{source}: 'net' must be a network name such as 'wrn-40-2', got {net!r}")
        if not isinstance(blocks, list):
            raise DataError(f"{source}: 'blocks' must be a list of block names, got {type(blocks).__name__}")
        for i, b in enumerate(blocks):
            if not isinstance(b, str):
                raise DataError(f"{source}: block {i} must be a block name string, got {b!r}")
        k = obj.get("num_classes")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise DataError(f"{source}: 'num_classes' must be a positive integer, got {k!r}")
        try:
            return cls.create(net, blocks, k)
        except (UnknownNameError, ArchError) as exc:
            raise DataError(f"{source}: {exc}") from exc

    def save(self, path: str | os.PathLike, **extra: Any) -> None:
        """Write the JSON form (plus ``extra`` keys) to ``path`` atomically."""
        atomic_write_text(path, json.dumps({**self.to_json(), **extra}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Configuration:
        """Read a configuration (or a search's winner file) from ``path``."""
        path = Path(path)
        if not path.is_file():
            raise MissingDataError(f"configuration file {str(path)!r} does not exist")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(path)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise DataError(f"{str(path)!r} is not a text file: {exc}") from exc
        return cls.from_json(obj, source=repr(str(path)))
