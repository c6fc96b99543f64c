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
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...datasets import data_root as resolve_data_root
from ...errors import DataError, MissingDataError
from .spec import INPUT, INTERIOR_OPS, MAX_VERTICES, OUTPUT, CellSpec
from .tfrecord import NB101Record, iter_nb101_records

#: Op names in the order of the stored op codes.
OP_NAMES: tuple[str, ...] = (INPUT, *INTERIOR_OPS, OUTPUT)
_OP_CODE = {name: i for i, name in enumerate(OP_NAMES)}
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
    """

    cells: Cells
    params: np.ndarray
    test_acc: np.ndarray
    val_acc: np.ndarray
    source: str
    test_note: str
    val_note: str
    runs: Runs | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.cells)


# -- CSV tables --------------------------------------------------------------------------------------------


def _parse_specs(num_vertices: np.ndarray, matrices: np.ndarray, ops: np.ndarray,
                 where: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat 0/1 matrix strings and comma-joined op lists -> padded adjacency and op-code arrays."""
    import pandas as pd

    n = len(num_vertices)
    adjacency = np.zeros((n, MAX_VERTICES, MAX_VERTICES), dtype=np.uint8)
    op_codes = np.full((n, MAX_VERTICES), -1, dtype=np.int8)
    for v in np.unique(num_vertices):
        v = int(v)
        if not 2 <= v <= MAX_VERTICES:
            raise DataError(f"{where}: num_vertices {v} is outside 2..{MAX_VERTICES}")
        rows = np.flatnonzero(num_vertices == v)
        texts = matrices[rows]
        if any(len(t) != v * v for t in texts):
            bad = next(int(rows[k]) for k, t in enumerate(texts) if len(t) != v * v)
            raise DataError(f"{where}: row {bad} has a matrix of {len(matrices[bad])} digits for {v} vertices")
        flat = np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8) - ord("0")
        if flat.size and flat.max() > 1:
            raise DataError(f"{where}: a matrix with {v} vertices holds a character other than 0/1")
        adjacency[rows, :v, :v] = flat.reshape(-1, v, v)
    inverse, uniques = pd.factorize(ops)  # a few hundred distinct op lists
    for k, text in enumerate(uniques):
        names = str(text).split(",")
        try:
            codes = [_OP_CODE[name] for name in names]
        except KeyError as exc:
            raise DataError(f"{where}: unknown op {exc.args[0]!r} in {text!r}") from None
        rows = np.flatnonzero(inverse == k)
        if np.any(num_vertices[rows] != len(codes)):
            raise DataError(f"{where}: ops {text!r} do not match the row's num_vertices")
        op_codes[rows, :len(codes)] = codes
    return adjacency, op_codes


def load_csv(path: str | Path, val_path: str | Path | None = None) -> Results:
    """Our tables: ``nb101_all.csv.gz`` plus, if present, ``nb101_val_subset20k.csv.gz``."""
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
    if not np.array_equal(table["index"].to_numpy(), np.arange(n)):
        raise DataError(f"{str(path)!r}: the index column must run 0..{n - 1} in order")
    hashes = table["hash"].to_numpy(dtype="<U32")
    if n > 1 and not np.all(hashes[1:] > hashes[:-1]):
        raise DataError(f"{str(path)!r}: hashes must be unique and ascending (index = rank of the hash)")
    nv = table["num_vertices"].to_numpy().astype(np.int8)
    adjacency, op_codes = _parse_specs(nv, table["matrix"].to_numpy(dtype=object),
                                       table["ops"].to_numpy(dtype=object), str(path))
    cells = Cells(hashes, nv, adjacency, op_codes)
    test = table["test_acc_mean"].to_numpy(dtype=np.float64)
    val = np.full(n, np.nan)
    val_note = "none stored (no validation table found)"
    val_path = Path(val_path) if val_path is not None else path.with_name(VAL_CSV)
    if val_path.is_file():
        sub = pd.read_csv(val_path, dtype={"hash": str})
        for column in ("index", "hash", "val_acc_108"):
            if column not in sub.columns:
                raise DataError(f"{str(val_path)!r} lacks the column {column!r}")
        idx = sub["index"].to_numpy()
        if idx.min() < 0 or idx.max() >= n:
            raise DataError(f"{str(val_path)!r}: index outside 0..{n - 1}")
        if not np.array_equal(hashes[idx], sub["hash"].to_numpy(dtype="<U32")):
            raise DataError(f"{str(val_path)!r} and {str(path)!r} disagree on the hash of some index")
        val[idx] = sub["val_acc_108"].to_numpy(dtype=np.float64)
        val_note = (f"108-epoch validation accuracy of one training run (not a mean of the 3), "
                    f"stored for {len(idx):,} of {n:,} cells ({val_path.name})")
    return Results(cells, table["params"].to_numpy(dtype=np.int64), test, val, str(path),
                   test_note="108-epoch test accuracy, mean of the 3 training runs", val_note=val_note)


# -- official records -----------------------------------------------------------------------------------


_MEASURES = ("train_accuracy", "validation_accuracy", "test_accuracy", "training_time")


def runs_from_records(records: Iterable[NB101Record], source: str) -> Runs:
    """Collect official rows into :class:`Runs` (cells sorted by hash).

    Streams: of each record only its numbers are kept (about 1.3 million rows
    for the official 108-epoch file), and of each cell its first record's spec.
    """
    nan = float("nan")
    first: dict[str, tuple[str, str, int, int]] = {}  # hash -> (adjacency, ops, params, offset)
    per: dict[tuple[str, int], list[tuple[float, ...]]] = {}
    for rec in records:
        if rec.module_hash not in first:
            first[rec.module_hash] = (rec.raw_adjacency, rec.raw_operations, rec.metrics.trainable_parameters,
                                      rec.offset)
        half = rec.halfway
        values = tuple(getattr(rec.final, m) for m in _MEASURES) + (
            tuple(getattr(half, m) for m in _MEASURES) if half is not None else (nan,) * len(_MEASURES))
        per.setdefault((rec.module_hash, rec.epochs), []).append(values)
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
    for (h, e), runs in per.items():
        i = position[h]
        block = np.array(runs, dtype=np.float64)  # (repeats here, 8)
        for k, name in enumerate(names):
            metrics[e][name][i, :len(runs)] = block[:, k]
    return Runs(Cells(hashes, nv, adjacency, op_codes), params, metrics, source)


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
    return Runs(cells, params, metrics, str(path))


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
