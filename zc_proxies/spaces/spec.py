"""Space specs for the command line: ``nb201-cifar10`` -> space, classifier dataset and accuracy targets.

A spec is a registered space name, optionally followed by ``-`` and a dataset
alias. A space name alone is accepted when the space has one dataset
(``nds-darts``). The alias picks

* the *dataset* the networks are built for (classifier width) and whose
  training images feed the minibatch, and
* the *targets*: which stored accuracy each target name (split) is correlated against.

The target names are the space's own (:attr:`~.base.SearchSpace.targets`:
``val``, ``test``, ``test-12ep``, ``test-best`` ...); ``--target`` chooses
among them and each reads the dataset its base split (``val``/``test``) maps to
under the alias, so ``nb201-cifar10 --target test-12ep`` is cifar10 ori-test
after 12 epochs. Without ``--target`` a spec means the space's default targets.

What a space's aliases mean is the space's own business (its ``aliases``
attribute; NAS-Bench-201's are documented in :mod:`.nb201.space`). A dataset
name that is no alias means itself for every split the space stores for it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, UnknownNameError
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
        ``((split, dataset), ...)``: each target's name (the ``split`` passed to
        ``space.accuracy``) and the dataset whose stored accuracy it reads.
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


def parse_targets(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"val,test-12ep"`` (or a sequence of names) -> ``("val", "test-12ep")``; None stays None (the defaults)."""
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else [str(t) for t in text]
    names = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise ConfigError(f"--target {text!r} names no target; give NAME[,NAME...]")
    return names


def resolve_spec(text: str, space: SearchSpace, alias: str | None,
                 targets: str | Sequence[str] | None = None) -> SpaceSpec:
    """Turn a dataset alias of an opened ``space`` (and target names) into a :class:`SpaceSpec`.

    ``targets`` (``"val,test-12ep"`` or a sequence of names) chooses among the
    space's :meth:`~.base.SearchSpace.target_table`, in the order given (the
    first is the one plotted); None means the space's default targets that the
    alias stores, in val, test order. A name the space does not know, one the
    opened results lack (MissingDataError naming the file) and one the alias
    has no accuracy for are refused.
    """
    table = space.aliases
    if alias is None:
        if len(space.datasets) != 1:
            options = sorted(set(table) | set(space.datasets))
            raise UnknownNameError(f"space {space.name!r} has several datasets; name one, e.g. "
                                   + ", ".join(f"{space.name}-{d}" for d in options))
        alias = space.datasets[0]
    if alias in table:
        dataset, by_split = table[alias]
        by_split = dict(by_split)
    elif alias in space.datasets:
        dataset = alias
        stored = getattr(space, "accuracy_keys", None)  # (dataset, split) pairs a space declares it holds
        bases = {t.base for t in space.target_table().values()}
        by_split = {b: alias for b in bases if stored is None or (alias, b) in set(map(tuple, stored))}
    else:
        options = sorted(set(table) | set(space.datasets))
        close = difflib.get_close_matches(alias, options, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(f'{space.name}-{c}') for c in close)}?" if close else ""
        raise UnknownNameError(f"space {space.name!r} has no dataset {alias!r}{hint} "
                               f"(has: {', '.join(options)})")
    space.check_dataset(dataset)
    known = space.target_table()
    names = parse_targets(targets)
    if names is None:
        chosen = [(n, by_split[known[n].base]) for n in space.default_targets() if known[n].base in by_split]
        chosen.sort(key=_split_order)
    else:
        chosen = []
        for name in names:
            target = space.check_target(name)
            if target.base not in by_split:
                here = [t.name for t in known.values() if t.base in by_split]
                raise UnknownNameError(f"{text}: target {name!r} ({target.about}) is not stored for dataset "
                                       f"{alias!r} (its targets: {', '.join(here) or 'none'})")
            chosen.append((name, by_split[target.base]))
    if not chosen:
        raise UnknownNameError(f"{text}: space {space.name!r} stores no default target for dataset {alias!r}; "
                               f"name one with --target (targets: {space.describe_targets()})")
    for split, ds in chosen:
        space.check_dataset(ds)
        space.check_split(split)
    return SpaceSpec(text=text, space=space.name, dataset=dataset, targets=tuple(chosen))


def _split_order(item: tuple[str, str]) -> tuple[int, str]:
    order = {"val": 0, "valid": 0, "test": 1}
    return order.get(item[0], 2), item[0]


def open_space(name: str, root: str | Path | None, source: str | os.PathLike | None = None) -> SearchSpace:
    """Open the registered space ``name``: its tables under ``root``, or the file ``source`` (``--source``)."""
    if source is None:
        return get_space(name, root)
    try:
        return get_space(name, root, source=source)
    except TypeError as exc:  # a (third-party) factory without a ``source`` option
        if "source" not in str(exc):
            raise
        raise ConfigError(f"space {name!r} does not read --source files") from None


def open_spec(text: str, root: str | Path | None, targets: str | Sequence[str] | None = None, *,
              source: str | os.PathLike | None = None) -> tuple[SearchSpace, SpaceSpec]:
    """Open the space a ``--space`` value names (its tables under ``root``, or ``source``) and resolve its
    dataset alias and ``targets`` (see :func:`resolve_spec`)."""
    name, alias = split_spec(text)
    space = open_space(name, root, source)
    return space, resolve_spec(text, space, alias, targets)
