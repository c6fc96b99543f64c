"""The NAS-Bench-201 search space: 15,625 cells, their networks and their stored results.

Open it with ``zc_proxies.get_space("nb201", data_root)`` (reads
``<data_root>/nb201/nb201.csv.gz``) or ``get_space("nb201", source=path)``
with the official ``NAS-Bench-201-v1_0-e61699.pth`` (see :mod:`.bench` for
what each number means and where it comes from).

For NAS-Bench-201 the CLI aliases mean (``NB201Space.aliases``; a choice, documented here):

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

Targets (``--target``; :data:`NB201Space.targets`): ``val`` and ``test`` (the
200-epoch schedule, hp=200; the defaults) and ``val-12ep`` / ``test-12ep`` (the
same evaluation sets after the 12-epoch schedule, hp=12, from
``<data_root>/nb201/nb201_hp12.csv.gz`` when present, or the ``.pth`` file's
'less' results). Each reads the dataset the alias gives its base split, so
``nb201-cifar10 --target test-12ep`` is cifar10 ori-test after 12 epochs.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ...errors import ArchError, DataError, MissingDataError, UnknownNameError
from ..base import SearchSpace, Target, register_space
from .arch import format_arch, parse_arch
from .bench import (
    ACCURACY_COLUMNS,
    API_DATASETS,
    DATASETS,
    EVAL_SETS,
    FLOP_COLUMNS,
    HP12_COLUMNS,
    NUM_CLASSES,
    PARAM_COLUMNS,
    Results,
    open_results,
    read_hp12,
)
from .model import NB201Network


class ArchIndexError(UnknownNameError, IndexError):
    """An architecture index outside the space (an IndexError too, so ``for arch in space`` ends)."""


#: The 12-epoch targets and the split (evaluation set) each reads.
HP12_TARGETS = {"val-12ep": "val", "test-12ep": "test"}


class NB201Space(SearchSpace):
    """NAS-Bench-201 (Dong & Yang, ICLR 2020) over stored :class:`~.bench.Results`.

    Architectures are the official arch strings
    (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``), indexed as in the benchmark.
    Accuracies are percentages; see :data:`accuracy_keys` for the
    (dataset, split) pairs that exist.
    """

    name = "nb201"
    datasets = DATASETS
    #: Scored in NHWC on the CPU (:mod:`zc_proxies.runs.layout`): 1.44x as fast for six proxies scored together,
    #: Spearman >= 0.99994 with NCHW for each over 60 archs (``benchmarks/layout_check.py``).
    cpu_layout = "nhwc"
    splits = ("val", "test", *HP12_TARGETS)
    #: What ``--target`` chooses among (see the module docstring).
    targets = (
        Target("val", "200-epoch validation accuracy", "val", default=True),
        Target("test", "200-epoch test accuracy", "test", default=True),
        Target("val-12ep", "12-epoch validation accuracy, nb201_hp12.csv.gz", "val"),
        Target("test-12ep", "12-epoch test accuracy, nb201_hp12.csv.gz", "test"),
    )
    #: The command line's dataset aliases (see the module docstring).
    aliases = {
        "cifar10": ("cifar10", {"val": "cifar10-valid", "test": "cifar10"}),
        "cifar10-valid": ("cifar10-valid", {"val": "cifar10-valid"}),
        "imagenet16": ("imagenet16-120", {"val": "imagenet16-120", "test": "imagenet16-120"}),
        "imagenet16-120": ("imagenet16-120", {"val": "imagenet16-120", "test": "imagenet16-120"}),
    }
    #: How the two CIFAR-10 trainings differ, for table footnotes.
    TRAINED_ON = {"cifar10-valid": "trained on 25k CIFAR-10 train images",
                  "cifar10": "trained on all 50k train images"}
    #: The (dataset, split) pairs :meth:`accuracy` answers.
    accuracy_keys: tuple[tuple[str, str], ...] = tuple(ACCURACY_COLUMNS)

    def __init__(self, results: Results) -> None:
        self.results = results
        table = results.table
        self._archs: list[str] = table["arch"].tolist()
        self._index = {arch: i for i, arch in enumerate(self._archs)}
        self._columns = {c: table[c].to_numpy(dtype=float) for c in table.columns if c not in ("index", "arch")}
        self._hp12_loaded = False

    def __repr__(self) -> str:
        return f"NB201Space({len(self)} archs from {self.results.source!r})"

    def _load_hp12(self) -> None:
        """Read the 12-epoch accuracies on first use (MissingDataError / DataError name the file)."""
        if not self._hp12_loaded:
            hp12 = read_hp12(self.results)
            self._columns.update({c: hp12[c].to_numpy(dtype=float) for c in HP12_COLUMNS.values()})
            self._hp12_loaded = True

    def target_unavailable(self, name: str) -> str | None:
        """For ``val-12ep`` / ``test-12ep``: the missing 12-epoch table (or hp=12 results of the ``.pth``)."""
        if name not in HP12_TARGETS:
            return None
        try:
            self._load_hp12()
        except MissingDataError as exc:
            return str(exc)
        return None

    def target_note(self, split: str, dataset: str) -> str:
        """The official dataset and evaluation set behind a stored accuracy (e.g. cifar100 x-test), and its schedule."""
        base = HP12_TARGETS.get(split, split)
        if (dataset, base) not in EVAL_SETS:
            return super().target_note(split, dataset)
        trained = f" ({self.TRAINED_ON[dataset]})" if dataset in self.TRAINED_ON else ""
        note = f"{API_DATASETS[dataset]} {EVAL_SETS[(dataset, base)]} accuracy{trained}"
        if split in HP12_TARGETS:
            where = (Path(self.results.hp12_path).name if self.results.hp12 is None and self.results.hp12_path
                     else f"'less' results of {Path(self.results.source).name}")
            return f"{note}, after the 12-epoch schedule (hp=12; final epoch, mean over seeds; {where})"
        return f"{note}, after the 200-epoch schedule (hp=200; final epoch, mean over seeds)"

    # -- architectures ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._archs)

    def _position(self, index: Any) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise ArchIndexError(f"a NAS-Bench-201 index must be an int, got {type(index).__name__}") from None
        if not 0 <= i < len(self._archs):
            raise ArchIndexError(f"NAS-Bench-201 index {i} is out of range 0..{len(self._archs) - 1}")
        return i

    def __getitem__(self, index: int) -> str:
        return self._archs[self._position(index)]

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._archs))

    def index_of(self, arch: Any) -> int:
        """The benchmark index of an arch string (or of an index, checked)."""
        if isinstance(arch, str):
            canonical = format_arch(parse_arch(arch))
            if canonical not in self._index:
                raise UnknownNameError(f"arch {canonical!r} is well formed but not listed in {self.results.source!r}")
            return self._index[canonical]
        if isinstance(arch, bool) or not hasattr(arch, "__index__"):
            raise ArchError(f"a NAS-Bench-201 arch is an arch string or an index, got {type(arch).__name__}")
        return self._position(arch)

    def arch_key(self, arch: Any) -> str:
        return self[arch] if not isinstance(arch, str) else format_arch(parse_arch(arch))

    def build(self, arch: Any, num_classes: int) -> nn.Module:
        """A freshly initialised network for ``arch`` (string or index) with ``num_classes`` outputs."""
        arch_str = arch if isinstance(arch, str) else self[arch]
        return NB201Network(format_arch(parse_arch(arch_str)), num_classes)

    # -- stored results -----------------------------------------------------------------------
    def num_classes(self, dataset: str) -> int:
        """Classifier outputs for ``dataset``: 10, 10, 100 or 120."""
        return NUM_CLASSES[self._dataset(dataset)]

    def _dataset(self, dataset: str) -> str:
        if dataset in self.datasets:
            return dataset
        close = difflib.get_close_matches(str(dataset).lower(), self.datasets, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"space 'nb201' has no dataset {dataset!r}{hint} (has: {', '.join(self.datasets)})")

    def _value(self, column: str, index: Any, what: str) -> float:
        i = self._position(index)
        value = self._columns[column][i]
        if math.isnan(value):
            raise DataError(f"{self.results.source!r} holds no {what} for arch {i} ({self._archs[i]})")
        return float(value)

    def _column(self, dataset: str, split: str) -> str:
        """The column holding ``split`` (a target name) on ``dataset``; UnknownNameError for a pair not held."""
        dataset = self._dataset(dataset)
        self.check_split(split)
        base = HP12_TARGETS.get(split, split)
        column = ACCURACY_COLUMNS.get((dataset, base))
        if column is None:
            pairs = ", ".join(f"{d}/{s}" for d, s in self.accuracy_keys)
            why = ("the 'cifar10' network is trained on train+valid, so it has only a test accuracy; "
                   "use 'cifar10-valid'/'val' for a validation accuracy" if dataset == "cifar10" else
                   "the 'cifar10-valid' network's test accuracy is not in NAS-Bench-201 v1_0 results here; "
                   "use 'cifar10'/'test'")
            raise UnknownNameError(f"space 'nb201' has no {split!r} accuracy for {dataset!r}: {why} "
                                   f"(available: {pairs})")
        if split in HP12_TARGETS:
            self._load_hp12()
            return HP12_COLUMNS[(dataset, base)]
        return column

    def accuracy(self, index: int, dataset: str, split: str) -> float:
        """Stored accuracy in percent (final epoch, mean over seeds) of target ``split``.

        ``val`` / ``test``: the 200-epoch schedule (hp=200); ``val-12ep`` /
        ``test-12ep``: the 12-epoch schedule (hp=12). Raises UnknownNameError
        for an unknown dataset or split, and for the two pairs the benchmark
        does not hold at this version: ``cifar10`` / ``val`` and
        ``cifar10-valid`` / ``test``; MissingDataError when the 12-epoch
        accuracies are not to be had (naming the file).
        """
        return self._value(self._column(dataset, split), index, f"{dataset} {split} accuracy")

    def indices_with(self, dataset: str, split: str) -> Sequence[int]:
        """Indices of the archs with a stored ``split`` accuracy on ``dataset`` (all, with our tables)."""
        values = self._columns[self._column(dataset, split)]
        finite = ~np.isnan(values)
        return range(len(self)) if finite.all() else np.flatnonzero(finite).tolist()

    def params(self, index: int, dataset: str = "cifar10") -> int:
        """Trainable parameters of arch ``index`` with ``dataset``'s classifier."""
        dataset = self._dataset(dataset)
        return round(self._value(PARAM_COLUMNS[dataset], index, f"{dataset} parameter count") * 1e6)

    def flops(self, index: int, dataset: str = "cifar10") -> float:
        """FLOPs in millions of one forward pass on one image (counter: ``results.flops_counter``)."""
        dataset = self._dataset(dataset)
        return self._value(FLOP_COLUMNS[dataset], index, f"{dataset} FLOPs")


_OPTIONS = ("source", "trust_pickle")


@register_space("nb201", datasets=DATASETS, aliases=tuple(NB201Space.aliases))
def open_nb201(data_root: str | Path | None = None, **options: Any) -> NB201Space:
    """Open NAS-Bench-201.

    Parameters
    ----------
    data_root
        Data root holding ``nb201/nb201.csv.gz`` (else ``$ZCBENCH_DATA``).
    source
        Optional path to read instead: the official ``NAS-Bench-201-v1_*.pth``
        or a ``.csv.gz`` table in our layout.
    trust_pickle
        Let a ``.pth`` file be unpickled in full (it can run code); needed only
        if the file holds objects beyond the official layout.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise UnknownNameError(f"space 'nb201' has no option(s) {', '.join(unknown)} (options: {', '.join(_OPTIONS)})")
    return NB201Space(open_results(data_root, options.get("source"),
                                   trust_pickle=bool(options.get("trust_pickle", False))))
