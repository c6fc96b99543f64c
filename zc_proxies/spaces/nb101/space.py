"""The NAS-Bench-101 search space: 423,624 cells, their networks and their stored results.

Open it with ``zc_proxies.get_space("nb101", data_root)`` (our CSV tables under
``<data_root>/nb101/``) or ``get_space("nb101", source=path)`` with the
official ``nasbench_only108.tfrecord`` or an ``.h5`` made from it by
``zcbench convert nb101`` (see :mod:`.bench` for what each number means).

An architecture is a cell, given as ``{"matrix": [[0, 1, ...], ...], "ops":
["input", ..., "output"]}`` (what ``space[i]`` returns), a ``(matrix, ops)``
pair, an object with ``matrix``/``ops`` attributes, its official hash, or its
index. Cells are pruned before lookup, so a cell with dangling vertices is
found under its pruned form.

Targets (``--target``; :data:`NB101Space.targets`): ``val`` and ``test`` (108
epochs; the defaults), and ``val-4ep`` ... ``test-36ep`` at the 4, 12 and 36
epoch budgets where the source has them: the official ``nasbench_full.tfrecord``
(or its ``.h5``) has every one, as means over the runs;
``nasbench_only108.tfrecord`` has none; our CSV tables have ``val-4ep``,
``val-12ep`` and ``val-36ep`` (one run, the 20,001-cell validation subset)
and no test accuracy but at 108 epochs.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ArchError, DataError, MissingDataError, UnknownNameError
from ..base import SearchSpace, Target, register_space
from .bench import Results, open_results
from .graph_hash import cell_hash
from .model import NB101Network, build_network
from .spec import CellSpec, canonical_cell

_HASH = re.compile(r"^[0-9a-f]{32}$")


class ArchIndexError(UnknownNameError, IndexError):
    """An index outside the space (an IndexError too, so ``for arch in space`` ends)."""


#: The targets at other epoch budgets than the opened one: name -> (split, epochs).
EPOCH_TARGETS: dict[str, tuple[str, int]] = {f"{split}-{e}ep": (split, e) for split in ("val", "test")
                                             for e in (4, 12, 36)}


class NB101Space(SearchSpace):
    """NAS-Bench-101 (Ying et al., ICML 2019) over stored :class:`~.bench.Results`.

    Accuracies are percentages on CIFAR-10 after 108 epochs. ``"test"`` is
    the mean over the three training runs. ``"val"`` depends on the source:
    with our CSV tables it exists only for the 20,001 cells of the validation
    subset and is ONE run's accuracy; with the official records (or their
    ``.h5``) it is the mean over the runs, for every cell. Use
    :meth:`indices_with` to get the cells that have a given split.
    """

    name = "nb101"
    datasets = ("cifar10",)
    #: Scored in NHWC on the CPU (:mod:`zc_proxies.runs.layout`, with exact BatchNorm statistics): fisher
    #: 1.30x as fast; Spearman 1.0 with NCHW for each of seven proxies over 16 archs (``benchmarks/layout_check.py``).
    cpu_layout = "nhwc"
    splits = ("val", "test", *EPOCH_TARGETS)
    #: What ``--target`` chooses among (see the module docstring).
    targets = (
        Target("val", "validation accuracy after 108 epochs", "val", default=True),
        Target("test", "test accuracy after 108 epochs", "test", default=True),
        *(Target(name, f"{'validation' if split == 'val' else 'test'} accuracy after {e} epochs", split)
          for name, (split, e) in EPOCH_TARGETS.items()),
    )
    #: The (dataset, split) pairs :meth:`accuracy` answers (for some or all cells).
    accuracy_keys: tuple[tuple[str, str], ...] = (("cifar10", "val"), ("cifar10", "test"))

    def __init__(self, results: Results) -> None:
        self.results = results
        self._split_values = {"test": results.test_acc, "val": results.val_acc}
        self._notes = {"test": results.test_note, "val": results.val_note}

    def __repr__(self) -> str:
        return f"NB101Space({len(self)} cells from {self.results.source!r})"

    def _values(self, split: str) -> np.ndarray:
        """The stored fractions of target ``split`` (NaN: none); MissingDataError if the source has none."""
        if split not in self._split_values:
            values, note = self.results.at_epochs(*EPOCH_TARGETS[split])
            self._split_values[split], self._notes[split] = values, note
        return self._split_values[split]

    def target_unavailable(self, name: str) -> str | None:
        """For an epoch-budget target: what the source lacks (e.g. 36-epoch runs, or test accuracies at 4 epochs)."""
        if name not in EPOCH_TARGETS:
            return None
        try:
            values = self._values(name)
        except MissingDataError as exc:
            return str(exc)
        if np.isnan(values).all():
            return f"{self.results.source!r} stores no {name!r} accuracy for any cell"
        return None

    def target_note(self, split: str, dataset: str) -> str:
        """What the stored ``split`` accuracy is, from the source (e.g. one run's, for a 20,001-cell subset)."""
        if split not in self._notes and split in EPOCH_TARGETS:
            try:
                self._values(split)
            except MissingDataError:
                return super().target_note(split, dataset)
        note = self._notes.get(split)
        if not note:
            return super().target_note(split, dataset)
        where = Path(self.results.source).name
        return f"CIFAR-10 {note}" + ("" if ".csv" in note else f" ({where})")

    # -- architectures ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.results)

    def _position(self, index: Any) -> int:
        if isinstance(index, bool):
            raise ArchIndexError("a NAS-Bench-101 index must be an int, got bool")
        try:
            i = operator.index(index)
        except TypeError:
            raise ArchIndexError(f"a NAS-Bench-101 index must be an int, got {type(index).__name__}") from None
        if not 0 <= i < len(self):
            raise ArchIndexError(f"NAS-Bench-101 index {i} is out of range 0..{len(self) - 1}")
        return i

    def cell(self, index: int) -> CellSpec:
        """The stored (pruned) cell at ``index`` as a :class:`~.spec.CellSpec`."""
        return self.results.cells.cell(self._position(index))

    def __getitem__(self, index: int) -> dict[str, list]:
        """``{"matrix": [[...]], "ops": [...]}`` of the cell at ``index`` (official vertex order)."""
        return self.cell(index).to_json()

    def __iter__(self) -> Iterator[dict[str, list]]:
        return (self[i] for i in range(len(self)))

    def _cell_of(self, arch: Any) -> CellSpec:
        """The pruned, checked cell of any accepted description (not an index or hash)."""
        if isinstance(arch, str):
            text = arch.strip()
            if text.startswith("{"):
                try:
                    arch = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ArchError(f"cannot read the cell JSON {text[:80]!r}: {exc}") from None
            else:
                raise ArchError(f"a NAS-Bench-101 cell given as text must be its 32-hex-digit hash or JSON "
                                f"{{\"matrix\": ..., \"ops\": ...}}; got {text[:80]!r}")
        return canonical_cell(arch)

    def hash_of(self, arch: Any) -> str:
        """The official hash of a cell (pruned first), of a stored index, or a hash itself (checked)."""
        if isinstance(arch, str) and _HASH.match(arch.strip().lower()):
            return arch.strip().lower()
        if not isinstance(arch, bool) and hasattr(arch, "__index__"):
            return str(self.results.cells.hashes[self._position(arch)])
        return cell_hash(self._cell_of(arch))

    def index_of(self, arch: Any) -> int:
        """The index of a cell, hash or index; UnknownNameError if the source does not hold it."""
        if not isinstance(arch, bool) and hasattr(arch, "__index__"):
            return self._position(arch)
        h = self.hash_of(arch)
        i = self.results.cells.position(h)
        if i is None:
            raise UnknownNameError(f"NAS-Bench-101 cell with hash {h} is valid but not in {self.results.source!r}"
                                   + (f" ({len(self):,} cells)" if len(self) < 423_624 else ""))
        return i

    def arch_key(self, arch: Any) -> str:
        """The official hash: a stable key for any description of the same cell."""
        return self.hash_of(arch)

    def build(self, arch: Any, num_classes: int = 10, device: torch.device | str | None = None) -> NB101Network:
        """A freshly initialised NAS-Bench-101 network for a cell or an index.

        ``device="meta"`` builds the module without memory or initialisation
        (enough to count parameters).
        """
        if not isinstance(arch, bool) and hasattr(arch, "__index__"):
            cell = self.cell(arch)
        elif isinstance(arch, str) and _HASH.match(arch.strip().lower()):
            cell = self.cell(self.index_of(arch))
        else:
            cell = self._cell_of(arch)
        if int(num_classes) < 1:
            raise ArchError(f"num_classes must be positive, got {num_classes}")
        return build_network(cell, int(num_classes), device=device)

    # -- stored results -----------------------------------------------------------------------
    def num_classes(self, dataset: str = "cifar10") -> int:
        """10 (CIFAR-10 is the only dataset)."""
        self.check_dataset(dataset)
        return 10

    def accuracy(self, index: int, dataset: str = "cifar10", split: str = "test") -> float:
        """Stored accuracy in percent of target ``split`` (``val``/``test``: 108 epochs; ``val-12ep`` ...).

        Raises DataError for a cell that has no stored value for ``split``
        (with our tables: ``"val"`` outside the 20,001-cell subset), and
        MissingDataError (naming what is missing) for an epoch budget the
        source does not hold.
        """
        self.check_dataset(dataset)
        self.check_split(split)
        i = self._position(index)
        value = float(self._values(split)[i])
        if math.isnan(value):
            note = self._notes[split]
            raise DataError(f"NAS-Bench-101 cell {i} has no stored {split!r} accuracy in "
                            f"{self.results.source!r}: {note}; space.indices_with('cifar10', {split!r}) lists "
                            "the cells that have one")
        return 100.0 * value

    def params(self, index: int, dataset: str = "cifar10") -> int:
        """Trainable parameters (the official ``trainable_parameters``)."""
        self.check_dataset(dataset)
        return int(self.results.params[self._position(index)])

    def indices_with(self, dataset: str, split: str) -> Sequence[int]:
        """Indices of the cells with a stored ``split`` accuracy (ascending).

        With our CSV tables, ``"val"`` gives the 20,001-cell validation subset
        and ``"test"`` every cell; the evaluator samples from this.
        """
        self.check_dataset(dataset)
        self.check_split(split)
        finite = ~np.isnan(self._values(split))
        if finite.all():
            return range(len(self))
        return np.flatnonzero(finite).tolist()


_OPTIONS = ("source", "epochs")


@register_space("nb101", datasets=NB101Space.datasets)
def open_nb101(data_root: str | Path | None = None, **options: Any) -> NB101Space:
    """Open NAS-Bench-101.

    Parameters
    ----------
    data_root
        Data root holding ``nb101/nb101_all.csv.gz`` and
        ``nb101/nb101_val_subset20k.csv.gz`` (else ``$ZCBENCH_DATA``).
    source
        Optional file to read instead: the official ``nasbench_only108.tfrecord``
        (or ``nasbench_full.tfrecord``), an ``.h5`` made by ``zcbench convert
        nb101``, or a ``.csv.gz`` table in our layout.
    epochs
        Epoch budget whose runs are averaged, for record/HDF5 sources (108).
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise UnknownNameError(f"space 'nb101' has no option(s) {', '.join(unknown)} (options: {', '.join(_OPTIONS)})")
    try:
        epochs = int(options.get("epochs", 108))
    except (TypeError, ValueError):
        raise DataError(f"epochs must be an integer, got {options.get('epochs')!r}") from None
    return NB101Space(open_results(data_root, options.get("source"), epochs=epochs))
