"""The official NDS result files, each one a registered search space.

The NDS release (Radosavovic et al., ICCV 2019; facebookresearch/nds,
``data.zip``) holds one JSON file per design space and sweep: a list of model
records, or (for the CIFAR-10 rerun sets) a dict whose ``top`` and ``mid``
lists hold the records. Each record has, among training logs this reader
ignores:

* ``net``: the pycls config: for the cell spaces ``genotype`` (``normal``,
  ``normal_concat``, ``reduce``, ``reduce_concat``; ops as ``[op, input]``
  pairs), ``width``, ``depth``, ``aux`` and ``drop_prob``; for the AnyNet
  spaces (ResNet, ResNeXt, Vanilla) ``block_type``, ``ds``, ``ws``, ``ss``,
  ``bot_muls`` and ``num_gs`` (see :mod:`.anynet`);
* ``test_ep_top1``: top-1 test error (percent) after each epoch; the stored
  accuracy (target ``test``, the default) is ``100 - test_ep_top1[-1]`` (after
  the last epoch, as the zero-cost literature uses it), and target
  ``test-best`` is ``100 - min(test_ep_top1)`` (the best epoch). The records'
  ``min_test_top1`` is that minimum in 3,294 of the 3,305 ImageNet and rerun
  records here; the 11 others (ResNet_lr-wd_in: 1, Vanilla_lr-wd_in: 10) are
  diverged runs at chance level (errors above 99 %), where ``min_test_top1``
  is the last epoch's; ``test-best`` takes the per-epoch list as recorded;
* ``params`` and ``flops``: raw counts, as pycls counted them.

Registered spaces (:data:`SWEEPS`; one dataset each, split ``test``):

==============================  ==========================  =========  ========  =====================
space                           file                        networks   dataset   records
==============================  ==========================  =========  ========  =====================
nds-darts, -enas, -nasnet,      DARTS.json ... Amoeba.json  cell       cifar10   ~5,000 (not to be had
-pnas, -amoeba                                                                   here; see PROVENANCE)
nds-darts-imagenet ...          DARTS_in.json ...           cell       imagenet  121, 117, 122, 119, 124
nds-amoeba-imagenet             Amoeba_in.json
nds-darts-fix-w-d-imagenet      DARTS_fix-w-d_in.json       cell       imagenet  499 (5 epochs)
nds-darts-lr-wd-imagenet        DARTS_lr-wd_in.json         cell       imagenet  515
nds-resnext-a-imagenet, -b-     ResNeXt-A_in, -B_in.json    AnyNet     imagenet  130, 164
nds-resnet-lr-wd-imagenet       ResNet_lr-wd_in.json        AnyNet     imagenet  494
nds-vanilla-lr-wd-imagenet      Vanilla_lr-wd_in.json       AnyNet     imagenet  500
nds-resnet-cifar10              ResNet_reruns.json          AnyNet     cifar10   2 archs x 100 reruns
nds-vanilla-cifar10             Vanilla_reruns.json         AnyNet     cifar10   2 archs x 100 reruns
==============================  ==========================  =========  ========  =====================

A file is read from ``<data_root>/nds/`` (or ``<data_root>/nds/nds_data/``,
the layout ``data.zip`` unpacks to), or from ``source=PATH``. ImageNet
networks have 1,000 classes, CIFAR-10 ones 10. The rerun sets train the same
two networks (``top`` and ``mid``) 100 times each: their space has those two
architectures, with the mean of the reruns' final accuracies as the stored
accuracy (:meth:`NDSSpace.reruns` gives them all); two architectures rank
nothing, so these spaces serve to measure training noise, not to correlate.

Every record's ``net`` is validated when the file is read; a final accuracy
outside [0, 100] (or not finite) and an architecture listed twice (outside a
rerun set) are refused (with the checks all spaces share, in
:mod:`..validation`); and every record's stored ``params`` is compared with
the closed-form parameter count of the network :meth:`NDSSpace.build` makes.
Disagreements are listed by :meth:`NDSSpace.verify_params`; on loading they
raise a :class:`NDSParamsWarning` (``check_params="warn"``, the default), a
:class:`~zc_proxies.errors.DataError` (``"error"``) or nothing (``"ignore"``).
A disagreement means the network scored is not the network that was trained,
so correlations on such records would be wrong.
"""

from __future__ import annotations

import json
import math
import operator
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ...data.images import data_root as resolve_data_root
from ...errors import ArchError, DataError, MissingDataError, UnknownNameError, ZCBenchError
from ..base import NUM_CLASSES, SearchSpace, Target, register_space
from ..validation import Rows, check_range, check_unique
from .anynet import AnyNetArch, anynet_flops, anynet_param_count, build_anynet
from .anynet import from_net as anynet_from_net
from .genotype import NDSArch, arch_key, arch_to_json, describe_arch, parse_arch
from .model import build_network, flops_count, param_count
from .ops import VOCABULARIES

DATA_URL = "https://dl.fbaipublicfiles.com/nds/data.zip"
PROJECT_URL = "https://github.com/facebookresearch/nds"

CHECK_PARAMS_MODES = ("warn", "error", "ignore")

Arch = NDSArch | AnyNetArch


@dataclass(frozen=True)
class Sweep:
    """One NDS file and the space it is registered as.

    Attributes
    ----------
    space
        Registered space name, e.g. ``"nds-darts-imagenet"``.
    file
        The file's name in the NDS release, e.g. ``"DARTS_in.json"``.
    family
        The cell vocabulary (``"DARTS"``, ...) for a cell space; ``"AnyNet"`` otherwise.
    dataset
        ``"cifar10"`` or ``"imagenet"``: the networks' input and classifier.
    note
        Anything a reader of its tables must know, or ``""``.
    """

    space: str
    file: str
    family: str
    dataset: str
    note: str = ""

    @property
    def cell(self) -> bool:
        return self.family != "AnyNet"

    @property
    def imagenet(self) -> bool:
        return self.dataset == "imagenet"


_CELLS = ("DARTS", "ENAS", "NASNet", "PNAS", "Amoeba")
_RESNEXT_NOTE = ("the ResNeXt-A/B records' stem (ss[0] = 8: three 3x3 stride-2 convs, 32-64-64 channels) is in no "
                 "public pycls version; it is inferred from the records' own parameter and FLOP counts, which it "
                 "reproduces for all of them")
_RERUN_NOTE = "two networks ('top' and 'mid') trained 100 times each: for training noise, not for ranking"

#: Every NDS file zcbench reads, by registered space name.
SWEEPS: dict[str, Sweep] = {s.space: s for s in (
    *(Sweep(f"nds-{f.lower()}", f"{f}.json", f, "cifar10") for f in _CELLS),
    *(Sweep(f"nds-{f.lower()}-imagenet", f"{f}_in.json", f, "imagenet") for f in _CELLS),
    Sweep("nds-darts-fix-w-d-imagenet", "DARTS_fix-w-d_in.json", "DARTS", "imagenet",
          "width 32 and depth 22 fixed; 5 training epochs"),
    Sweep("nds-darts-lr-wd-imagenet", "DARTS_lr-wd_in.json", "DARTS", "imagenet",
          "learning rate and weight decay drawn at random per model"),
    Sweep("nds-resnext-a-imagenet", "ResNeXt-A_in.json", "AnyNet", "imagenet", _RESNEXT_NOTE),
    Sweep("nds-resnext-b-imagenet", "ResNeXt-B_in.json", "AnyNet", "imagenet", _RESNEXT_NOTE),
    Sweep("nds-resnet-lr-wd-imagenet", "ResNet_lr-wd_in.json", "AnyNet", "imagenet",
          "learning rate and weight decay drawn at random per model"),
    Sweep("nds-vanilla-lr-wd-imagenet", "Vanilla_lr-wd_in.json", "AnyNet", "imagenet",
          "learning rate and weight decay drawn at random per model"),
    Sweep("nds-resnet-cifar10", "ResNet_reruns.json", "AnyNet", "cifar10", _RERUN_NOTE),
    Sweep("nds-vanilla-cifar10", "Vanilla_reruns.json", "AnyNet", "cifar10", _RERUN_NOTE),
)}

#: Registered space name -> NDS cell family, for the cell spaces.
SPACE_FAMILIES: dict[str, str] = {name: s.family for name, s in SWEEPS.items() if s.cell}


class NDSParamsWarning(UserWarning):
    """Some records store a parameter count that differs from the network built for them."""


class NDSIndexError(ZCBenchError, IndexError):
    """An architecture index outside ``0 .. len(space) - 1``."""


@dataclass(frozen=True)
class NDSRecord:
    """What zcbench keeps of one NDS model (of all its reruns, in a rerun set).

    ``accuracy`` is ``100 - test_ep_top1[-1]`` (the mean over ``reruns`` in a
    rerun set, which lists each rerun's); ``epochs`` is ``len(test_ep_top1)``;
    ``best_accuracy`` is ``100 - min(test_ep_top1)``, the best epoch's (the
    mean of the reruns' in a rerun set; NaN when not given).
    """

    arch: Arch
    accuracy: float
    params: int
    flops: int | None
    drop_prob: float
    epochs: int
    reruns: tuple[float, ...] = field(default=())
    best_accuracy: float = math.nan


@dataclass(frozen=True)
class ParamMismatch:
    """A record whose stored ``params`` differs from its built network's count."""

    index: int
    stored: int
    built: int


# -- the two kinds of network ---------------------------------------------------------------------------
def parse_net(sweep: Sweep, net: Any) -> Arch:
    """The architecture a ``net`` config (or canonical dict, or parsed architecture) describes in ``sweep``."""
    if sweep.cell:
        return parse_arch(net, VOCABULARIES[sweep.family], sweep.family)
    if isinstance(net, AnyNetArch):
        return net
    if isinstance(net, str):
        try:
            net = json.loads(net)
        except json.JSONDecodeError as exc:
            raise ArchError(f"an AnyNet architecture given as text must be JSON ({exc.msg})") from None
    return anynet_from_net(net, sweep.imagenet)


def net_key(arch: Arch) -> str:
    """The canonical JSON text of an architecture (how a space looks it up)."""
    return arch.key() if isinstance(arch, AnyNetArch) else arch_key(arch)


def net_json(arch: Arch) -> dict[str, Any]:
    """The canonical, JSON-serialisable form of an architecture (what ``space[i]`` returns)."""
    return arch.to_json() if isinstance(arch, AnyNetArch) else arch_to_json(arch)


def describe_net(arch: Arch) -> str:
    """One line naming an architecture in messages."""
    if isinstance(arch, AnyNetArch):
        stages = " ".join(f"{s.depth}x{s.width}/s{s.stride}" for s in arch.stages)
        return f"{arch.block_type}, {arch.stem}, stages {stages}"
    return describe_arch(arch)


def net_params(sweep: Sweep, arch: Arch, num_classes: int) -> int:
    """Closed-form parameter count of the network built for ``arch`` (auxiliary head included)."""
    if isinstance(arch, AnyNetArch):
        return anynet_param_count(arch, num_classes)
    return param_count(arch, num_classes, imagenet=sweep.imagenet)


def net_flops(sweep: Sweep, arch: Arch, num_classes: int) -> int | None:
    """FLOPs by pycls's counting rule, where zcbench reproduces it (None elsewhere)."""
    if isinstance(arch, AnyNetArch):
        return anynet_flops(arch, num_classes, sweep.imagenet)
    return flops_count(arch, num_classes, imagenet=True) if sweep.imagenet else None


def build_net(sweep: Sweep, arch: Arch, num_classes: int) -> nn.Module:
    """A freshly initialised network for ``arch`` (blocks marked with BlockProbes)."""
    if isinstance(arch, AnyNetArch):
        return build_anynet(arch, num_classes)
    return build_network(arch, num_classes, imagenet=sweep.imagenet)


# -- reading --------------------------------------------------------------------------------------------
def read_nds_json(path: str | os.PathLike) -> list[Mapping[str, Any]]:
    """The raw records of an official NDS file: a list, or the ``top`` + ``mid`` lists of a dict."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise MissingDataError(f"NDS file {str(path)!r} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"NDS file {str(path)!r} is not valid JSON ({exc}); is it truncated?") from exc
    if isinstance(data, Mapping):
        if "top" not in data or "mid" not in data:
            raise DataError(
                f"NDS file {str(path)!r} holds a JSON object with keys {sorted(data)[:8]}; expected a list of "
                "records or an object with 'top' and 'mid' lists"
            )
        parts = [data["top"], data["mid"]]
        if not all(isinstance(p, list) for p in parts):
            raise DataError(f"NDS file {str(path)!r}: 'top' and 'mid' must both be lists of records")
        records = parts[0] + parts[1]
    elif isinstance(data, list):
        records = data
    else:
        raise DataError(f"NDS file {str(path)!r} holds a JSON {type(data).__name__}; expected a list of records")
    if not records:
        raise DataError(f"NDS file {str(path)!r} holds no records")
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DataError(f"NDS file {str(path)!r}, record {i}: expected a JSON object, got {type(rec).__name__}")
    return records


def is_rerun_file(path: str | os.PathLike) -> bool:
    """Whether a file is a rerun set (a dict of ``top``/``mid`` reruns of the same networks)."""
    return Path(path).name.endswith("_reruns.json")


def _count(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: {name!r} must be a number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise DataError(f"{where}: {name!r} must be a whole count, got {value!r}")
    if value < 0:
        raise DataError(f"{where}: {name!r} is negative ({value})")
    return int(value)


def parse_record(raw: Mapping[str, Any], sweep: Sweep, where: str) -> NDSRecord:
    """Validate one raw record (``where`` names it in errors) and keep what zcbench needs.

    The accuracy's range and duplicate architectures are checked across all
    records by :class:`NDSSpace` (:mod:`..validation`).
    """
    missing = [k for k in ("net", "test_ep_top1", "params") if k not in raw]
    if missing:
        raise DataError(f"{where}: missing {', '.join(map(repr, missing))} (has: {', '.join(sorted(raw))[:200]})")
    net = raw["net"]
    if not isinstance(net, Mapping):
        raise DataError(f"{where}: 'net' must be a JSON object, got {type(net).__name__}")
    if sweep.cell != ("genotype" in net):
        raise DataError(f"{where}: 'net' {'has no' if sweep.cell else 'has a'} 'genotype': this file holds "
                        f"{'AnyNet' if sweep.cell else 'cell'} networks, but space {sweep.space!r} reads "
                        f"{'cell' if sweep.cell else 'AnyNet'} ones ({sweep.file})")
    try:
        arch = parse_net(sweep, net)
    except ArchError as exc:
        raise DataError(f"{where}: {exc}") from exc
    errors = raw["test_ep_top1"]
    if not isinstance(errors, list) or not errors:
        raise DataError(f"{where}: 'test_ep_top1' must be a non-empty list of per-epoch errors, got {errors!r:.80}")
    last = errors[-1]
    if isinstance(last, bool) or not isinstance(last, (int, float)):  # its range: NDSSpace checks all at once
        raise DataError(f"{where}: final 'test_ep_top1' {last!r} is not an error percentage (a number)")
    numbers = [float(e) for e in errors if not isinstance(e, bool) and isinstance(e, (int, float)) and math.isfinite(e)]
    best = 100.0 - min(numbers) if len(numbers) == len(errors) else math.nan  # NaN: an epoch's error is no number
    flops = raw.get("flops")
    drop_prob = net.get("drop_prob", 0.0)
    if isinstance(drop_prob, bool) or not isinstance(drop_prob, (int, float)):
        raise DataError(f"{where}: net.drop_prob must be a number, got {drop_prob!r}")
    return NDSRecord(arch=arch, accuracy=100.0 - float(last), params=_count(raw["params"], "params", where),
                     flops=None if flops is None else _count(flops, "flops", where), drop_prob=float(drop_prob),
                     epochs=len(errors), best_accuracy=best)


def group_reruns(records: Sequence[NDSRecord], where: str) -> list[NDSRecord]:
    """One record per architecture of a rerun set: the mean final accuracy, every rerun's kept.

    The reruns of one network must agree on everything but the accuracy.
    """
    groups: dict[str, list[NDSRecord]] = {}
    for rec in records:
        groups.setdefault(net_key(rec.arch), []).append(rec)
    out = []
    for runs in groups.values():
        first = runs[0]
        if any((r.params, r.flops, r.epochs) != (first.params, first.flops, first.epochs) for r in runs):
            raise DataError(f"{where}: reruns of one network disagree on params, flops or epochs "
                            f"({describe_net(first.arch)})")
        accs = tuple(r.accuracy for r in runs)
        best = sum(r.best_accuracy for r in runs) / len(runs)
        out.append(NDSRecord(first.arch, sum(accs) / len(accs), first.params, first.flops, first.drop_prob,
                             first.epochs, accs, best))
    return out


class NDSSpace(SearchSpace):
    """One NDS design space or sweep: the records of one official NDS file.

    ``space[i]`` is the canonical architecture dict: for a cell space
    ``{"genotype": {...}, "width": w, "depth": d, "aux": bool}`` (the ``net``
    config without training settings), for an AnyNet space the ``net`` config
    itself. :meth:`build` also accepts a raw ``net`` config. Networks are built
    without drop-path (the record's ``drop_prob`` is a training setting, kept
    in :meth:`record`).
    """

    #: Scored in NHWC on the CPU (:mod:`zc_proxies.runs.layout`, with exact BatchNorm statistics), cell and
    #: AnyNet spaces alike: six proxies scored together 1.4x-1.8x (cells) and 1.1x-1.2x (AnyNet) as fast as
    #: NCHW, Spearman 1.0 with NCHW for fisher, grad_norm, snip, synflow and naswot on every sweep measured
    #: (``benchmarks/layout_check.py``; figures in the README).
    cpu_layout = "nhwc"
    #: ...except with jacob_cov: its ImageNet-sized input jacobians rank 60 ENAS networks with Spearman
    #: 0.998 between the layouts, NHWC further from float64 than NCHW (0.9973 against 0.9994). epe_nas
    #: reads the same jacobian (and could not be measured here), so it stays with it.
    nchw_proxies = frozenset({"jacob_cov", "epe_nas"})
    splits = ("test", "test-best")
    #: What ``--target`` chooses among.
    targets = (
        Target("test", "top-1 accuracy after the last epoch, 100 - test_ep_top1[-1]", "test", default=True),
        Target("test-best", "top-1 accuracy at the best epoch, 100 - min(test_ep_top1)", "test"),
    )

    def __init__(self, sweep: Sweep, records: Sequence[NDSRecord], source: str | os.PathLike,
                 check_params: str = "warn") -> None:
        if check_params not in CHECK_PARAMS_MODES:
            raise UnknownNameError(
                f"check_params must be one of {', '.join(map(repr, CHECK_PARAMS_MODES))}, got {check_params!r}"
            )
        self.sweep = sweep
        self.name = sweep.space
        self.family = sweep.family
        self.datasets = (sweep.dataset,)
        self.source = Path(source)
        self._records = list(records)
        keys = [net_key(rec.arch) for rec in self._records]
        self._check_records(keys)
        self._index: dict[str, int] = {key: i for i, key in enumerate(keys)}
        self._mismatches: list[ParamMismatch] | None = None
        if check_params != "ignore":
            self._report_mismatches(check_params)

    def __repr__(self) -> str:
        return f"NDSSpace({self.name!r}: {len(self)} archs from {str(self.source)!r})"

    def _check_records(self, keys: Sequence[str]) -> None:
        """Refuse an accuracy outside [0, 100] (or not finite) and an architecture listed twice.

        A repeated architecture could not be told apart (:meth:`index_of` finds
        one index per architecture), so its second record would never be scored.
        """
        records = self._records
        rows = Rows(f"NDS file {str(self.source)!r}", lambda i: f"record {i}",
                    lambda i: describe_net(records[i].arch))
        check_range([rec.accuracy for rec in records], rows, "accuracy (100 - final 'test_ep_top1')")
        check_range([rec.best_accuracy for rec in records], rows, "best accuracy (100 - min 'test_ep_top1')",
                    allow_nan=True)
        check_unique(keys, rows, what="arch")

    # -- the SearchSpace interface ---------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def _check_index(self, index: Any) -> int:
        try:
            i = operator.index(index)
        except TypeError as exc:
            raise NDSIndexError(f"{self.name}: an architecture index must be an integer, got {index!r}") from exc
        if not 0 <= i < len(self._records):
            raise NDSIndexError(f"{self.name}: index {i} is out of range (0..{len(self._records) - 1})")
        return i

    def record(self, index: int) -> NDSRecord:
        """The parsed record at ``index`` (architecture, accuracy, params, flops, drop_prob, epochs, reruns)."""
        return self._records[self._check_index(index)]

    def reruns(self, index: int) -> tuple[float, ...]:
        """Every rerun's final accuracy of architecture ``index`` (its one accuracy outside a rerun set)."""
        rec = self.record(index)
        return rec.reruns or (rec.accuracy,)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return net_json(self.record(index).arch)

    def parse(self, arch: Any) -> Arch:
        """Validate ``arch`` (canonical dict, ``net`` config or parsed architecture) against this space."""
        return parse_net(self.sweep, arch)

    def index_of(self, arch: Any) -> int:
        key = net_key(self.parse(arch))
        if key not in self._index:
            raise UnknownNameError(f"{self.name}: this architecture is not among the {len(self)} records of "
                                   f"{self.source}")
        return self._index[key]

    def arch_key(self, arch: Any) -> str:
        return net_key(self.parse(arch))

    def build(self, arch: Any, num_classes: int | None = None) -> nn.Module:
        return build_net(self.sweep, self.parse(arch), self.num_classes(self.sweep.dataset)
                         if num_classes is None else num_classes)

    def accuracy(self, index: int, dataset: str | None = None, split: str = "test") -> float:
        """Top-1 accuracy in percent: ``test`` after the last epoch, ``test-best`` at the best epoch."""
        self.check_dataset(dataset or self.sweep.dataset)
        self.check_split(split)
        rec = self.record(index)
        if split == "test":
            return rec.accuracy
        if math.isnan(rec.best_accuracy):
            raise DataError(f"{self.name}: record {index}'s 'test_ep_top1' holds an entry that is not a number, so "
                            "it has no best-epoch accuracy")
        return rec.best_accuracy

    def params(self, index: int, dataset: str | None = None) -> int:
        self.check_dataset(dataset or self.sweep.dataset)
        return self.record(index).params

    def flops(self, index: int, dataset: str | None = None) -> int | None:
        """Stored FLOPs of architecture ``index`` (None when the record has none)."""
        self.check_dataset(dataset or self.sweep.dataset)
        return self.record(index).flops

    def num_classes(self, dataset: str) -> int:
        self.check_dataset(dataset)
        return NUM_CLASSES[dataset]

    def target_note(self, split: str, dataset: str) -> str:
        epochs = "/".join(map(str, sorted({r.epochs for r in self._records})))
        runs = " (mean of the reruns)" if any(r.reruns for r in self._records) else ""
        if split == "test-best":
            note = (f"{dataset} top-1 accuracy at the best of {epochs} training epochs, "
                    f"100 - min(test_ep_top1) of {self.sweep.file}{runs}")
        else:
            note = (f"{dataset} top-1 accuracy after the last of {epochs} training epochs, "
                    f"100 - test_ep_top1[-1] of {self.sweep.file}{runs}")
        return note + (f"; {self.sweep.note}" if self.sweep.note else "")

    # -- stored parameter counts against the built networks ----------------------------
    def verify_params(self) -> list[ParamMismatch]:
        """Records whose stored ``params`` differs from the parameter count of :meth:`build`'s network.

        Counts are closed form (auxiliary head included when the record has
        one, the dataset's classes); the tests check the formulas against built
        networks.
        """
        if self._mismatches is None:
            classes = self.num_classes(self.sweep.dataset)
            out = []
            for i, rec in enumerate(self._records):
                built = net_params(self.sweep, rec.arch, classes)
                if built != rec.params:
                    out.append(ParamMismatch(i, rec.params, built))
            self._mismatches = out
        return list(self._mismatches)

    def _report_mismatches(self, mode: str) -> None:
        bad = self.verify_params()
        if not bad:
            return
        first = ", ".join(f"record {m.index} stores {m.stored:,} but builds {m.built:,}" for m in bad[:3])
        message = (
            f"{len(bad)} of {len(self)} records in {self.source} store a 'params' count that differs from the "
            f"network zcbench builds for them ({first}{', ...' if len(bad) > 3 else ''}); scores for those "
            f"records are for a different network than the one trained. {type(self).__name__}.verify_params() "
            "lists them all."
        )
        if mode == "error":
            raise DataError(message)
        warnings.warn(message, NDSParamsWarning, stacklevel=4)


def load_nds_space(name: str, path: str | os.PathLike, *, check_params: str = "warn") -> NDSSpace:
    """Read an official NDS JSON file into the space ``name`` (one of :data:`SWEEPS`)."""
    sweep = sweep_of(name)
    path = Path(path)
    if path.name.endswith("_in.json") != sweep.imagenet:  # NDS names its ImageNet sweeps *_in.json
        fits = [s.space for s in SWEEPS.values() if s.file == path.name]
        raise DataError(f"{str(path)!r} is an NDS {'ImageNet' if path.name.endswith('_in.json') else 'CIFAR-10'} "
                        f"file, but space {name!r} builds {sweep.dataset} networks"
                        + (f"; open it as {fits[0]!r}" if fits else ""))
    raw = read_nds_json(path)
    records = [parse_record(r, sweep, f"NDS file {str(path)!r}, record {i}") for i, r in enumerate(raw)]
    if is_rerun_file(path):
        records = group_reruns(records, f"NDS file {str(path)!r}")
    return NDSSpace(sweep, records, path, check_params=check_params)


def sweep_of(name: str) -> Sweep:
    """The :class:`Sweep` registered as ``name``."""
    if name not in SWEEPS:
        raise UnknownNameError(f"no NDS space {name!r} (known: {', '.join(SWEEPS)})")
    return SWEEPS[name]


def alternatives(sweep: Sweep) -> list[Sweep]:
    """The other spaces of the same design space (``nds-darts-*``, ``nds-resnet-*``, ...): what to use instead."""
    group = sweep.space.split("-")[1]
    return [s for s in SWEEPS.values() if s is not sweep and s.space.split("-")[1] == group]


def locate_nds_file(name: str, data_root: str | os.PathLike | None) -> Path:
    """``<root>/nds/<file>`` (or ``<root>/nds/nds_data/<file>``) of space ``name``."""
    sweep = sweep_of(name)
    filename = sweep.file
    how = (f"download data.zip from the NDS release ({DATA_URL}, linked from {PROJECT_URL}) and put its "
           f"{filename} at <data_root>/nds/{filename}, or pass source=PATH/TO/{filename}")
    try:
        root = resolve_data_root(data_root)
    except MissingDataError as exc:
        raise MissingDataError(f"space {name!r} needs the NDS file {filename}: {exc}; then {how}") from exc
    candidates = [root / "nds" / filename, root / "nds" / "nds_data" / filename]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    present = [s.space for s in alternatives(sweep)
               if (root / "nds" / s.file).is_file() or (root / "nds" / "nds_data" / s.file).is_file()]
    instead = f"; the files present give {', '.join(present)} instead" if present else ""
    raise MissingDataError(f"space {name!r} needs the NDS file {filename}, which is not at {candidates[0]} "
                           f"(nor {candidates[1]}){instead}. To get it: {how}")


def _register(sweep: Sweep) -> None:
    def factory(data_root: str | os.PathLike | None = None, *, source: str | os.PathLike | None = None,
                check_params: str = "warn") -> NDSSpace:
        path = Path(source) if source is not None else locate_nds_file(sweep.space, data_root)
        if source is not None and not path.is_file():
            raise MissingDataError(f"space {sweep.space!r}: source {str(path)!r} is not a file; the NDS release "
                                   f"({DATA_URL}) holds {sweep.file}")
        return load_nds_space(sweep.space, path, check_params=check_params)

    factory.__name__ = f"open_{sweep.space.replace('-', '_')}"
    factory.__doc__ = (f"Open space {sweep.space!r} from {sweep.file} under ``<data_root>/nds/`` or ``source``; "
                       "``check_params`` is 'warn', 'error' or 'ignore'.")
    register_space(sweep.space, datasets=(sweep.dataset,))(factory)


for _sweep in SWEEPS.values():
    _register(_sweep)

