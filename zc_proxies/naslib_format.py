"""NAS-Bench-Suite-Zero's score files <-> zcbench score rows.

NASLib's zero-cost benchmark (Krishnakumar et al. 2022) stores scores as JSON::

    {dataset: {arch_key: {proxy: {"score": s, "time": t}, ..., "val_accuracy": acc}}}

(``zc_nasbench201.json`` and friends), and its benchmark runner writes lists of
records ``[{"idx", "arch", proxy: {"score", "time"}, "val_accuracy"}]``. Both are
read here; the first is written. Conversions, all reversible:

* proxy names: ours ``jacob_cov`` / ``naswot`` are NASLib's ``jacov`` / ``nwot``;
  the others are the same;
* dataset names: NASLib's ``ImageNet16-120`` is our ``imagenet16-120``;
  ``cifar10`` and ``cifar100`` are shared (our ``cifar10-valid`` exports as
  NASLib's ``cifar10``, whose proxies are computed on CIFAR-10 training images);
* scores: NASLib stores ``log(synflow)`` (its predictor takes the logarithm) and
  the sentinel ``-1e8`` for a NaN or infinite score. We store synflow raw and a
  failed score as status ``nan``; export applies NASLib's transform, import
  undoes it (a stored 0 stays 0, as NASLib writes 0 for a raw 0);
* architecture keys: for NAS-Bench-201 NASLib's key is its op-index tuple
  ``"(t0, t1, t2, t3, t4, t5)"``, converted to and from the official arch
  string by :mod:`zc_proxies.spaces.nb201.naslib`. For other spaces the key is
  the stored arch as text, both ways.

Imported rows carry ``proxy_version`` ``"naslib"`` and ``seed`` -1 (NASLib does
not record its seeds), so they never mix with rows zcbench computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .errors import DataError

SENTINEL = -1e8
IMPORTED_VERSION = "naslib"
IMPORTED_SEED = -1

#: our proxy name -> NASLib's, where they differ
TO_NASLIB_PROXY = {"jacob_cov": "jacov", "naswot": "nwot"}
FROM_NASLIB_PROXY = {v: k for k, v in TO_NASLIB_PROXY.items()}

#: our dataset name -> NASLib's
TO_NASLIB_DATASET = {"cifar10": "cifar10", "cifar10-valid": "cifar10", "cifar100": "cifar100",
                     "imagenet16-120": "ImageNet16-120"}
FROM_NASLIB_DATASET = {"cifar10": "cifar10", "cifar100": "cifar100", "ImageNet16-120": "imagenet16-120"}

LOG_PROXIES = frozenset({"synflow"})

NOT_PROXIES = frozenset({"val_accuracy", "idx", "arch", "test_accuracy", "train_time"})


def arch_codec(space: str) -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """``(to_key, from_key)`` for ``space``: NASLib's key of a stored arch, and back."""
    if space == "nb201":
        from .spaces.nb201.naslib import from_naslib_key, to_naslib_key

        return to_naslib_key, from_naslib_key
    return str, (lambda key: key)


def naslib_value(proxy: str, score: float | None, status: str) -> float:
    """The number NASLib would store for a score (log for synflow, -1e8 for a failure)."""
    if status != "ok" or score is None or not math.isfinite(float(score)):
        return SENTINEL
    score = float(score)
    if proxy in LOG_PROXIES and score != 0.0:
        return math.log(score) if score > 0 else -math.log(-score)
    return score


def our_value(proxy: str, value: Any) -> tuple[float | None, str]:
    """``(score, status)`` of a NASLib number: the sentinel becomes status ``nan``; synflow is un-logged."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"NASLib score {value!r} of {proxy!r} is not a number") from None
    if not math.isfinite(value) or value == SENTINEL:
        return None, "nan"
    if proxy in LOG_PROXIES and value != 0.0:
        raw = math.exp(value)
        return (raw, "ok") if math.isfinite(raw) else (None, "nan")
    return value, "ok"


def to_naslib(rows: Iterable[Mapping[str, Any]], *,
              accuracy: Callable[[Mapping[str, Any]], float | None] | None = None) -> dict:
    """Rows (fields space, dataset, index, arch, proxy, seed, score, seconds, status) -> NASLib's layout.

    ``accuracy(row)`` gives the ``val_accuracy`` to store per architecture (omitted
    when None is returned or no function is given). Two rows for the same
    dataset, architecture and proxy (say, two seeds) are refused: filter first.
    """
    out: dict[str, dict[str, dict]] = {}
    seen: dict[tuple, Any] = {}
    for row in rows:
        space, dataset, proxy = str(row["space"]), str(row["dataset"]), str(row["proxy"])
        to_key, _ = arch_codec(space)
        naslib_dataset = TO_NASLIB_DATASET.get(dataset, dataset)
        key = to_key(row["arch"])
        naslib_proxy = TO_NASLIB_PROXY.get(proxy, proxy)
        ident = (naslib_dataset, key, naslib_proxy)
        if ident in seen:
            raise DataError(f"two rows for {proxy!r} of arch {row['arch']!r} on {dataset!r} (seeds "
                            f"{seen[ident]!r} and {row.get('seed')!r}); export one seed at a time")
        seen[ident] = row.get("seed")
        entry = out.setdefault(naslib_dataset, {}).setdefault(key, {})
        entry[naslib_proxy] = {"score": naslib_value(proxy, row.get("score"), str(row.get("status"))),
                               "time": float(row.get("seconds") or 0.0)}
        if accuracy is not None and "val_accuracy" not in entry:
            acc = accuracy(row)
            if acc is not None:
                entry["val_accuracy"] = float(acc)
    return out


def _row(space: str, dataset: str, arch: Any, index: int | None, proxy: str, cell: Any, where: str) -> dict:
    if not isinstance(cell, Mapping) or "score" not in cell:
        raise DataError(f"{where}: proxy {proxy!r} should hold {{'score': ..., 'time': ...}}, got {cell!r}")
    ours = FROM_NASLIB_PROXY.get(proxy, proxy)
    value, status = our_value(ours, cell["score"])
    return {"space": space, "dataset": dataset, "index": index, "arch": arch, "proxy": ours,
            "proxy_version": IMPORTED_VERSION, "seed": IMPORTED_SEED, "batch_size": None,
            "score": value, "seconds": float(cell.get("time") or 0.0), "status": status,
            "message": None if status == "ok" else "NASLib stored the failure sentinel -1e8"}


def from_naslib(obj: Any, space: str, *, index_of: Callable[[Any], int] | None = None,
                datasets: Sequence[str] | None = None) -> list[dict]:
    """NASLib's ``{dataset: {arch: {proxy: {score, time}}}}`` (or a record list) -> score rows.

    Parameters
    ----------
    obj
        The parsed JSON: the dict layout, or a list of benchmark-runner records
        (then ``datasets`` must name the one dataset they belong to).
    space
        Our space name; decides how architecture keys are read.
    index_of
        Maps an arch to its index in the space (rows get ``index`` None without it).
    datasets
        Only these of our dataset names (default: all in the file).
    """
    _, from_key = arch_codec(space)
    rows: list[dict] = []

    def arch_rows(dataset: str, key: Any, entry: Any, where: str) -> None:
        if not isinstance(entry, Mapping):
            raise DataError(f"{where}: expected a dict of proxies, got {type(entry).__name__}")
        arch = from_key(key if isinstance(key, str) else str(tuple(key)))
        index = index_of(arch) if index_of is not None else None
        for proxy, cell in entry.items():
            if proxy in NOT_PROXIES:
                continue
            rows.append(_row(space, dataset, arch, index, proxy, cell, f"{where}, proxy {proxy!r}"))

    if isinstance(obj, list):
        if not datasets or len(datasets) != 1:
            raise DataError("a NASLib record list does not say its dataset: name exactly one (--dataset)")
        for i, record in enumerate(obj):
            if not isinstance(record, Mapping) or "arch" not in record:
                raise DataError(f"NASLib record {i} is not an object with an 'arch' field")
            arch_rows(datasets[0], record["arch"], record, f"record {i} (arch {record['arch']!r})")
        return rows
    if not isinstance(obj, Mapping):
        raise DataError(f"a NASLib score file is a dict of datasets or a list of records, got {type(obj).__name__}")
    for naslib_dataset, archs in obj.items():
        dataset = FROM_NASLIB_DATASET.get(naslib_dataset, naslib_dataset)
        if datasets and dataset not in datasets:
            continue
        if not isinstance(archs, Mapping):
            raise DataError(f"dataset {naslib_dataset!r}: expected a dict of architectures, got {type(archs).__name__}")
        for key, entry in archs.items():
            arch_rows(dataset, key, entry, f"dataset {naslib_dataset!r}, arch {key!r}")
    return rows
