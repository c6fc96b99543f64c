"""What a search space is, for the evaluator and for NAS code.

The shape follows the NATS-Bench API: ``len(space)``, ``space[i] -> arch``,
``space.index_of(arch)``, ``space.build(arch, num_classes)``,
``space.accuracy(i, dataset, split)`` and ``space.params(i, dataset)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Hashable

from torch import nn

from .._registry import Registry
from ..errors import UnknownNameError


class SearchSpace(ABC):
    """A benchmark: a fixed, indexed list of architectures with stored results.

    Attributes
    ----------
    name
        Registry name, e.g. ``"nb201"``.
    datasets
        Names accepted by :meth:`accuracy` and :meth:`params`.
    splits
        Names accepted by :meth:`accuracy` (e.g. ``("val", "test")``).
    """

    name: str = ""
    datasets: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("val", "test")

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> Any:
        """The architecture at ``index`` (its canonical, JSON-serialisable form)."""

    @abstractmethod
    def index_of(self, arch: Any) -> int:
        """The index of ``arch``; raises ArchError if malformed, UnknownNameError if absent."""

    @abstractmethod
    def build(self, arch: Any, num_classes: int) -> nn.Module:
        """A freshly initialised torch module for ``arch`` (blocks marked with BlockProbe)."""

    @abstractmethod
    def accuracy(self, index: int, dataset: str, split: str) -> float:
        """Stored accuracy in percent of architecture ``index``."""

    @abstractmethod
    def params(self, index: int, dataset: str) -> int:
        """Stored trainable-parameter count of architecture ``index`` with ``dataset``'s head."""

    def arch_key(self, arch: Any) -> Hashable:
        """A hashable, JSON-friendly key for ``arch`` (the arch itself by default)."""
        return arch

    def check_dataset(self, dataset: str) -> str:
        if dataset not in self.datasets:
            raise UnknownNameError(f"space {self.name!r} has no dataset {dataset!r} (has: {', '.join(self.datasets)})")
        return dataset

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise UnknownNameError(f"space {self.name!r} has no split {split!r} (has: {', '.join(self.splits)})")
        return split


SpaceFactory = Callable[..., SearchSpace]
SPACES: Registry[SpaceFactory] = Registry("space")


def register_space(name: str) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator registering ``factory(data_root: Path | None, **options) -> SearchSpace``."""

    def decorate(factory: SpaceFactory) -> SpaceFactory:
        SPACES.add(name, factory)
        return factory

    return decorate


def get_space(name: str, data_root: str | Path | None = None, **options: Any) -> SearchSpace:
    """Open the search space ``name`` with its stored results under ``data_root``."""
    return SPACES.get(name)(data_root, **options)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of the registered search spaces matching a shell-style wildcard."""
    return SPACES.names(pattern)
