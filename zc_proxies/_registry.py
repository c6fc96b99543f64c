"""One generic name -> object registry.

Used for proxies and for search spaces. Names are listed with shell-style
wildcards, a miss suggests close names, duplicates are refused, and third-party
objects are discovered through an entry-point group that is only imported when
a name is actually needed.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from .errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered objects of one kind.

    Parameters
    ----------
    kind
        What is registered ("proxy", "space"); used in error messages.
    entry_point_group
        The ``importlib.metadata`` group searched for third-party objects, or
        None for a closed registry.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._loading: set[str] = set()

    # -- registration -------------------------------------------------------------
    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name``; a taken name raises DuplicateNameError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise DuplicateNameError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = obj
        return obj

    def remove(self, name: str) -> None:
        """Forget ``name`` (mainly for tests and interactive work)."""
        self._items.pop(name, None)

    # -- entry points -------------------------------------------------------------
    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        if self.entry_point_group is None:
            return {}
        return {ep.name: ep for ep in metadata.entry_points(group=self.entry_point_group)}

    def _load_entry_point(self, name: str, on_load: Callable[[str, object], None]) -> bool:
        ep = self._entry_points().get(name)
        if ep is None or name in self._loading:
            return False
        self._loading.add(name)
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not look like a missing one
            raise UnknownNameError(
                f"{self.kind} {name!r} comes from entry point {ep.value!r} "
                f"(group {self.entry_point_group!r}), which failed to load: {exc}"
            ) from exc
        finally:
            self._loading.discard(name)
        if name not in self._items:
            on_load(name, obj)
        return name in self._items

    # -- lookup -------------------------------------------------------------------
    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the wildcard ``pattern``, entry points included."""
        everything = set(self._items) | set(self._entry_points())
        return sorted(n for n in everything if fnmatch.fnmatchcase(n, pattern))

    def get(self, name: str, on_load: Callable[[str, object], None] | None = None) -> T:
        """The object registered as ``name``, loading its entry point if needed."""
        if name in self._items:
            return self._items[name]
        if on_load is not None and self._load_entry_point(name, on_load):
            return self._items[name]
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{hint} (known: {', '.join(known) or 'none'})"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._entry_points()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
