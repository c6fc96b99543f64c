"""Convert the official NAS-Bench-101 record file to HDF5, once, so later loads take seconds.

Reading ``nasbench_only108.tfrecord`` means checking ~1.3 million record
checksums and decoding as many JSON rows and protobufs; the HDF5 file holds
the same runs as arrays (layout in :mod:`.bench`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError
from .bench import Runs, load_h5_runs, load_tfrecord_runs, write_h5


@dataclass
class ConvertReport:
    """What a conversion did."""

    source: str
    target: str
    cells: int
    runs: int
    epochs: tuple[int, ...]
    seconds: float

    def __str__(self) -> str:
        return (f"wrote {self.target}: {self.cells:,} cells, {self.runs:,} runs at epoch budget(s) "
                f"{', '.join(map(str, self.epochs))}, from {self.source} in {self.seconds:.1f} s")


def count_runs(runs: Runs) -> int:
    return int(sum(np.sum(~np.isnan(m["final_test_accuracy"])) for m in runs.metrics.values()))


def tfrecord_to_h5(source: str | Path, target: str | Path, *, overwrite: bool = False,
                   verify: bool = True, progress: bool = True) -> ConvertReport:
    """Parse ``source`` (official ``.tfrecord``), write ``target`` (``.h5``) and read it back to check.

    Raises DataError if ``target`` exists and ``overwrite`` is false, or if
    the written file does not read back to the same arrays.
    """
    start = time.perf_counter()
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise DataError(f"{str(target)!r} already exists; pass --overwrite to replace it")
    if target.resolve() == source.resolve():
        raise DataError("the HDF5 target must differ from the source file")
    runs = load_tfrecord_runs(source, verify=verify, progress=progress)
    write_h5(runs, target)
    back = load_h5_runs(target)
    same = (np.array_equal(back.cells.hashes, runs.cells.hashes) and np.array_equal(back.params, runs.params)
            and sorted(back.metrics) == sorted(runs.metrics)
            and all(np.array_equal(back.metrics[e][k], runs.metrics[e][k], equal_nan=True)
                    for e in runs.metrics for k in runs.metrics[e]))
    if not same:
        raise DataError(f"{str(target)!r} does not read back to what was written; the disk may be full")
    return ConvertReport(str(source), str(target), len(runs.cells), count_runs(runs),
                         tuple(sorted(runs.metrics)), time.perf_counter() - start)
