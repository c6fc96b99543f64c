"""Stored NAS-Bench-101 results, from any of three sources, in one shape.

Sources
-------
``<data_root>/nb101/`` CSV tables (the default; see that folder's PROVENANCE.md)
    ``nb101_all.csv.gz``: every cell, its parameter count and its test
    accuracy as the mean of the three 108-epoch runs; and
    ``nb101_val_subset20k.csv.gz``: 108-epoch validation accuracy of the
    first 20,001 cells in hash order, each from ONE run (which of the three
    is not recorded). Other cells have no validation accuracy here.
The official ``nasbench_only108.tfrecord`` (or the full ``nasbench_full.tfrecord``)
    Read with :mod:`.tfrecord`; every run of every cell. Test and validation
    accuracy are the means over the repeats at the chosen epoch budget (108),
    for every cell.
An HDF5 file written by :func:`write_h5` (``zcbench convert nb101``)
    The same runs as the record file, parsed once, loading in seconds.

In every case the architectures are indexed by the rank of their hash among
the cells present, in ascending order; with the official data this is the
order of the official ``hash_iterator()`` and of our CSV ``index`` column.

Every source is checked when loaded (with the checks all spaces share, in
:mod:`..validation`): hashes unique and ascending, every cell well formed and
pruned (a vectorised screen, then the space's parser on what it flags),
accuracies fractions in [0, 1] (NaN: not stored), and, on a few seeded rows,
the parser, the official hash and ``params`` against
:func:`~.model.parameter_count`. A bad row raises
:class:`~zc_proxies.errors.DataError` naming the file, the row (CSV line,
record byte offset or cell index), its hash and the problem.

HDF5 layout (``format = "zcbench-nb101-runs"``, ``version = 1``)::

    hash          (N,)      S32     official module hash, ascending
    num_vertices  (N,)      int8    vertices of the pruned cell
    adjacency     (N, 7, 7) uint8   top-left num_vertices square is the matrix
    op_codes      (N, 7)    int8    index into attribute op_names; -1 pads
    params        (N,)      int64   trainable_parameters
    epochs/<E>/<field> (N, R) float64, NaN where a run is missing;
        fields: final_/halfway_ + train_accuracy, validation_accuracy,
        test_accuracy, training_time (accuracies are fractions)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ...data.images import data_root as resolve_data_root
from ...errors import DataError, MissingDataError
from ..validation import Rows, check_archs, check_range, check_unique, spot_check_counts, spot_rows
from .graph_hash import cell_hash
from .model import parameter_count
from .spec import INPUT, INTERIOR_OPS, MAX_EDGES, MAX_VERTICES, OUTPUT, CellSpec, canonical_cell
from .tfrecord import NB101Record, iter_nb101_records

if TYPE_CHECKING:
    import pandas as pd

#: Op names in the order of the stored op codes.
OP_NAMES: tuple[str, ...] = (INPUT, *INTERIOR_OPS, OUTPUT)
_OP_CODE = {name: i for i, name in enumerate(OP_NAMES)}
_INTERIOR_CODES = np.array([_OP_CODE[op] for op in INTERIOR_OPS])  # 1, 2, 3: one contiguous range
#: The per-run accuracy fields of :class:`Runs` (fractions in 0..1, NaN where a run is missing).
ACCURACY_FIELDS: tuple[str, ...] = tuple(f"{when}_{what}" for when in ("final", "halfway")
                                         for what in ("train_accuracy", "validation_accuracy", "test_accuracy"))
H5_FORMAT = "zcbench-nb101-runs"
H5_VERSION = 1
ALL_CSV = "nb101_all.csv.gz"
VAL_CSV = "nb101_val_subset20k.csv.gz"


@dataclass
class Cells:
    """The cells of a source, compactly: hashes (sorted) and their pruned specs."""

    hashes: np.ndarray  # (N,) '<U32', ascending
    num_vertices: np.ndarray  # (N,) int8
    adjacency: np.ndarray  # (N, 7, 7) uint8
    op_codes: np.ndarray  # (N, 7) int8, -1 pads

    def __len__(self) -> int:
        return len(self.hashes)

    def cell(self, i: int) -> CellSpec:
        v = int(self.num_vertices[i])
        matrix = tuple(tuple(int(x) for x in row[:v]) for row in self.adjacency[i, :v])
        return CellSpec(matrix, tuple(OP_NAMES[c] for c in self.op_codes[i, :v]))

    def position(self, module_hash: str) -> int | None:
        """Index of ``module_hash``, or None if absent (binary search on the sorted hashes)."""
        i = int(np.searchsorted(self.hashes, module_hash))
        return i if i < len(self.hashes) and self.hashes[i] == module_hash else None


@dataclass
class Runs:
    """Every recorded training run: ``metrics[epochs][field]`` is an (N, repeats) array."""

    cells: Cells
    params: np.ndarray  # (N,) int64
    metrics: dict[int, dict[str, np.ndarray]]
    source: str


@dataclass
class Results:
    """What the search space reads: one number per cell and quantity.

    ``test_acc`` and ``val_acc`` are fractions in 0..1, NaN where the source
    has none; ``val_note`` / ``test_note`` say what the numbers are.
    ``epoch_val`` holds our validation table's single-run accuracies at the
    other epoch budgets (``{4: ..., 12: ..., 36: ...}``; CSV source only; a
    record or HDF5 source has ``runs`` instead).
    """

    cells: Cells
    params: np.ndarray
    test_acc: np.ndarray
    val_acc: np.ndarray
    source: str
    test_note: str
    val_note: str
    runs: Runs | None = field(default=None, repr=False)
    epoch_val: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    epoch_val_note: str = ""

    def __len__(self) -> int:
        return len(self.cells)

    def at_epochs(self, split: str, epochs: int) -> tuple[np.ndarray, str]:
        """``split`` ("val"/"test") accuracy (fractions, NaN: none) at an epoch budget, and what it is.

        From the runs (mean over repeats) for a record/HDF5 source, from our
        validation table's single-run columns for the CSV source. Raises
        MissingDataError naming what is missing when the source has no such
        accuracy.
        """
        what = "validation" if split == "val" else "test"
        if self.runs is not None:
            if epochs not in self.runs.metrics:
                raise MissingDataError(
                    f"{self.source!r} holds runs of {', '.join(map(str, sorted(self.runs.metrics)))} epochs only; "
                    f"{epochs}-epoch accuracies are in the official nasbench_full.tfrecord (pass it, or an .h5 "
                    "converted from it, as the source)")
            values = self.runs.metrics[epochs][f"final_{what}_accuracy"]
            with np.errstate(invalid="ignore"), _quiet_nanmean():
                mean = np.nanmean(values, axis=1)
            counts = np.sum(~np.isnan(values), axis=1)
            reps = (f"{int(counts.min())}" if counts.min() == counts.max()
                    else f"{int(counts.min())}-{int(counts.max())}")
            return mean, f"{epochs}-epoch {what} accuracy, mean of {reps} training run(s)"
        if split == "val" and epochs in self.epoch_val:
            return self.epoch_val[epochs], self.epoch_val_note.format(epochs=epochs)
        if split == "val":
            raise MissingDataError(f"{self.source!r}: no {epochs}-epoch validation accuracy without the validation "
                                   f"table {VAL_CSV} beside it (or the official .tfrecord as the source)")
        raise MissingDataError(f"our NAS-Bench-101 tables ({ALL_CSV}, {VAL_CSV}) hold test accuracy at 108 epochs "
                               f"only; {epochs}-epoch test accuracies are in the official nasbench_full.tfrecord "
                               "(pass it, or an .h5 converted from it, as the source)")


# -- validation shared by the three sources -------------------------------------------------------------


def _edge_bits(adjacency: np.ndarray) -> np.ndarray:
    """Each (7, 7) matrix as one uint64: bit ``7 * v + w`` is set when entry ``[v][w]`` is nonzero."""
    n = len(adjacency)
    packed = np.zeros((n, 8), dtype=np.uint8)
    packed[:, :7] = np.packbits(adjacency.reshape(n, MAX_VERTICES * MAX_VERTICES), axis=1, bitorder="little")
    return packed.view("<u8")[:, 0]


def _masks(wanted: Callable[[int, int, int], bool]) -> np.ndarray:
    """For each vertex count 0..7, the uint64 of the matrix entries ``[v][w]`` for which ``wanted(nv, v, w)``."""
    return np.array([sum(1 << (MAX_VERTICES * v + w) for v in range(MAX_VERTICES) for w in range(MAX_VERTICES)
                         if wanted(nv, v, w)) for nv in range(MAX_VERTICES + 1)], dtype=np.uint64)


#: Per vertex count, the entries a stored cell may set: strictly above the diagonal, inside the square.
_UPPER = _masks(lambda nv, v, w: v < w < nv)


def _on_path(edges: np.ndarray, num_vertices: np.ndarray) -> np.ndarray:
    """Bitmask (uint8) per cell of the vertices on an input -> output path (``edges`` from :func:`_edge_bits`)."""
    successors = [((edges >> np.uint64(MAX_VERTICES * v)) & np.uint64(0x7F)).astype(np.uint8)
                  for v in range(MAX_VERTICES)]
    from_input = np.ones(len(edges), dtype=np.uint8)  # vertex 0
    for v in range(MAX_VERTICES):  # edges only go up, so one pass in vertex order reaches everything
        from_input |= successors[v] * ((from_input >> v) & 1)
    to_output = np.left_shift(1, num_vertices - 1).astype(np.uint8)
    for v in range(MAX_VERTICES - 1, -1, -1):
        to_output |= ((successors[v] & to_output) != 0).view(np.uint8) << v
    return from_input & to_output


def _malformed_cells(cells: Cells) -> np.ndarray:
    """Positions of the cells the space's parser would refuse or prune: a vectorised screen of every cell.

    Parsing 423,624 cells one by one takes seconds, so this flags, for all of
    them at once (each matrix as a 49-bit mask), what
    :func:`~.spec.canonical_cell` refuses in a stored cell: a matrix entry
    other than 0/1, an entry on or below the diagonal (or outside the
    ``num_vertices`` square), more than :data:`~.spec.MAX_EDGES` edges,
    first/last ops other than input/output, an interior op outside
    :data:`~.spec.INTERIOR_OPS`, and a vertex on no input -> output path
    (stored cells are pruned). ``num_vertices`` must already be in 2..7.
    :func:`~..validation.check_archs` then runs the parser on the flagged
    cells, for the message.
    """
    nv = cells.num_vertices.astype(np.intp)
    n = len(nv)
    adjacency = cells.adjacency
    bad = (adjacency > 1).any(axis=(1, 2)) if adjacency.max(initial=0) > 1 else np.zeros(n, dtype=bool)
    edges = _edge_bits(adjacency)
    bad |= (edges & ~_UPPER[nv]) != 0
    bad |= np.bitwise_count(edges) > MAX_EDGES
    codes = cells.op_codes
    bad |= codes[:, 0] != _OP_CODE[INPUT]
    bad |= codes[np.arange(n), nv - 1] != _OP_CODE[OUTPUT]
    inner = codes[:, 1:MAX_VERTICES - 1].view(np.uint8) - np.uint8(_INTERIOR_CODES.min())  # -1 pads wrap round
    interior = np.arange(1, MAX_VERTICES - 1) < (nv - 1)[:, None]
    bad |= (interior & (inner > np.uint8(_INTERIOR_CODES.max() - _INTERIOR_CODES.min()))).any(axis=1)
    bad |= _on_path(edges, nv) != ((1 << nv) - 1).astype(np.uint8)
    return np.flatnonzero(bad)


def _check_hash_order(hashes: np.ndarray, rows: Rows) -> None:
    """Hashes must be unique and ascending: a cell's index is the rank of its hash."""
    if len(hashes) < 2 or np.all(hashes[1:] > hashes[:-1]):
        return
    check_unique(hashes, rows, what="hash")
    i = int(np.flatnonzero(hashes[1:] <= hashes[:-1])[0]) + 1
    raise DataError(f"{rows.name(i)}: hash is out of order: hashes must ascend (a cell's index is the rank of "
                    f"its hash), but the row before holds {hashes[i - 1]}")


def _check_cells(cells: Cells, params: np.ndarray, rows: Rows) -> None:
    """Check the cells of a source: hash order, well-formed pruned cells, and a spot check.

    ``num_vertices`` must already be checked (2..7). The spot check runs the
    full parser on a few seeded rows and compares their official hash and
    stored ``params`` with the cell's own (the package claims exact parity:
    :func:`~.model.parameter_count` equals the official
    ``trainable_parameters`` on every cell).
    """
    _check_hash_order(cells.hashes, rows)

    def canonical(i: int) -> CellSpec:
        return canonical_cell(cells.cell(i).to_json())  # the dict form runs every check of make_cell

    suspects = _malformed_cells(cells)
    check_archs(suspects, canonical, cells.cell, rows, suspects=len(suspects))
    sample = spot_rows(len(cells))
    check_archs(sample, canonical, cells.cell, rows)
    for i in sample:
        own = cell_hash(cells.cell(int(i)))
        if own != cells.hashes[i]:
            raise DataError(f"{rows.name(i)}: the stored hash is not the cell's own ({own}); the row is corrupt "
                            f"(load-time spot check of {len(sample)} seeded rows)")
    spot_check_counts(sample, lambda i: int(params[i]), lambda i: parameter_count(cells.cell(i)), rows)


def _check_runs(metrics: dict[int, dict[str, np.ndarray]], rows_of: Callable[[int, np.ndarray], Rows]) -> None:
    """Every run's accuracies are fractions in [0, 1] (NaN marks a missing run and is kept).

    ``rows_of(epochs, values)`` names the flattened ``(cell, repeat)`` entries of one field.
    """
    for epochs, fields in metrics.items():
        for name in ACCURACY_FIELDS:
            if name in fields:
                values = np.asarray(fields[name], dtype=np.float64)
                check_range(values.ravel(), rows_of(epochs, values), name, low=0, high=1, allow_nan=True)


# -- CSV tables --------------------------------------------------------------------------------------------


def _parse_specs(num_vertices: np.ndarray, matrices: np.ndarray, ops: np.ndarray,
                 rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """Flat 0/1 matrix strings and comma-joined op lists -> padded adjacency and op-code arrays.

    ``num_vertices`` must already be in 2..7; ``rows`` names a bad row in the message.
    """
    import pandas as pd

    n = len(num_vertices)
    adjacency = np.zeros((n, MAX_VERTICES, MAX_VERTICES), dtype=np.uint8)
    op_codes = np.full((n, MAX_VERTICES), -1, dtype=np.int8)
    for v in np.unique(num_vertices):
        v = int(v)
        where = np.flatnonzero(num_vertices == v)
        texts = [str(t) for t in matrices[where]]
        if any(len(t) != v * v for t in texts):
            k = next(k for k, t in enumerate(texts) if len(t) != v * v)
            raise DataError(f"{rows.name(where[k])}: matrix {texts[k]!r} has {len(texts[k])} digits, "
                            f"expected {v * v} for {v} vertices")
        flat = np.frombuffer("".join(texts).encode("ascii", errors="replace"), dtype=np.uint8) - ord("0")
        not_binary = (flat.reshape(-1, v * v) > 1).any(axis=1)
        if not_binary.any():
            k = int(np.flatnonzero(not_binary)[0])
            raise DataError(f"{rows.name(where[k])}: matrix {texts[k]!r} holds a character other than 0/1")
        adjacency[where, :v, :v] = flat.reshape(-1, v, v)
    inverse, uniques = pd.factorize(ops)  # a few hundred distinct op lists
    for k, text in enumerate(uniques):
        names = str(text).split(",")
        where = np.flatnonzero(inverse == k)
        try:
            codes = [_OP_CODE[name] for name in names]
        except KeyError as exc:
            raise DataError(f"{rows.name(where[0])}: unknown op {exc.args[0]!r} in {text!r}") from None
        wrong = np.flatnonzero(num_vertices[where] != len(codes))
        if wrong.size:
            raise DataError(f"{rows.name(where[wrong[0]])}: {len(codes)} ops {text!r} for "
                            f"{int(num_vertices[where[wrong[0]]])} vertices")
        op_codes[where, :len(codes)] = codes
    return adjacency, op_codes


def _check_val_table(sub: pd.DataFrame, val_path: Path, hashes: np.ndarray, path: Path) -> np.ndarray:
    """Check the validation subset against the main table; returns its indexes into the main table."""
    n = len(hashes)
    idx = sub["index"].to_numpy()
    sub_hashes = sub["hash"].to_numpy(dtype="<U32")
    rows = Rows(f"NAS-Bench-101 validation table {str(val_path)!r}", lambda k: f"line {k + 2}",
                lambda k: f"index {idx[k]}, hash {sub_hashes[k]}")
    check_range(idx, rows, "index", low=0, high=n - 1)
    check_unique(idx, rows, what="index")
    idx = idx.astype(np.intp)
    mismatch = np.flatnonzero(hashes[idx] != sub_hashes)
    if mismatch.size:
        k = int(mismatch[0])
        raise DataError(f"{rows.name(k)}: {str(path)!r} gives index {idx[k]} the hash {hashes[idx[k]]}; "
                        f"the two tables disagree ({mismatch.size:,} row(s) in all)")
    check_range(sub["val_acc_108"].to_numpy(dtype=np.float64), rows, "val_acc_108", low=0, high=1, allow_nan=True)
    return idx


def load_csv(path: str | Path, val_path: str | Path | None = None) -> Results:
    """Our tables: ``nb101_all.csv.gz`` plus, if present, ``nb101_val_subset20k.csv.gz``.

    Raises
    ------
    MissingDataError
        If ``path`` does not exist.
    DataError
        If a table cannot be read or lacks columns, or a row is bad: an index
        out of place, a duplicate or unordered hash, a malformed or unpruned
        cell, an accuracy outside [0, 1] (NaN means "none stored"), or (on a
        few seeded rows) a hash or ``params`` that is not the cell's own. The
        message names the file, the line, the hash and the problem.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"NAS-Bench-101 table {str(path)!r} does not exist (see data/README.md)")
    try:
        table = pd.read_csv(path, dtype={"hash": str, "matrix": str, "ops": str})
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error
        raise DataError(f"cannot read {str(path)!r} as CSV: {exc}") from exc
    need = ["index", "hash", "num_vertices", "matrix", "ops", "params", "test_acc_mean"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DataError(f"{str(path)!r} lacks the column(s) {missing}; expected {need}")
    n = len(table)
    hashes = table["hash"].to_numpy(dtype="<U32")
    rows = Rows(f"NAS-Bench-101 table {str(path)!r}", lambda i: f"line {i + 2}", lambda i: f"hash {hashes[i]}")
    index = table["index"].to_numpy()
    if not np.array_equal(index, np.arange(n)):
        i = int(np.flatnonzero(index != np.arange(n))[0])
        raise DataError(f"{rows.name(i)}: index {index[i]} where {i} was expected "
                        f"(the index column must run 0..{n - 1} in order)")
    check_range(table["num_vertices"].to_numpy(), rows, "num_vertices", low=2, high=MAX_VERTICES)
    nv = table["num_vertices"].to_numpy().astype(np.int8)
    adjacency, op_codes = _parse_specs(nv, table["matrix"].to_numpy(dtype=object),
                                       table["ops"].to_numpy(dtype=object), rows)
    cells = Cells(hashes, nv, adjacency, op_codes)
    params = table["params"].to_numpy(dtype=np.int64)
    _check_cells(cells, params, rows)
    test = table["test_acc_mean"].to_numpy(dtype=np.float64)
    check_range(test, rows, "test_acc_mean", low=0, high=1, allow_nan=True)
    val = np.full(n, np.nan)
    val_note = "none stored (no validation table found)"
    epoch_val: dict[int, np.ndarray] = {}
    epoch_note = ""
    val_path = Path(val_path) if val_path is not None else path.with_name(VAL_CSV)
    if val_path.is_file():
        sub = pd.read_csv(val_path, dtype={"hash": str})
        for column in ("index", "hash", "val_acc_108"):
            if column not in sub.columns:
                raise DataError(f"{str(val_path)!r} lacks the column {column!r}")
        idx = _check_val_table(sub, val_path, hashes, path)
        val[idx] = sub["val_acc_108"].to_numpy(dtype=np.float64)
        val_note = (f"108-epoch validation accuracy of one training run (not a mean of the 3), "
                    f"stored for {len(idx):,} of {n:,} cells ({val_path.name})")
        sub_rows = Rows(f"NAS-Bench-101 validation table {str(val_path)!r}", lambda k: f"line {k + 2}",
                        lambda k: f"index {idx[k]}")
        for epochs in (4, 12, 36):  # the other budgets' single-run validation accuracies, where the table has them
            column = f"val_acc_{epochs}"
            if column in sub.columns:
                values = sub[column].to_numpy(dtype=np.float64)
                check_range(values, sub_rows, column, low=0, high=1, allow_nan=True)
                epoch_val[epochs] = np.full(n, np.nan)
                epoch_val[epochs][idx] = values
        epoch_note = (f"{{epochs}}-epoch validation accuracy of one training run (not a mean of the 3), "
                      f"stored for {len(idx):,} of {n:,} cells ({val_path.name})")
    return Results(cells, params, test, val, str(path),
                   test_note="108-epoch test accuracy, mean of the 3 training runs", val_note=val_note,
                   epoch_val=epoch_val, epoch_val_note=epoch_note)


# -- official records -----------------------------------------------------------------------------------


_MEASURES = ("train_accuracy", "validation_accuracy", "test_accuracy", "training_time")


def runs_from_records(records: Iterable[NB101Record], source: str) -> Runs:
    """Collect official rows into :class:`Runs` (cells sorted by hash), and check them.

    Streams: of each record only its numbers are kept (about 1.3 million rows
    for the official 108-epoch file), and of each cell its first record's spec.
    The records of one hash must all give the same cell (else the hash names
    two architectures), every accuracy must be a fraction in [0, 1], and the
    cells must pass :func:`_check_cells`; errors name the record's byte offset.
    """
    nan = float("nan")
    first: dict[str, tuple[str, str, int, int]] = {}  # hash -> (adjacency, ops, params, offset)
    per: dict[tuple[str, int], list[tuple[float, ...]]] = {}
    for rec in records:
        seen = first.setdefault(rec.module_hash, (rec.raw_adjacency, rec.raw_operations,
                                                  rec.metrics.trainable_parameters, rec.offset))
        if (rec.raw_adjacency, rec.raw_operations) != seen[:2]:
            raise DataError(f"NAS-Bench-101 records {source!r}, record at byte offset {rec.offset} (hash "
                            f"{rec.module_hash}): duplicate hash for another cell ({rec.raw_adjacency}, "
                            f"{rec.raw_operations}) than the record at byte offset {seen[3]} gives it")
        half = rec.halfway
        values = tuple(getattr(rec.final, m) for m in _MEASURES) + (
            tuple(getattr(half, m) for m in _MEASURES) if half is not None else (nan,) * len(_MEASURES))
        per.setdefault((rec.module_hash, rec.epochs), []).append((*values, float(rec.offset)))
    if not first:
        raise DataError(f"{source!r} holds no records")
    hashes = np.array(sorted(first), dtype="<U32")
    n = len(hashes)
    nv = np.zeros(n, dtype=np.int8)
    adjacency = np.zeros((n, MAX_VERTICES, MAX_VERTICES), dtype=np.uint8)
    op_codes = np.full((n, MAX_VERTICES), -1, dtype=np.int8)
    params = np.zeros(n, dtype=np.int64)
    for i, h in enumerate(hashes.tolist()):
        raw_adjacency, raw_ops, params[i], offset = first[h]
        where = f"{source}: record at byte offset {offset} (hash {h})"
        ops = raw_ops.split(",")
        v = len(ops)
        if not 2 <= v <= MAX_VERTICES or len(raw_adjacency) != v * v or set(raw_adjacency) - {"0", "1"}:
            raise DataError(f"{where}: raw_adjacency {raw_adjacency!r} is not a 0/1 square for {v} ops")
        try:
            op_codes[i, :v] = [_OP_CODE[o] for o in ops]
        except KeyError as exc:
            raise DataError(f"{where}: unknown op {exc.args[0]!r}") from None
        nv[i] = v
        adjacency[i, :v, :v] = np.frombuffer(raw_adjacency.encode("ascii"), dtype=np.uint8).reshape(v, v) - 48
    position = {h: i for i, h in enumerate(hashes.tolist())}
    epochs = sorted({e for _, e in per})
    repeats = max(len(v) for v in per.values())
    names = [f"{when}_{what}" for when in ("final", "halfway") for what in _MEASURES]
    metrics = {e: {f: np.full((n, repeats), np.nan) for f in names} for e in epochs}
    offsets = {e: np.full((n, repeats), np.nan) for e in epochs}  # each run's record, for messages
    for (h, e), runs in per.items():
        i = position[h]
        block = np.array(runs, dtype=np.float64)  # (repeats here, 8 + offset)
        for k, name in enumerate(names):
            metrics[e][name][i, :len(runs)] = block[:, k]
        offsets[e][i, :len(runs)] = block[:, len(names)]
    label = f"NAS-Bench-101 records {source!r}"
    cells = Cells(hashes, nv, adjacency, op_codes)
    _check_cells(cells, params, Rows(label, lambda i: f"record at byte offset {first[hashes[i]][3]}",
                                     lambda i: f"hash {hashes[i]}"))

    def run_rows(e: int, values: np.ndarray) -> Rows:
        return Rows(label, lambda k: f"record at byte offset {int(offsets[e].flat[k])}",
                    lambda k: f"hash {hashes[k // values.shape[1]]}, {e} epochs")

    _check_runs(metrics, run_rows)
    return Runs(cells, params, metrics, source)


def load_tfrecord_runs(path: str | Path, *, verify: bool = True, progress: bool = True) -> Runs:
    """Parse an official NAS-Bench-101 ``.tfrecord`` file into :class:`Runs`."""
    path = Path(path)
    records = iter_nb101_records(path, verify=verify)
    if progress:
        records = tqdm(records, desc=f"reading {path.name}", unit=" records", mininterval=1.0)
    return runs_from_records(records, str(path))


def results_from_runs(runs: Runs, epochs: int = 108) -> Results:
    """Means over repeats of the final test and validation accuracy at ``epochs``."""
    if epochs not in runs.metrics:
        raise DataError(f"{runs.source!r} has no runs of {epochs} epochs (has: {sorted(runs.metrics)})")
    m = runs.metrics[epochs]
    with np.errstate(invalid="ignore"), _quiet_nanmean():
        test = np.nanmean(m["final_test_accuracy"], axis=1)
        val = np.nanmean(m["final_validation_accuracy"], axis=1)
    counts = np.sum(~np.isnan(m["final_test_accuracy"]), axis=1)
    reps = f"{int(counts.min())}" if counts.min() == counts.max() else f"{int(counts.min())}-{int(counts.max())}"
    return Results(runs.cells, runs.params, test, val, runs.source,
                   test_note=f"{epochs}-epoch test accuracy, mean of {reps} training run(s)",
                   val_note=f"{epochs}-epoch validation accuracy, mean of {reps} training run(s)", runs=runs)


class _quiet_nanmean:
    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


# -- HDF5 -------------------------------------------------------------------------------------------------


def write_h5(runs: Runs, path: str | Path) -> Path:
    """Write :class:`Runs` to HDF5 (layout in the module docstring); written to a temp name, then renamed."""
    import h5py

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = H5_FORMAT
        f.attrs["version"] = H5_VERSION
        f.attrs["source"] = os.path.basename(runs.source)
        f.attrs["op_names"] = np.array(OP_NAMES, dtype="S")
        c = runs.cells
        f.create_dataset("hash", data=c.hashes.astype("S32"))
        f.create_dataset("num_vertices", data=c.num_vertices)
        f.create_dataset("adjacency", data=c.adjacency, compression="gzip")
        f.create_dataset("op_codes", data=c.op_codes, compression="gzip")
        f.create_dataset("params", data=runs.params)
        for e, fields in runs.metrics.items():
            group = f.create_group(f"epochs/{e}")
            for name, values in fields.items():
                group.create_dataset(name, data=values, compression="gzip")
    os.replace(tmp, path)
    return path


def load_h5_runs(path: str | Path) -> Runs:
    """Read :class:`Runs` back from a file written by :func:`write_h5`."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"NAS-Bench-101 HDF5 file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{str(path)!r} is not a readable HDF5 file ({exc})") from None
    with f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != H5_FORMAT:
            raise DataError(f"{str(path)!r} is not a zcbench NAS-Bench-101 file (format {fmt!r}); "
                            "make one with `zcbench convert nb101 --from X.tfrecord --to X.h5`")
        if int(f.attrs.get("version", -1)) > H5_VERSION:
            raise DataError(f"{str(path)!r} has layout version {f.attrs['version']}, newer than this "
                            f"zcbench reads ({H5_VERSION}); upgrade zcbench")
        names = tuple(x.decode() if isinstance(x, bytes) else str(x) for x in f.attrs["op_names"])
        if names != OP_NAMES:
            raise DataError(f"{str(path)!r} codes ops as {names}, expected {OP_NAMES}")
        try:
            cells = Cells(f["hash"][()].astype("<U32"), f["num_vertices"][()], f["adjacency"][()],
                          f["op_codes"][()])
            params = f["params"][()].astype(np.int64)
            metrics = {int(e): {k: g[k][()] for k in g} for e, g in f["epochs"].items()}
        except KeyError as exc:
            raise DataError(f"{str(path)!r} lacks the dataset {exc}") from None
    _check_h5_shapes(cells, params, metrics, path)
    hashes = cells.hashes
    label = f"NAS-Bench-101 file {str(path)!r}"
    rows = Rows(label, lambda i: f"cell {i}", lambda i: f"hash {hashes[i]}")
    check_range(cells.num_vertices, rows, "num_vertices", low=2, high=MAX_VERTICES)
    _check_cells(cells, params, rows)
    _check_runs(metrics, lambda e, values: Rows(
        label, lambda k: f"cell {k // values.shape[1]}, {e} epochs, run {k % values.shape[1] + 1}",
        lambda k: f"hash {hashes[k // values.shape[1]]}"))
    return Runs(cells, params, metrics, str(path))


def _check_h5_shapes(cells: Cells, params: np.ndarray, metrics: dict[int, dict[str, np.ndarray]],
                     path: Path) -> None:
    """Every dataset of an HDF5 file has one row per cell, in the layout :func:`write_h5` writes."""
    n = len(cells.hashes)
    fixed = {"num_vertices": (cells.num_vertices, (n,)), "params": (params, (n,)),
             "adjacency": (cells.adjacency, (n, MAX_VERTICES, MAX_VERTICES)),
             "op_codes": (cells.op_codes, (n, MAX_VERTICES))}
    for name, (array, shape) in fixed.items():
        if array.shape != shape:
            raise DataError(f"{str(path)!r}: dataset {name!r} has shape {array.shape}, expected {shape}")
    for e, fields in metrics.items():
        for name, array in fields.items():
            if array.ndim != 2 or len(array) != n:
                raise DataError(f"{str(path)!r}: dataset 'epochs/{e}/{name}' has shape {array.shape}, "
                                f"expected ({n}, runs)")


# -- choosing a source ------------------------------------------------------------------------------------


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=2)
def _load_cached(kind: str, stamp: tuple[str, int, int], epochs: int) -> Results:
    path = Path(stamp[0])
    if kind == "csv":
        return load_csv(path)
    if kind == "h5":
        return results_from_runs(load_h5_runs(path), epochs)
    return results_from_runs(load_tfrecord_runs(path), epochs)


def open_results(data_root: str | Path | None = None, source: str | Path | None = None,
                 epochs: int = 108) -> Results:
    """Stored results from ``source`` (``.tfrecord``, ``.h5``/``.hdf5`` or ``.csv.gz``) or the data root.

    Loads are cached per file (path, modification time, size), so opening the
    space again in one process is cheap. The arrays must not be modified.
    """
    if source is None:
        path = resolve_data_root(data_root) / "nb101" / ALL_CSV
        if not path.is_file():
            raise MissingDataError(f"no NAS-Bench-101 table at {str(path)!r}; put the tables there "
                                   "(data/README.md) or pass source=<nasbench_only108.tfrecord or .h5>")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise MissingDataError(f"NAS-Bench-101 source {str(path)!r} does not exist")
    name = path.name.lower()
    if name.endswith((".h5", ".hdf5")):
        kind = "h5"
    elif name.endswith((".csv", ".csv.gz")):
        kind = "csv"
    elif name.endswith((".tfrecord", ".tfrecords")) or ".tfrecord" in name:
        kind = "tfrecord"
    else:
        raise DataError(f"cannot tell the format of {str(path)!r}: expected .tfrecord, .h5/.hdf5 or .csv.gz")
    return _load_cached(kind, _stamp(path), epochs)
