"""Stored NAS-Bench-201 results, read from our table or from the official ``.pth`` file.

Both readers give one :class:`Results`: a table with one row per architecture
in the benchmark's index order and the same columns, so the search space does
not care where the numbers came from.

What the numbers mean (hp=200, i.e. the 200-epoch schedule; final epoch;
mean over the seeds an architecture was trained with):

=================  =====  ===========================================================
dataset            split  meaning
=================  =====  ===========================================================
cifar10-valid      val    trained on 25k CIFAR-10 train images, accuracy on the other 25k (x-valid)
cifar10            test   trained on all 50k train images, accuracy on the 10k test set (ori-test)
cifar100           val    trained on the train set, accuracy on x-valid (half of the test set)
cifar100           test   ... accuracy on x-test (the other half)
imagenet16-120     val    trained on the train set, accuracy on x-valid (half of the val set)
imagenet16-120     test   ... accuracy on x-test (the other half)
=================  =====  ===========================================================

The 12-epoch schedule (hp=12; the ``val-12ep`` / ``test-12ep`` targets) has
the same pairs and evaluation sets, from ``nb201_hp12.csv.gz`` beside our table
(optional; read on first use) or from the ``.pth`` file's 'less' results.

There is deliberately no ``cifar10`` / ``val`` (that network is trained on
the validation images, so the benchmark has no validation accuracy for it) and
no ``cifar10-valid`` / ``test`` (our table holds that only from another API
version, which must not be mixed in). Asking for either raises
:class:`~zc_proxies.errors.UnknownNameError` that lists what exists.

Sources
-------
``<data_root>/nb201/nb201.csv.gz``
    Our table (see that folder's PROVENANCE.md): accuracies from
    NAS-Bench-201 v1_0; parameter counts are the true counts of each arch
    string; FLOPs are NASLib's counter (which also counts BN/ReLU elementwise
    operations).
``NAS-Bench-201-v1_0-e61699.pth`` (or v1_1)
    The official benchmark file, read with the official ``nas_201_api``
    classes (``ArchResults.get_metrics(..., is_random=False)`` on the 'full'
    results, ``get_compute_costs`` for params and FLOPs). Params and FLOPs are
    then what the API reports: the mean over seed records of the API's own
    counts (FLOPs without BN/ReLU), which for a few hundred archs in v1_0
    differs from the true count of the arch string. Reading the 2 GB file
    takes minutes and several GB of memory.

Both are checked when read (with the checks all spaces share, in
:mod:`..validation`): each of the 15,625 archs once, in canonical form;
accuracies in [0, 100] (NaN: not recorded); and, for our table only (whose
counts are the true ones), the parameter counts of a few seeded rows against
:func:`~.model.parameter_count`. A bad row raises
:class:`~zc_proxies.errors.DataError` naming the file, the row (CSV line or
benchmark index), the arch and the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import DataError, MissingDataError
from ..validation import Rows, check_archs, check_range, check_unique, spot_check_counts, spot_rows
from .arch import ARCH_PATTERN, NUM_ARCHS, format_arch, parse_arch
from .model import parameter_count

#: Where the table lives under the data root.
TABLE_PATH = Path("nb201") / "nb201.csv.gz"
#: The optional 12-epoch (hp=12) table, read from beside the main table when a 12-epoch target is asked for.
HP12_NAME = "nb201_hp12.csv.gz"

#: Dataset names, as accepted by the space (NAS-Bench-201's names, lower-cased).
DATASETS: tuple[str, ...] = ("cifar10-valid", "cifar10", "cifar100", "imagenet16-120")

#: The dataset names the official API and ``.pth`` file use.
API_DATASETS: dict[str, str] = {
    "cifar10-valid": "cifar10-valid",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "imagenet16-120": "ImageNet16-120",
}

NUM_CLASSES: dict[str, int] = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "imagenet16-120": 120}

#: (dataset, split) -> table column, and the official evaluation-set name behind it.
ACCURACY_COLUMNS: dict[tuple[str, str], str] = {
    ("cifar10-valid", "val"): "cifar10_valid_val_acc",
    ("cifar10", "test"): "cifar10_test_acc",
    ("cifar100", "val"): "cifar100_val_acc",
    ("cifar100", "test"): "cifar100_test_acc",
    ("imagenet16-120", "val"): "imagenet16_val_acc",
    ("imagenet16-120", "test"): "imagenet16_test_acc",
}
EVAL_SETS: dict[tuple[str, str], str] = {
    ("cifar10-valid", "val"): "x-valid",
    ("cifar10", "test"): "ori-test",
    ("cifar100", "val"): "x-valid",
    ("cifar100", "test"): "x-test",
    ("imagenet16-120", "val"): "x-valid",
    ("imagenet16-120", "test"): "x-test",
}

#: (dataset, split) -> column of the 12-epoch table (hp=12, final epoch, seed mean; same evaluation sets).
HP12_COLUMNS: dict[tuple[str, str], str] = {key: f"{column}_hp12" for key, column in ACCURACY_COLUMNS.items()}

_HEAD = {"cifar10-valid": "cifar10", "cifar10": "cifar10", "cifar100": "cifar100", "imagenet16-120": "imagenet16"}
#: dataset -> params column (millions) and FLOPs column (millions).
PARAM_COLUMNS: dict[str, str] = {d: f"params_mb_{h}" for d, h in _HEAD.items()}
FLOP_COLUMNS: dict[str, str] = {d: f"flops_m_{h}" for d, h in _HEAD.items()}

#: The official dataset whose cost record gives each params / FLOPs column.
_COST_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "ImageNet16-120"}

REQUIRED_COLUMNS: tuple[str, ...] = (
    ("index", "arch")
    + tuple(ACCURACY_COLUMNS.values())
    + tuple(dict.fromkeys(PARAM_COLUMNS.values()))
    + tuple(dict.fromkeys(FLOP_COLUMNS.values()))
)


@dataclass(frozen=True)
class Results:
    """Stored results of every architecture, in index order.

    Attributes
    ----------
    table
        One row per architecture (row i = index i) with the columns
        :data:`REQUIRED_COLUMNS`; a missing result is NaN.
    source
        The file the numbers came from.
    flops_counter
        Who counted the FLOPs: ``"naslib"`` (table) or ``"nb201-api"`` (``.pth``).
    hp12
        The 12-epoch accuracies (columns :data:`HP12_COLUMNS`, row i = index i)
        when they were read with the results (the ``.pth`` file's 'less'
        results), else None.
    hp12_path
        Else the 12-epoch table to read on first use (beside our table), or
        None when there is none to be had (a ``.pth`` without 'less' results).
    """

    table: pd.DataFrame
    source: str
    flops_counter: str
    hp12: pd.DataFrame | None = None
    hp12_path: str | None = None


def _rows(source: str, table: pd.DataFrame, lines: np.ndarray | None) -> Rows:
    """How messages name the rows: by CSV line for our table, by benchmark index for the official file."""
    archs = table["arch"].tolist()
    if lines is None:
        return Rows(f"NAS-Bench-201 file {source!r}", lambda i: f"arch index {i}", lambda i: f"arch {archs[i]!r}")
    index = table["index"].tolist()
    return Rows(f"NAS-Bench-201 table {source!r}", lambda i: f"line {lines[i]}",
                lambda i: f"index {index[i]}, arch {archs[i]!r}")


def _check_space(table: pd.DataFrame, path: Path, *, from_csv: bool) -> tuple[pd.DataFrame, Rows]:
    """Sort by index and check the rows: each arch of the space once, well formed, accuracies in [0, 100].

    ``from_csv`` says the rows came from our table in file order (messages
    then name the CSV line); NaN accuracies mean "not recorded" and are kept.
    Returns the sorted table and how messages name its rows.
    """
    table = table.sort_values("index", kind="stable")
    lines = table.index.to_numpy() + 2 if from_csv else None  # line 1 is the header
    table = table.reset_index(drop=True)
    table["arch"] = table["arch"].astype(str)
    rows = _rows(str(path), table, lines)
    if len(table) != NUM_ARCHS:
        raise DataError(f"{str(path)!r} lists {len(table)} architectures, expected all {NUM_ARCHS:,} "
                        "of NAS-Bench-201 (truncated or wrong file?)")
    index = table["index"].to_numpy()
    check_unique(index, rows, what="index")
    if not np.array_equal(index, np.arange(NUM_ARCHS)):
        first = int(np.flatnonzero(index != np.arange(NUM_ARCHS))[0])
        raise DataError(f"{rows.name(first)}: index {index[first]} is outside 0..{NUM_ARCHS - 1} "
                        f"(column 'index' must hold each of 0..{NUM_ARCHS - 1} exactly once)")
    archs = table["arch"]
    bad = np.flatnonzero(~archs.str.fullmatch(ARCH_PATTERN).to_numpy())  # the canonical strings exactly
    check_archs(bad, lambda i: format_arch(parse_arch(archs[i])), archs.__getitem__, rows, suspects=len(bad))
    check_unique(archs.to_numpy(), rows, what="arch")
    for column in ACCURACY_COLUMNS.values():
        check_range(table[column].to_numpy(dtype=float), rows, column, allow_nan=True)
    return table, rows


def _spot_check_params(table: pd.DataFrame, rows: Rows) -> None:
    """Compare the stored parameter counts of a few seeded rows with :func:`~.model.parameter_count`.

    Only our table claims the true count of every arch string (PROVENANCE.md);
    the official file's counts are the API's own and differ for some archs, so
    they are not checked.
    """
    archs = table["arch"].tolist()
    sample = spot_rows(len(table))
    heads = {PARAM_COLUMNS[d]: NUM_CLASSES[d] for d in DATASETS}  # params column -> classifier width
    for column, classes in heads.items():
        millions = table[column].to_numpy(dtype=float)
        spot_check_counts(sample, lambda i, m=millions: m[i] if np.isnan(m[i]) else round(m[i] * 1e6),
                          lambda i, k=classes: parameter_count(archs[i], k), rows, f"parameter count ({column} x 1e6)")


def read_table(path: str | Path) -> Results:
    """Read our ``nb201.csv.gz`` table.

    Raises
    ------
    MissingDataError
        If the file does not exist (the message says what to put there).
    DataError
        If it is not a readable gzip CSV, lacks columns, does not list the
        15,625 architectures once each in their canonical form, holds an
        accuracy outside [0, 100] (NaN means "not recorded" and is kept), or
        a spot-checked row's parameter count differs from its network's; the
        message names the line, the arch and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(
            f"NAS-Bench-201 table {str(path)!r} not found: put nb201.csv.gz (one row per arch: index, arch, "
            f"accuracy/params/FLOPs columns; see data/README.md and nb201/PROVENANCE.md) at "
            f"<data_root>/{TABLE_PATH.as_posix()}, or open the space with "
            "source='path/to/NAS-Bench-201-v1_0-e61699.pth'"
        )
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # gzip.BadGzipFile, EOFError, zlib.error, ParserError, ...
        raise DataError(f"cannot read NAS-Bench-201 table {str(path)!r} ({type(exc).__name__}: {exc}); "
                        "the file is truncated or corrupt, fetch it again") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"NAS-Bench-201 table {str(path)!r} lacks the column(s) {', '.join(missing)}")
    numeric = [c for c in REQUIRED_COLUMNS if c != "arch"]
    bad = [c for c in numeric if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise DataError(f"NAS-Bench-201 table {str(path)!r}: column(s) {', '.join(bad)} are not numeric")
    checked, rows = _check_space(table[list(REQUIRED_COLUMNS)].copy(), path, from_csv=True)
    _spot_check_params(checked, rows)
    return Results(checked, str(path), "naslib", hp12_path=str(path.with_name(HP12_NAME)))


def read_hp12(results: Results) -> pd.DataFrame:
    """The 12-epoch accuracies of ``results`` (columns :data:`HP12_COLUMNS`, row i = index i), checked.

    From the ``.pth`` file's 'less' results when it had them, else from
    ``nb201_hp12.csv.gz`` beside our table (see nb201/PROVENANCE.md): one row
    per arch with ``index``, ``arch`` and the six ``*_hp12`` columns, the
    archs those of the main table at the same index, accuracies in [0, 100]
    (NaN: not recorded).

    Raises
    ------
    MissingDataError
        Naming the file to put in place (or saying the ``.pth`` has no hp=12 results).
    DataError
        If the table is unreadable, lacks columns, or a row disagrees with the main table.
    """
    if results.hp12 is not None:
        return results.hp12
    if results.hp12_path is None:
        raise MissingDataError(f"{results.source!r} holds no 'less' (hp=12, 12-epoch) results")
    path = Path(results.hp12_path)
    if not path.is_file():
        raise MissingDataError(f"the 12-epoch (hp=12) accuracies are read from {str(path)!r}, which does not exist; "
                               f"put {HP12_NAME} there (see nb201/PROVENANCE.md), or pass the official "
                               "NAS-Bench-201-v1_0-e61699.pth as the source (its 'less' results)")
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # gzip.BadGzipFile, EOFError, zlib.error, ParserError, ...
        raise DataError(f"cannot read the NAS-Bench-201 12-epoch table {str(path)!r} ({type(exc).__name__}: "
                        f"{exc}); the file is truncated or corrupt, fetch it again") from exc
    need = ["index", "arch", *HP12_COLUMNS.values()]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"NAS-Bench-201 12-epoch table {str(path)!r} lacks the column(s) {', '.join(missing)}")
    bad = [c for c in need if c != "arch" and not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise DataError(f"NAS-Bench-201 12-epoch table {str(path)!r}: column(s) {', '.join(bad)} are not numeric")
    archs = results.table["arch"].to_numpy()
    rows = Rows(f"NAS-Bench-201 12-epoch table {str(path)!r}", lambda i: f"line {i + 2}",
                lambda i: f"index {table['index'].iloc[i]}")
    if len(table) != len(archs) or not np.array_equal(table["index"].to_numpy(), np.arange(len(archs))):
        raise DataError(f"{str(path)!r} must list the {len(archs):,} architectures once each, in index order "
                        f"(it has {len(table):,} rows)")
    wrong = np.flatnonzero(table["arch"].astype(str).to_numpy() != archs)
    if wrong.size:
        raise DataError(f"{rows.name(int(wrong[0]))}: arch {table['arch'].iloc[int(wrong[0])]!r} is not the arch "
                        f"{results.source!r} gives that index ({wrong.size:,} row(s) disagree)")
    out = table[list(HP12_COLUMNS.values())].astype(float).reset_index(drop=True)
    for column in out.columns:
        check_range(out[column].to_numpy(), rows, column, allow_nan=True)
    return out


# ----------------------------------------------------------------------------------------------
# The official .pth file


def _safe_globals() -> list[Any]:
    """Globals a NAS-Bench-201 file may reference besides plain containers: numpy scalars."""
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    dtypes = {type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")}
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *dtypes]


def load_pth(path: str | Path, *, trust_pickle: bool = False) -> dict:
    """``torch.load`` an official benchmark file, refusing code-carrying pickles unless trusted.

    The file is read with ``weights_only=True`` and numpy scalars allowed,
    which covers the official layout (dicts, lists, floats, numpy scalars).
    ``trust_pickle=True`` loads with full pickle, which can run code: only for
    files from a source you trust.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"NAS-Bench-201 benchmark file {str(path)!r} not found (expected the official "
                               "NAS-Bench-201-v1_0-e61699.pth or NAS-Bench-201-v1_1-096897.pth)")
    try:
        if trust_pickle:
            data = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_safe_globals()):
                data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower()]
        if lines:
            detail = next((ln for ln in lines if "Unsupported global" in ln or "but got" in ln), lines[0])
            raise DataError(f"{str(path)!r} references Python objects outside the NAS-Bench-201 layout "
                            f"({detail}); if you trust the file, open it with trust_pickle=True") from exc
        raise DataError(f"cannot read {str(path)!r} as a torch file ({exc}); it is truncated or corrupt") from exc
    except Exception as exc:  # zip/EOF/runtime errors from torch
        raise DataError(f"cannot read {str(path)!r} as a torch file ({type(exc).__name__}: {exc}); "
                        "it is truncated or corrupt") from exc
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} holds a {type(data).__name__}, expected the NAS-Bench-201 dict")
    missing = [k for k in ("meta_archs", "arch2infos", "evaluated_indexes") if k not in data]
    if missing:
        raise DataError(f"{str(path)!r} lacks the key(s) {', '.join(missing)} of the NAS-Bench-201 layout")
    return data


def _accuracy(result: Any, dataset: str, eval_set: str) -> float:
    """Seed-mean final-epoch accuracy on ``eval_set``, NaN if not recorded."""
    try:
        return float(result.get_metrics(dataset, eval_set, iepoch=None, is_random=False)["accuracy"])
    except (KeyError, ValueError, AssertionError, TypeError):  # dataset or eval set not recorded
        return math.nan


def _cost(result: Any, dataset: str, key: str) -> float:
    """Seed-mean cost record ('params' in millions, 'flops' in millions), NaN if not recorded."""
    try:
        value = result.get_compute_costs(dataset)[key]
    except (KeyError, ValueError, AssertionError, TypeError):
        return math.nan
    return math.nan if value is None else float(value)


def results_from_dict(data: dict, source: str) -> Results:
    """Extract our table from a loaded official benchmark dict (hp=200 'full' results)."""
    from nas_201_api import ArchResults
    from tqdm.auto import tqdm

    archs = list(data["meta_archs"])
    rows = {c: np.full(len(archs), np.nan) for c in REQUIRED_COLUMNS[2:]}
    hp12 = {c: np.full(len(archs), np.nan) for c in HP12_COLUMNS.values()}
    has_less = False
    infos = data["arch2infos"]
    try:
        evaluated = sorted({int(i) for i in data["evaluated_indexes"]})
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source!r}: 'evaluated_indexes' must be a list of ints ({exc})") from exc
    for index in tqdm(evaluated, desc="reading NAS-Bench-201 results", disable=len(evaluated) < 1000):
        if not 0 <= index < len(archs):
            raise DataError(f"{source!r}: evaluated index {index} is outside 'meta_archs' (0..{len(archs) - 1})")
        if index not in infos or not isinstance(infos[index], dict) or "full" not in infos[index]:
            raise DataError(f"{source!r}: evaluated arch {index} has no 'full' (hp=200) results in 'arch2infos'")
        try:
            result = ArchResults.create_from_state_dict(infos[index]["full"])
        except Exception as exc:
            raise DataError(f"{source!r}: arch {index}'s 'full' results are not an ArchResults state "
                            f"({type(exc).__name__}: {exc})") from exc
        for key, column in ACCURACY_COLUMNS.items():
            rows[column][index] = _accuracy(result, API_DATASETS[key[0]], EVAL_SETS[key])
        for head, api_name in _COST_DATASETS.items():
            rows[f"params_mb_{head}"][index] = _cost(result, api_name, "params")
            rows[f"flops_m_{head}"][index] = _cost(result, api_name, "flops")
        if isinstance(infos[index].get("less"), dict):  # the 12-epoch schedule (hp=12), for the *-12ep targets
            try:
                less = ArchResults.create_from_state_dict(infos[index]["less"])
            except Exception as exc:
                raise DataError(f"{source!r}: arch {index}'s 'less' (hp=12) results are not an ArchResults state "
                                f"({type(exc).__name__}: {exc})") from exc
            has_less = True
            for key, column in HP12_COLUMNS.items():
                hp12[column][index] = _accuracy(less, API_DATASETS[key[0]], EVAL_SETS[key])
    table = pd.DataFrame({"index": np.arange(len(archs)), "arch": archs, **rows})
    checked, rows_named = _check_space(table, Path(source), from_csv=False)
    less_table = None
    if has_less:
        less_table = pd.DataFrame(hp12)
        for column in less_table.columns:
            check_range(less_table[column].to_numpy(), rows_named, column, allow_nan=True)
    return Results(checked, source, "nb201-api", hp12=less_table)


def read_pth(path: str | Path, *, trust_pickle: bool = False) -> Results:
    """Read the official ``NAS-Bench-201-v1_*.pth`` file into :class:`Results`."""
    return results_from_dict(load_pth(path, trust_pickle=trust_pickle), str(path))


def open_results(data_root: str | Path | None, source: str | Path | None = None, *,
                 trust_pickle: bool = False) -> Results:
    """The results from ``source`` (a ``.pth`` or ``.csv.gz`` file) or else the table under the data root."""
    if source is not None:
        path = Path(source).expanduser()
        if path.suffix == ".pth":
            return read_pth(path, trust_pickle=trust_pickle)
        return read_table(path)
    from ...data.images import data_root as resolve_root

    return read_table(resolve_root(data_root) / TABLE_PATH)
