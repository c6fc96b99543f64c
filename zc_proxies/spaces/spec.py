"""Space specs for the command line: ``nb201-cifar10`` -> space, classifier dataset and accuracy targets.

A spec is a registered space name, optionally followed by ``-`` and a dataset
alias. A space name alone is accepted when the space has one dataset
(``nds-darts``). The alias picks

* the *dataset* the networks are built for (classifier width) and whose
  training images feed the minibatch, and
* the *targets*: which stored accuracy each split is correlated against.

What a space's aliases mean is the space's own business (its ``aliases``
attribute; NAS-Bench-201's are documented in :mod:`.nb201.space`). A dataset
name that is no alias means itself for every split the space stores for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnknownNameError
from .base import SearchSpace, get_space, list_spaces


# space -> alias -> (classifier dataset, {split: accuracy dataset})
@dataclass(frozen=True)
class SpaceSpec:
    """A parsed ``--space`` value.

    Attributes
    ----------
    text
        As given, e.g. ``"nb201-cifar10"``.
    space
        Registered space name (``"nb201"``).
    dataset
        The space's dataset the networks are built and fed for (``"cifar10"``).
    targets
        ``{split: dataset}``: which stored accuracy each split means.
    """

    text: str
    space: str
    dataset: str
    targets: tuple[tuple[str, str], ...]

    @property
    def target_map(self) -> dict[str, str]:
        return dict(self.targets)


def split_spec(text: str, names: Sequence[str] | None = None) -> tuple[str, str | None]:
    """``"nb201-cifar10"`` -> ``("nb201", "cifar10")``; ``"nds-darts"`` -> ``("nds-darts", None)``.

    The longest registered space name that the spec starts with wins, so
    space names may themselves contain dashes.
    """
    names = list(list_spaces() if names is None else names)
    matches = [n for n in names if text == n or text.startswith(n + "-")]
    if not matches:
        head, _, rest = text.partition("-")  # "nb202-cifar10": suggest the close space with the same dataset
        close = [f"{n}-{rest}" if rest else n for n in difflib.get_close_matches(head, names, n=3, cutoff=0.6)]
        close += difflib.get_close_matches(text, names, n=3, cutoff=0.5)
        close = list(dict.fromkeys(close))[:3]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown space {text!r}{hint} (spaces: {', '.join(names) or 'none'}; "
                               "write SPACE or SPACE-DATASET, e.g. nb201-cifar10)")
    name = max(matches, key=len)
    rest = text[len(name) + 1:] if len(text) > len(name) else None
    return name, rest or None


def resolve_spec(text: str, space: SearchSpace, alias: str | None) -> SpaceSpec:
    """Turn a dataset alias of an opened ``space`` into a :class:`SpaceSpec`."""
    table = space.aliases
    if alias is None:
        if len(space.datasets) != 1:
            options = sorted(set(table) | set(space.datasets))
            raise UnknownNameError(f"space {space.name!r} has several datasets; name one, e.g. "
                                   + ", ".join(f"{space.name}-{d}" for d in options))
        alias = space.datasets[0]
    if alias in table:
        dataset, targets = table[alias]
    elif alias in space.datasets:
        dataset, targets = alias, {split: alias for split in space.splits}
        stored = getattr(space, "accuracy_keys", None)  # (dataset, split) pairs a space declares it holds
        if stored is not None:
            targets = {split: ds for split, ds in targets.items() if (ds, split) in set(map(tuple, stored))}
    else:
        options = sorted(set(table) | set(space.datasets))
        close = difflib.get_close_matches(alias, options, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(f'{space.name}-{c}') for c in close)}?" if close else ""
        raise UnknownNameError(f"space {space.name!r} has no dataset {alias!r}{hint} "
                               f"(has: {', '.join(options)})")
    space.check_dataset(dataset)
    for split, ds in targets.items():
        space.check_dataset(ds)
        space.check_split(split)
    return SpaceSpec(text=text, space=space.name, dataset=dataset, targets=tuple(sorted(targets.items(),
                                                                                      key=_split_order)))


def _split_order(item: tuple[str, str]) -> tuple[int, str]:
    order = {"val": 0, "valid": 0, "test": 1}
    return order.get(item[0], 2), item[0]


def open_spec(text: str, root: str | Path | None) -> tuple[SearchSpace, SpaceSpec]:
    """Open the space a ``--space`` value names (its tables under ``root``) and resolve its dataset alias."""
    name, alias = split_spec(text)
    space = get_space(name, root)
    return space, resolve_spec(text, space, alias)
