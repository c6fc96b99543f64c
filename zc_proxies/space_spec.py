"""Space specs for the command line: ``nb201-cifar10`` -> space, classifier dataset and accuracy targets.

A spec is a registered space name, optionally followed by ``-`` and a dataset
alias. A space name alone is accepted when the space has one dataset
(``nds-darts``). The alias picks

* the *dataset* the networks are built for (classifier width) and whose
  training images feed the minibatch, and
* the *targets*: which stored accuracy each split is correlated against.

For NAS-Bench-201 the CLI aliases mean (this is a choice, documented here):

==================  ====================  =====================  ====================
spec                classifier/minibatch  val target             test target
==================  ====================  =====================  ====================
nb201-cifar10       cifar10               cifar10-valid, x-valid  cifar10, ori-test
nb201-cifar10-valid cifar10-valid         cifar10-valid, x-valid  (none stored)
nb201-cifar100      cifar100              cifar100, x-valid       cifar100, x-test
nb201-imagenet16    imagenet16-120        imagenet16-120, x-valid imagenet16-120, x-test
==================  ====================  =====================  ====================

``nb201-cifar10`` correlates "val" against cifar10-valid's x-valid accuracy
(the network trained on 25k images, validated on the other 25k), which is what
NAS-Bench-Suite-Zero reports as CIFAR-10 validation accuracy, and "test" against
the cifar10 (50k-trained) ori-test accuracy, the headline number of NB201.
Any other space uses ``alias`` itself as the dataset for every split it has.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import UnknownNameError
from .spaces import SearchSpace, list_spaces

# space -> alias -> (classifier dataset, {split: accuracy dataset})
ALIASES: Mapping[str, Mapping[str, tuple[str, Mapping[str, str]]]] = {
    "nb201": {
        "cifar10": ("cifar10", {"val": "cifar10-valid", "test": "cifar10"}),
        "cifar10-valid": ("cifar10-valid", {"val": "cifar10-valid"}),
        "imagenet16": ("imagenet16-120", {"val": "imagenet16-120", "test": "imagenet16-120"}),
        "imagenet16-120": ("imagenet16-120", {"val": "imagenet16-120", "test": "imagenet16-120"}),
    },
}


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
        known = names + [f"{s}-{a}" for s, table in ALIASES.items() if s in names for a in table]
        close = difflib.get_close_matches(text, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(f"unknown space {text!r}{hint} (spaces: {', '.join(names) or 'none'}; "
                               "write SPACE or SPACE-DATASET, e.g. nb201-cifar10)")
    name = max(matches, key=len)
    rest = text[len(name) + 1:] if len(text) > len(name) else None
    return name, rest or None


def resolve_spec(text: str, space: SearchSpace, alias: str | None) -> SpaceSpec:
    """Turn a dataset alias of an opened ``space`` into a :class:`SpaceSpec`."""
    table = ALIASES.get(space.name, {})
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
