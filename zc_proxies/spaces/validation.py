"""Checks shared by the loaders of stored-result tables (NAS-Bench-201, NAS-Bench-101, NDS).

A loader reads a file into arrays; these helpers then refuse what the file must
not hold, with a :class:`~zc_proxies.errors.DataError` whose one-line message
names the file, the row and the problem:

* :func:`check_range`: a number outside its range (an accuracy of 150 or -3,
  an infinity; NaN only where the format means "no value");
* :func:`check_unique`: the same architecture (or index) listed twice;
* :func:`check_archs`: an architecture the space's own parser refuses, or one
  that is not in the canonical form the space looks architectures up by;
* :func:`spot_check_counts`: a stored parameter count that differs from the
  network the space builds, checked on a few seeded rows (:func:`spot_rows`)
  so that loading stays fast.

Each loader knows how to name its rows (a CSV line, a record's byte offset, an
index) and describes them with a :class:`Rows`; the checks themselves live here
once, so every space refuses the same problems in the same words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ArchError, DataError
from ..runs.seeding import derive_seed

#: Rows whose parameter count a load compares with the built network (:func:`spot_rows`).
SPOT_CHECK_ROWS = 4

#: The :data:`~zc_proxies.runs.seeding.STREAMS` name the spot-check sample is drawn from.
SEED_STREAM = "table-check"


@dataclass(frozen=True)
class Rows:
    """How error messages name the rows of one loaded file.

    Attributes
    ----------
    source
        The file, as messages start, e.g. ``"NAS-Bench-201 table '/data/nb201/nb201.csv.gz'"``.
    row
        Row position -> where the row is in the file, e.g. ``"line 7"`` or
        ``"record at byte offset 512"``.
    arch
        Row position -> which architecture it is, e.g. ``"index 5, arch '|...|'"``;
        None where the position says it all.
    """

    source: str
    row: Callable[[int], str]
    arch: Callable[[int], str] | None = None

    def name(self, i: int) -> str:
        """``"<source>, <row> (<arch>)"``: the start of every message about row ``i``."""
        where = f"{self.source}, {self.row(int(i))}"
        return f"{where} ({self.arch(int(i))})" if self.arch is not None else where


def _more(count: int, what: str) -> str:
    """A suffix counting the other offending rows, so one message tells how widespread a problem is."""
    return f" ({count - 1:,} more row(s) with {what} after it)" if count > 1 else ""


def _number(value: float) -> str:
    return repr(int(value)) if math.isfinite(value) and float(value).is_integer() else repr(float(value))


def check_range(values: Sequence[float] | np.ndarray, rows: Rows, what: str, *, low: float = 0.0,
                high: float = 100.0, allow_nan: bool = False) -> None:
    """Refuse a value outside ``[low, high]``, an infinity, or (unless ``allow_nan``) a NaN.

    Parameters
    ----------
    values
        One number per row (row ``i`` is named by ``rows``), e.g. a column of accuracies.
    rows
        How messages name the rows.
    what
        The quantity, as messages name it (e.g. ``"cifar10_test_acc"``).
    low, high
        The inclusive range: ``[0, 100]`` for percentages, ``[0, 1]`` for fractions.
    allow_nan
        Whether NaN is allowed: true where the format stores NaN for "no value"
        (an architecture not evaluated on that split), so that meaning is kept.

    Raises
    ------
    DataError
        Naming the first offending row, its value and the range, and how many
        other rows are out of range.
    """
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~((v >= low) & (v <= high))  # NaN and +-inf fail the comparison too
    if allow_nan:
        bad &= ~np.isnan(v)
    if not bad.any():
        return
    where = np.flatnonzero(bad)
    i = int(where[0])
    value = float(v[i])
    problem = ("is NaN (no value), which this column does not allow" if math.isnan(value)
               else "is not finite" if math.isinf(value) else f"is outside [{_number(low)}, {_number(high)}]")
    raise DataError(f"{rows.name(i)}: {what} {_number(value)} {problem}{_more(len(where), f'a bad {what}')}")


def check_unique(keys: Sequence[Hashable] | np.ndarray, rows: Rows, what: str = "arch") -> None:
    """Refuse a key (an architecture, a hash, an index) that an earlier row already has.

    A space looks architectures up by key, so a second row with the same key
    would be unreachable and its results silently ignored (or, for a table read
    as a mapping, silently overwrite the first).

    Raises
    ------
    DataError
        Naming the first repeated row, the row that listed it first, and how many repeats there are.
    """
    series = pd.Series(np.asarray(keys, dtype=object) if not isinstance(keys, np.ndarray) else keys)
    repeated = series.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    where = np.flatnonzero(repeated)
    i = int(where[0])
    first = int(np.flatnonzero((series.iloc[:i] == series.iloc[i]).to_numpy())[0])
    raise DataError(f"{rows.name(i)}: duplicate {what}, already listed at {rows.row(first)}"
                    f"{_more(len(where), f'a duplicate {what}')}")


def check_archs(positions: Iterable[int], canonical: Callable[[int], Any], stored: Callable[[int], Any],
                rows: Rows, *, suspects: int | None = None) -> None:
    """Run the space's own parser on the given rows and refuse what it refuses.

    Parsing every row of a large table would slow loading down, so a loader
    first screens the whole table cheaply (a regular expression, vectorised
    structure checks) and passes here the rows the screen flagged, plus the
    spot-check sample; the parser's message then says what is wrong.

    Parameters
    ----------
    positions
        Rows to parse.
    canonical
        Row -> the canonical architecture the space's parser makes of it
        (raises :class:`~zc_proxies.errors.ArchError` if malformed).
    stored
        Row -> the architecture as stored; it must equal its canonical form,
        since the space finds architectures by that form.
    rows
        How messages name the rows.
    suspects
        How many rows the screen flagged in all, for the message.

    Raises
    ------
    DataError
        For the first row that the parser refuses or that is not in canonical form.
    """
    more = _more(suspects or 0, "a malformed arch")
    for i in positions:
        try:
            form = canonical(int(i))
        except ArchError as exc:
            raise DataError(f"{rows.name(i)}: malformed arch ({exc}){more}") from None
        if form != stored(int(i)):
            raise DataError(f"{rows.name(i)}: arch is not in its canonical form (the space's parser makes it "
                            f"{form}), so lookups would miss it{more}")


def spot_rows(num_rows: int, size: int = SPOT_CHECK_ROWS) -> np.ndarray:
    """The rows a load spot-checks: ``size`` distinct rows of ``0..num_rows - 1``, ascending, seeded.

    The seed comes from :func:`~zc_proxies.runs.seeding.derive_seed` (stream
    :data:`SEED_STREAM`), so every load of a table checks the same rows and a
    failure is reproducible.
    """
    rng = np.random.default_rng(derive_seed(0, SEED_STREAM, 0))
    return np.sort(rng.choice(num_rows, size=min(size, num_rows), replace=False))


def spot_check_counts(positions: Iterable[int], stored: Callable[[int], float], counted: Callable[[int], int],
                      rows: Rows, what: str = "parameter count") -> None:
    """Refuse a stored count that differs from the count of the network built for that row.

    Only for sources that claim exact parity with the built network; a NaN
    stored count means "no value" and is skipped.

    Parameters
    ----------
    positions
        Rows to check (usually :func:`spot_rows`).
    stored
        Row -> the count the file stores.
    counted
        Row -> the trainable parameters of the network the space builds for
        it (a closed-form count, so no module is built).
    rows, what
        How messages name the rows and the quantity.
    """
    checked = list(positions)
    for i in checked:
        value = stored(int(i))
        if isinstance(value, float) and math.isnan(value):
            continue
        built = counted(int(i))
        if value != built:
            raise DataError(f"{rows.name(i)}: stored {what} {_number(value)} differs from the {built:,} parameters "
                            f"of the network built for it (load-time spot check of {len(checked)} seeded rows)")
