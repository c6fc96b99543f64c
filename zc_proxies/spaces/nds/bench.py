"""The official NDS result files, and the five NDS cell spaces built on them.

The NDS release (facebookresearch/nds, ``data.zip``) holds one JSON file per
design space. A file is either a list of model records or, for the ImageNet
sweeps, a dict whose ``top`` and ``mid`` lists together hold the records. Each
record has (among training logs this reader ignores):

* ``net``: the pycls config, with ``genotype`` (``normal``, ``normal_concat``,
  ``reduce``, ``reduce_concat``; ops as ``[op, input]`` pairs), ``width``,
  ``depth``, ``aux`` and ``drop_prob``;
* ``test_ep_top1``: top-1 test error per epoch; the stored accuracy is
  ``100 - test_ep_top1[-1]`` (final epoch), as the zero-cost literature uses it;
* ``params`` and ``flops``: raw counts.

Registered spaces (dataset ``cifar10``, split ``test``): ``nds-darts``,
``nds-enas``, ``nds-nasnet``, ``nds-pnas`` and ``nds-amoeba``, reading
``<data_root>/nds/<FAMILY>.json`` (or ``<data_root>/nds/nds_data/<FAMILY>.json``,
the layout ``data.zip`` unpacks to), or the file given as ``source=PATH``.

Every record's genotype is validated against its space's op vocabulary when the
file is read; a final accuracy outside [0, 100] (or not finite) and an
architecture listed twice are refused (with the checks all spaces share, in
:mod:`..validation`); and every record's stored ``params`` is compared with the
parameter count of the network :meth:`NDSSpace.build` makes (computed in closed
form, so the check costs milliseconds for 5,000 records). Disagreements are listed by
:meth:`NDSSpace.verify_params`; on loading they raise a
:class:`NDSParamsWarning` (``check_params="warn"``, the default), a
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ...data.images import data_root as resolve_data_root
from ...errors import ArchError, DataError, MissingDataError, UnknownNameError, ZCBenchError
from ..base import SearchSpace, register_space
from ..validation import Rows, check_range, check_unique
from .genotype import NDSArch, arch_key, arch_to_json, describe_arch, parse_arch
from .model import build_network, param_count
from .ops import VOCABULARIES

DATA_URL = "https://dl.fbaipublicfiles.com/nds/data.zip"
PROJECT_URL = "https://github.com/facebookresearch/nds"

#: Registered space name -> NDS family (file stem and vocabulary key).
SPACE_FAMILIES: dict[str, str] = {
    "nds-darts": "DARTS",
    "nds-enas": "ENAS",
    "nds-nasnet": "NASNet",
    "nds-pnas": "PNAS",
    "nds-amoeba": "Amoeba",
}

CHECK_PARAMS_MODES = ("warn", "error", "ignore")


class NDSParamsWarning(UserWarning):
    """Some records store a parameter count that differs from the network built for them."""


class NDSIndexError(ZCBenchError, IndexError):
    """An architecture index outside ``0 .. len(space) - 1``."""


@dataclass(frozen=True)
class NDSRecord:
    """What zcbench keeps of one NDS model record."""

    arch: NDSArch
    accuracy: float
    params: int
    flops: int | None
    drop_prob: float


@dataclass(frozen=True)
class ParamMismatch:
    """A record whose stored ``params`` differs from its built network's count."""

    index: int
    stored: int
    built: int


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


def _count(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: {name!r} must be a number, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise DataError(f"{where}: {name!r} must be a whole count, got {value!r}")
    if value < 0:
        raise DataError(f"{where}: {name!r} is negative ({value})")
    return int(value)


def parse_record(raw: Mapping[str, Any], vocabulary: Sequence[str] | None, family: str, where: str) -> NDSRecord:
    """Validate one raw record (``where`` names it in errors) and keep what zcbench needs.

    The accuracy's range and duplicate architectures are checked across all
    records by :class:`NDSSpace` (:mod:`..validation`).
    """
    missing = [k for k in ("net", "test_ep_top1", "params") if k not in raw]
    if missing:
        raise DataError(f"{where}: missing {', '.join(map(repr, missing))} (has: {', '.join(sorted(raw))[:200]})")
    net = raw["net"]
    if not isinstance(net, Mapping) or "genotype" not in net:
        raise DataError(
            f"{where}: 'net' has no 'genotype'; this reader covers the NDS cell spaces "
            "(DARTS, ENAS, NASNet, PNAS, Amoeba), not ResNet/ResNeXt/Vanilla files"
        )
    try:
        arch = parse_arch(net, vocabulary, family)
    except ArchError as exc:
        raise DataError(f"{where}: {exc}") from exc
    errors = raw["test_ep_top1"]
    if not isinstance(errors, list) or not errors:
        raise DataError(f"{where}: 'test_ep_top1' must be a non-empty list of per-epoch errors, got {errors!r:.80}")
    last = errors[-1]
    if isinstance(last, bool) or not isinstance(last, (int, float)):  # its range: NDSSpace checks all at once
        raise DataError(f"{where}: final 'test_ep_top1' {last!r} is not an error percentage (a number)")
    flops = raw.get("flops")
    drop_prob = net.get("drop_prob", 0.0)
    if isinstance(drop_prob, bool) or not isinstance(drop_prob, (int, float)):
        raise DataError(f"{where}: net.drop_prob must be a number, got {drop_prob!r}")
    return NDSRecord(
        arch=arch,
        accuracy=100.0 - float(last),
        params=_count(raw["params"], "params", where),
        flops=None if flops is None else _count(flops, "flops", where),
        drop_prob=float(drop_prob),
    )


class NDSSpace(SearchSpace):
    """One NDS cell design space: records of an official NDS JSON file.

    ``space[i]`` is the canonical architecture dict ``{"genotype": {...},
    "width": w, "depth": d, "aux": bool}`` (the ``net`` config without
    training settings); :meth:`build` also accepts a raw ``net`` config.
    Networks are built without drop-path (the record's ``drop_prob`` is a
    training setting, kept in :meth:`record`).
    """

    datasets = ("cifar10",)
    splits = ("test",)

    def __init__(
        self,
        name: str,
        family: str,
        records: Sequence[NDSRecord],
        source: str | os.PathLike,
        check_params: str = "warn",
    ) -> None:
        if check_params not in CHECK_PARAMS_MODES:
            raise UnknownNameError(
                f"check_params must be one of {', '.join(map(repr, CHECK_PARAMS_MODES))}, got {check_params!r}"
            )
        self.name = name
        self.family = family
        self.vocabulary = VOCABULARIES[family]
        self.source = Path(source)
        self._records = list(records)
        keys = [arch_key(rec.arch) for rec in self._records]
        self._check_records(keys)
        self._index: dict[str, int] = {key: i for i, key in enumerate(keys)}
        self._mismatches: list[ParamMismatch] | None = None
        if check_params != "ignore":
            self._report_mismatches(check_params)

    def _check_records(self, keys: Sequence[str]) -> None:
        """Refuse an accuracy outside [0, 100] (or not finite) and an architecture listed twice.

        A repeated architecture could not be told apart (:meth:`index_of` finds
        one index per architecture), so its second record would never be scored.
        """
        records = self._records
        rows = Rows(f"NDS file {str(self.source)!r}", lambda i: f"record {i}",
                    lambda i: describe_arch(records[i].arch))
        check_range([rec.accuracy for rec in records], rows, "accuracy (100 - final 'test_ep_top1')")
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
        """The parsed record at ``index`` (architecture, accuracy, params, flops, drop_prob)."""
        return self._records[self._check_index(index)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return arch_to_json(self.record(index).arch)

    def parse(self, arch: Any) -> NDSArch:
        """Validate ``arch`` (canonical dict, ``net`` config or :class:`NDSArch`) against this space."""
        return parse_arch(arch, self.vocabulary, self.family)

    def index_of(self, arch: Any) -> int:
        key = arch_key(self.parse(arch))
        if key not in self._index:
            raise UnknownNameError(f"{self.name}: this architecture is not among the {len(self)} records of {self.source}")
        return self._index[key]

    def arch_key(self, arch: Any) -> str:
        return arch_key(self.parse(arch))

    def build(self, arch: Any, num_classes: int = 10) -> nn.Module:
        return build_network(self.parse(arch), num_classes)

    def accuracy(self, index: int, dataset: str = "cifar10", split: str = "test") -> float:
        self.check_dataset(dataset)
        self.check_split(split)
        return self.record(index).accuracy

    def params(self, index: int, dataset: str = "cifar10") -> int:
        self.check_dataset(dataset)
        return self.record(index).params

    def flops(self, index: int, dataset: str = "cifar10") -> int | None:
        """Stored FLOPs of architecture ``index`` (None when the record has none)."""
        self.check_dataset(dataset)
        return self.record(index).flops

    def num_classes(self, dataset: str) -> int:
        self.check_dataset(dataset)
        return 10

    # -- stored parameter counts against the built networks ----------------------------
    def verify_params(self) -> list[ParamMismatch]:
        """Records whose stored ``params`` differs from the parameter count of :meth:`build`'s network.

        Counts come from :func:`~zc_proxies.spaces.nds.model.param_count`
        (closed form, auxiliary head included when the record has one, 10
        classes); the tests check that formula against built networks.
        """
        if self._mismatches is None:
            out = []
            for i, rec in enumerate(self._records):
                built = param_count(rec.arch, 10)
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


def load_nds_space(
    name: str,
    path: str | os.PathLike,
    *,
    family: str | None = None,
    check_params: str = "warn",
) -> NDSSpace:
    """Read an official NDS JSON file into an :class:`NDSSpace` named ``name``."""
    family = family or SPACE_FAMILIES[name]
    path = Path(path)
    if path.name.endswith("_in.json"):
        raise DataError(
            f"{str(path)!r} is an NDS ImageNet sweep; zcbench builds the CIFAR network only, "
            "so its parameter counts and scores would not match the trained models"
        )
    raw = read_nds_json(path)
    vocabulary = VOCABULARIES[family]
    records = [parse_record(r, vocabulary, family, f"NDS file {str(path)!r}, record {i}") for i, r in enumerate(raw)]
    return NDSSpace(name, family, records, path, check_params=check_params)


def locate_nds_file(name: str, data_root: str | os.PathLike | None) -> Path:
    """``<root>/nds/<FAMILY>.json`` (or ``<root>/nds/nds_data/<FAMILY>.json``) for space ``name``."""
    family = SPACE_FAMILIES[name]
    filename = f"{family}.json"
    how = (
        f"download data.zip from the NDS release ({DATA_URL}, linked from {PROJECT_URL}) and put its "
        f"{filename} at <data_root>/nds/{filename}, or pass source=PATH/TO/{filename}"
    )
    try:
        root = resolve_data_root(data_root)
    except MissingDataError as exc:
        raise MissingDataError(f"space {name!r} needs the NDS file {filename}: {exc}; then {how}") from exc
    candidates = [root / "nds" / filename, root / "nds" / "nds_data" / filename]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MissingDataError(
        f"space {name!r} needs the NDS file {filename}, which is not at {candidates[0]} "
        f"(nor {candidates[1]}): {how}"
    )


def _register(name: str) -> None:
    def factory(
        data_root: str | os.PathLike | None = None,
        *,
        source: str | os.PathLike | None = None,
        check_params: str = "warn",
    ) -> NDSSpace:
        path = Path(source) if source is not None else locate_nds_file(name, data_root)
        if source is not None and not path.is_file():
            raise MissingDataError(
                f"space {name!r}: source {str(path)!r} is not a file; the NDS release ({DATA_URL}) "
                f"holds {SPACE_FAMILIES[name]}.json"
            )
        return load_nds_space(name, path, check_params=check_params)

    factory.__name__ = f"open_{name.replace('-', '_')}"
    factory.__doc__ = (
        f"Open space {name!r} from {SPACE_FAMILIES[name]}.json under ``<data_root>/nds/`` or ``source``; "
        "``check_params`` is 'warn', 'error' or 'ignore'."
    )
    register_space(name)(factory)


for _name in SPACE_FAMILIES:
    _register(_name)
