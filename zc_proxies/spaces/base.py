"""What a search space is, for the evaluator and for NAS code.

The shape follows the NATS-Bench API: ``len(space)``, ``space[i] -> arch``,
``space.index_of(arch)``, ``space.build(arch, num_classes)``,
``space.accuracy(i, dataset, split)`` and ``space.params(i, dataset)``.
"""

from __future__ import annotations

import difflib
import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .._registry import Registry
from ..errors import MissingDataError, UnknownNameError


@dataclass(frozen=True)
class Target:
    """A named stored accuracy of a space: what ``zcbench eval --target NAME`` correlates against.

    Attributes
    ----------
    name
        The name on the command line and the ``split`` :meth:`SearchSpace.accuracy`
        takes, e.g. ``"val"``, ``"test-12ep"``, ``"test-best"``.
    about
        What it is, in a few words (listed next to the name when a name is unknown).
    split
        Which of a dataset alias's accuracy datasets it reads (``"val"`` or
        ``"test"``, the keys of :attr:`SearchSpace.aliases`' split maps); empty
        means the name itself. NAS-Bench-201's ``test-12ep`` reads the ``test``
        dataset of the alias, so ``nb201-cifar10 --target test-12ep`` means
        cifar10 ori-test after 12 epochs.
    default
        Correlated when no ``--target`` is given.
    """

    name: str
    about: str
    split: str = ""
    default: bool = False

    @property
    def base(self) -> str:
        return self.split or self.name


class SearchSpace(ABC):
    """A benchmark: a fixed, indexed list of architectures with stored results.

    Attributes
    ----------
    name
        Registry name, e.g. ``"nb201"``.
    datasets
        Names accepted by :meth:`accuracy` and :meth:`params`.
    splits
        Names accepted by :meth:`accuracy` (e.g. ``("val", "test")``): every target name.
    aliases
        What the space's ``SPACE-ALIAS`` command-line names mean.
    targets
        The named accuracies ``--target`` chooses among (:class:`Target`),
        whether or not the opened results hold each; empty means one default
        target per split (what a space that declares nothing gets).
    cpu_layout
        The memory layout ``--layout auto`` scores its networks in on the CPU
        (:mod:`zc_proxies.runs.layout`): ``"nchw"`` unless NHWC was measured faster
        with the same ranking.
    nchw_proxies
        Proxies whose ranking NHWC was measured to change on this space: a run
        that scores any of them stays in NCHW under ``auto``.
    """

    name: str = ""
    cpu_layout: str = "nchw"
    nchw_proxies: frozenset[str] = frozenset()
    datasets: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("val", "test")
    targets: tuple[Target, ...] = ()
    #: Command-line dataset aliases: ``{alias: (classifier dataset, {split: accuracy dataset})}``.
    #: A dataset name that is no alias means itself for every split it has (see :mod:`.spec`).
    aliases: Mapping[str, tuple[str, Mapping[str, str]]] = {}

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
            raise UnknownNameError(f"space {self.name!r} has no dataset {dataset!r}"
                                   f"{_did_you_mean(dataset, self.datasets)} (has: {', '.join(self.datasets)})")
        return dataset

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise UnknownNameError(f"space {self.name!r} has no split {split!r}"
                                   f"{_did_you_mean(split, self.splits)} (has: {', '.join(self.splits)})")
        return split

    # -- targets ------------------------------------------------------------------------------
    def target_table(self) -> dict[str, Target]:
        """``{name: Target}`` of every target the space knows, in the order it declares them."""
        if self.targets:
            return {t.name: t for t in self.targets}
        return {s: Target(s, f"{s} accuracy", s, True) for s in self.splits}

    def default_targets(self) -> tuple[str, ...]:
        """The target names correlated when no ``--target`` is given."""
        return tuple(t.name for t in self.target_table().values() if t.default)

    def target_unavailable(self, name: str) -> str | None:
        """Why the opened results do not hold target ``name`` (None when they do); a sentence naming the file."""
        return None

    def describe_targets(self) -> str:
        """``"val (...), test (...)"``: every target with what it is, defaults marked."""
        return ", ".join(f"{t.name} ({t.about}{'; default' if t.default else ''})"
                         for t in self.target_table().values())

    def check_target(self, name: str) -> Target:
        """The :class:`Target` called ``name``.

        Raises UnknownNameError (with close matches and the space's targets)
        for a name the space does not know, and MissingDataError naming what
        is missing for one the opened results lack.
        """
        table = self.target_table()
        if name not in table:
            raise UnknownNameError(f"space {self.name!r} has no target {name!r}{_did_you_mean(name, list(table))} "
                                   f"(targets: {self.describe_targets()})")
        why = self.target_unavailable(name)
        if why:
            raise MissingDataError(f"space {self.name!r}: target {name!r} ({table[name].about}) is not available "
                                   f"here: {why}")
        return table[name]

    def num_classes(self, dataset: str) -> int:
        """Classifier width for ``dataset`` (looked up in :data:`NUM_CLASSES` by default)."""
        self.check_dataset(dataset)
        if dataset not in NUM_CLASSES:
            raise UnknownNameError(
                f"space {self.name!r} does not say how many classes dataset {dataset!r} has; "
                "override SearchSpace.num_classes"
            )
        return NUM_CLASSES[dataset]

    def target_note(self, split: str, dataset: str) -> str:
        """What the stored ``split`` accuracy on ``dataset`` is, in words (for table footnotes)."""
        return f"{dataset} {split} accuracy"

    def indices_with(self, dataset: str, split: str) -> Sequence[int]:
        """Indices of the architectures that have a stored ``split`` accuracy on ``dataset``.

        All of them by default; spaces whose results cover only a subset for
        some split (NAS-Bench-101's validation accuracies, say) override this,
        so the evaluator samples only architectures it can correlate.
        """
        self.check_dataset(dataset)
        self.check_split(split)
        return range(len(self))


def _did_you_mean(name: object, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


# Classifier widths of the datasets the benchmarks use; a space may override ``num_classes``.
NUM_CLASSES = {
    "cifar10": 10,
    "cifar10-valid": 10,
    "cifar100": 100,
    "imagenet16-120": 120,
    "imagenet": 1000,
}

SpaceFactory = Callable[..., SearchSpace]
SPACES: Registry[SpaceFactory] = Registry("space")

#: What each registered space declares without opening its tables: its datasets and CLI aliases.
_DECLARED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def register_space(name: str, *, datasets: Sequence[str] = (), aliases: Sequence[str] = ()
                   ) -> Callable[[SpaceFactory], SpaceFactory]:
    """Decorator registering ``factory(data_root: Path | None, **options) -> SearchSpace``.

    ``datasets`` and ``aliases`` (the space's :attr:`SearchSpace.datasets` and
    the keys of its :attr:`SearchSpace.aliases`) let :func:`list_specs` name
    every ``--space`` value the space accepts without opening its tables.
    """

    def decorate(factory: SpaceFactory) -> SpaceFactory:
        SPACES.add(name, factory)
        _DECLARED[name] = (tuple(datasets), tuple(aliases))
        return factory

    return decorate


def list_specs(pattern: str = "*") -> list[str]:
    """Every ``SPACE`` / ``SPACE-DATASET`` value ``--space`` accepts, matching a shell-style wildcard.

    A space with one dataset is named alone (and ``SPACE-DATASET`` unless the
    name already ends in its dataset); a space with several is named once per
    dataset alias and dataset. A third-party space that declares nothing is
    listed by its name.
    """
    out = []
    for name in list_spaces():
        datasets, aliases = _DECLARED.get(name, ((), ()))
        names = list(dict.fromkeys([*aliases, *datasets]))
        if len(datasets) <= 1:
            out.append(name)
            out += [f"{name}-{d}" for d in names if not name.endswith(f"-{d}")]
        else:
            out += [f"{name}-{d}" for d in names]
    return [n for n in dict.fromkeys(out) if fnmatch.fnmatchcase(n, pattern)]


def get_space(name: str, data_root: str | Path | None = None, **options: Any) -> SearchSpace:
    """Open the search space ``name`` with its stored results under ``data_root``."""
    return SPACES.get(name)(data_root, **options)


def list_spaces(pattern: str = "*") -> list[str]:
    """Names of the registered search spaces matching a shell-style wildcard."""
    return SPACES.names(pattern)
