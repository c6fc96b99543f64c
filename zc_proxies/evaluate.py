"""Architecture list -> proxy scores in a store: seeds, sampling, shards, workers and resume.

One architecture is one task: derive its seed, draw its minibatch, build and
initialise the network, score it with every requested proxy in one
:func:`zc_proxies.score` call (so proxies share passes), and append one row
per proxy to the :class:`~zc_proxies.store.ScoreStore`, synced before the next
architecture is stored. Rows already stored are skipped, so a rerun after a
kill resumes where it stopped.

Determinism: the seed of architecture ``i`` is derived from ``(seed, i)``
only (:func:`arch_seed`), and it fixes both the minibatch and the weight
initialisation (``torch.manual_seed`` right before ``build``). Scores
therefore do not depend on how many workers run, in which order, or on which
shard an architecture lands. Bit-identity also needs the same device, torch
build and torch thread count per worker: every worker runs ``threads`` (1 by
default) intra-op threads, whatever the number of workers. (On CPU, ``fisher``
was found bit-identical across thread counts; proxies that reduce weight
gradients over the batch, such as ``snip``, differ in the last bits.)
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ArchError, DataError, UnknownNameError, ZCBenchError
from .minibatch_source import MinibatchSource, source_for
from .parallel import map_unordered
from .proxies import get_proxy
from .score import score_detailed
from .spaces import SearchSpace, get_space
from .store import ERROR, NAN, OK, ScoreStore


def arch_seed(seed: int, index: int) -> int:
    """The seed of architecture ``index`` in a run seeded ``seed`` (a 32-bit int, via numpy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation computes; plain data, so it travels to worker processes.

    Attributes
    ----------
    space, dataset
        Registered space name and the dataset the networks are built for.
    proxies
        Proxy names, scored together per architecture.
    batch_size, seed
        Minibatch size; the run's seed (per-architecture seeds derive from it).
    data_root
        Folder holding the benchmark tables and images.
    device
        ``"cpu"`` or a torch device string such as ``"cuda"``.
    threads
        torch intra-op threads per worker (None: leave torch's setting). The
        default, 1, keeps scores bit-identical whatever the number of workers,
        and processes scale better than threads on these small networks.
    augment
        Training augmentation (pad-crop, flip) on the minibatch, as the benchmarks train.
    sampling
        How each minibatch's images are drawn: ``"uniform"`` (the default, as
        NAS-Bench-Suite-Zero) or ``"balanced"`` (equal images per class; see
        :func:`zc_proxies.datasets.balanced_indices`).
    imports
        Modules every worker imports first, so spaces and proxies registered
        by user code (not by an installed entry point) exist in spawned workers.
    """

    space: str
    dataset: str
    proxies: tuple[str, ...]
    batch_size: int = 64
    seed: int = 0
    data_root: str = ""
    device: str = "cpu"
    threads: int | None = 1
    augment: bool = True
    sampling: str = "uniform"
    imports: tuple[str, ...] = ()


@dataclass
class WorkerState:
    """What a worker loads once: the space, the minibatch images and the classifier width."""

    config: EvalConfig
    space: SearchSpace
    source: MinibatchSource
    num_classes: int


def open_space(config: EvalConfig) -> SearchSpace:
    return get_space(config.space, config.data_root)


def setup_worker(config: EvalConfig, *, warn: bool = False) -> WorkerState:
    """Load the space and the minibatch images for ``config`` (once per worker process)."""
    for module in config.imports:
        importlib.import_module(module)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    space = open_space(config)
    num_classes = space.num_classes(config.dataset)
    source = source_for(config.dataset, config.data_root, num_classes, warn=warn)
    return WorkerState(config, space, source, num_classes)


def store_settings(config: EvalConfig, source: MinibatchSource, num_classes: int) -> dict[str, Any]:
    """The settings a store is bound to: everything that changes a score except the seed and proxy."""
    return {
        "space": config.space,
        "dataset": config.dataset,
        "num_classes": num_classes,
        "batch_size": config.batch_size,
        "augment": config.augment,
        "sampling": config.sampling,
        **source.settings(),
    }


def run_info() -> dict[str, Any]:
    """Informational header fields: versions and machine."""
    from . import __version__

    return {"zcbench": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or "", "host": platform.node(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _jsonable(arch: Any) -> Any:
    try:
        json.dumps(arch)
        return arch
    except (TypeError, ValueError):
        return str(arch)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, ZCBenchError) else f"{type(exc).__name__}: {text}"


def score_arch(state: WorkerState, item: tuple[int, tuple[str, ...]]) -> list[dict[str, Any]]:
    """Score architecture ``index`` with ``proxies``; one row per proxy, never an exception.

    The proxies are scored in one :func:`~zc_proxies.score.score_detailed`
    call, so they share passes, and one failing proxy does not take the others'
    scores with it. A :class:`~zc_proxies.errors.NonFiniteScoreError` becomes
    status ``nan``; any other error becomes status ``error`` with its message.
    ``seconds`` is each proxy's own wall time (a shared pass is charged to the
    first proxy that needs it); a failed build charges its time to every row.
    """
    index, names = item
    cfg = state.config
    seed = arch_seed(cfg.seed, index)
    try:
        arch = state.space[index]
    except Exception as exc:  # noqa: BLE001 - recorded, not raised
        arch, build_error = None, exc
    else:
        build_error = None
    base = {
        "space": cfg.space, "dataset": cfg.dataset, "index": int(index), "arch": _jsonable(arch),
        "seed": int(cfg.seed), "arch_seed": seed, "batch_size": cfg.batch_size, **state.source.settings(),
        "device": cfg.device, "threads": torch.get_num_threads(),
    }

    def row(name: str, status: str, value: float | None, seconds: float, message: str | None, together: int) -> dict:
        return {**base, "proxy": name, "proxy_version": get_proxy(name).spec.version, "status": status,
                "score": value, "seconds": round(seconds, 6), "n_scored_together": together, "message": message}

    start = time.perf_counter()
    model = batch = None
    if build_error is None:
        try:
            batch = state.source.batch(cfg.batch_size, seed, cfg.augment, cfg.sampling)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = state.space.build(arch, state.num_classes)
            model = model.to(cfg.device)
        except Exception as exc:  # noqa: BLE001
            build_error = exc
    if build_error is not None:
        spent = time.perf_counter() - start
        return [row(n, ERROR, None, spent, f"building the network or minibatch failed: {_message(build_error)}", 1)
                for n in names]
    t0 = time.perf_counter()
    try:
        results = score_detailed(model, batch, list(names), seed=seed)
    except Exception as exc:  # noqa: BLE001 - a batch that does not fit the model fails every proxy
        spent = time.perf_counter() - t0
        return [row(n, ERROR, None, spent, _message(exc), len(names)) for n in names]
    rows = []
    for name in names:
        res = results[name]
        status, value = res.status, float(res.value)
        if status == OK and not math.isfinite(value):
            status = NAN
        message = None if res.error is None else _message(res.error)
        if status == NAN and message is None:
            message = f"proxy {name!r} gave {value}"
        rows.append(row(name, status, value if status == OK else None, res.seconds, message, len(names)))
    return rows


# -- which architectures --------------------------------------------------------------------------------------


def candidate_indices(space: SearchSpace, targets: Mapping[str, str]) -> list[int]:
    """Architectures that have a stored accuracy for every target ``{split: dataset}``."""
    common: set[int] | None = None
    for split, dataset in targets.items():
        these = space.indices_with(dataset, split)
        if isinstance(these, range) and common is None:
            common = set(these)
            continue
        common = set(these) if common is None else common & set(these)
    return sorted(common if common is not None else range(len(space)))


def sample_indices(candidates: Sequence[int], sample: int | None, seed: int) -> list[int]:
    """All candidates, or ``sample`` of them drawn without replacement by a generator seeded ``seed``; sorted."""
    cands = np.asarray(sorted(candidates), dtype=np.int64)
    if sample is None:
        return cands.tolist()
    if sample < 1:
        raise ValueError(f"--sample must be positive, got {sample}")
    if sample > len(cands):
        raise DataError(f"cannot sample {sample} architectures: only {len(cands)} have the stored accuracies needed")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A3B1E]))
    return np.sort(rng.choice(cands, size=sample, replace=False)).tolist()


def read_arch_list(path: str | os.PathLike, space: SearchSpace) -> list[int]:
    """Indices from a file with one architecture per line: an integer index or the arch string.

    Blank lines and ``#`` comments are skipped; duplicates are kept once.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"architecture list {str(path)!r} does not exist")
    out: list[int] = []
    seen: set[int] = set()
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            if text.lstrip("-").isdigit():
                index = int(text)
                if not 0 <= index < len(space):
                    raise ArchError(f"index {index} is outside 0..{len(space) - 1}")
            else:
                index = int(space.index_of(text))
        except (ArchError, UnknownNameError) as exc:
            raise DataError(f"{str(path)!r} line {lineno}: {exc}") from exc
        if index not in seen:
            seen.add(index)
            out.append(index)
    if not out:
        raise DataError(f"architecture list {str(path)!r} names no architecture")
    return out


# -- shards ---------------------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < N")
    return i, n


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard a SLURM array task or a torchrun process is, or None.

    SLURM: ``SLURM_ARRAY_TASK_ID`` (minus ``SLURM_ARRAY_TASK_MIN``) of
    ``SLURM_ARRAY_TASK_COUNT``. torchrun: ``RANK`` of ``WORLD_SIZE``.
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        i = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        n = int(env["SLURM_ARRAY_TASK_COUNT"])
    elif "RANK" in env and "WORLD_SIZE" in env:
        i, n = int(env["RANK"]), int(env["WORLD_SIZE"])
    else:
        return None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard from the environment is {i} of {n}, which is not 0 <= i < N")
    return i, n


def shard_indices(indices: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    """Every N-th index starting at i (round robin keeps shards of similar cost)."""
    if shard is None:
        return list(indices)
    i, n = shard
    return list(indices)[i::n]


def store_path(out_dir: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    """``scores.jsonl``, or ``scores.shard-III-of-NNN.jsonl`` for a shard."""
    out = Path(out_dir)
    if shard is None or shard[1] == 1:
        return out / "scores.jsonl"
    return out / f"scores.shard-{shard[0]:03d}-of-{shard[1]:03d}.jsonl"


# -- the run --------------------------------------------------------------------------------------------------


@dataclass
class EvalSummary:
    """What a call of :func:`evaluate` did."""

    requested: int
    skipped: int
    scored: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)


def pending_tasks(store: ScoreStore, indices: Iterable[int], proxies: Sequence[str],
                  seed: int) -> list[tuple[int, tuple[str, ...]]]:
    """``(index, missing proxies)`` for every architecture that still lacks a row."""
    tasks = []
    for index in indices:
        missing = tuple(p for p in proxies if (int(index), p, int(seed)) not in store)
        if missing:
            tasks.append((int(index), missing))
    return tasks


def open_store(config: EvalConfig, path: str | os.PathLike, source: MinibatchSource, num_classes: int,
               info: Mapping[str, Any] | None = None) -> ScoreStore:
    """Open (or create) the store at ``path`` for ``config``; refuses other settings or proxy versions.

    ``info`` adds informational header fields (the CLI's space spec, say) to a new store.
    """
    versions = {p: get_proxy(p).spec.version for p in config.proxies}
    return ScoreStore(path, store_settings(config, source, num_classes), versions,
                      info={**run_info(), **dict(info or {})})


def evaluate(config: EvalConfig, indices: Sequence[int], store: ScoreStore, *, workers: int = 1,
             scheduler: str | None = None, progress: bool = True,
             on_rows: Callable[[list[dict]], None] | None = None) -> EvalSummary:
    """Score ``indices`` with ``config.proxies`` into ``store``, skipping what it holds already.

    Parameters
    ----------
    workers
        Processes (spawned) scoring in parallel; 1 scores in this process.
    scheduler
        A Dask scheduler address (``tcp://host:port``) to run on instead.
    progress
        Show a tqdm progress bar on stderr.
    on_rows
        Called with each architecture's rows after they are stored.
    """
    for p in config.proxies:
        get_proxy(p)  # unknown names fail before any work
    tasks = pending_tasks(store, indices, config.proxies, config.seed)
    summary = EvalSummary(requested=len(indices), skipped=len(indices) - len(tasks), scored=0, seconds=0.0)
    if not tasks:
        return summary
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(indices), initial=summary.skipped, unit="arch", dynamic_ncols=True,
                   desc=f"{config.space}-{config.dataset} {','.join(config.proxies)}"[:60])
    start = time.perf_counter()
    threads_before = torch.get_num_threads()  # an in-process run sets this process's threads; put them back
    try:
        for rows in map_unordered(setup_worker, score_arch, tasks, config, workers=workers, scheduler=scheduler):
            store.append(rows)
            summary.scored += 1
            for r in rows:
                summary.statuses[r["status"]] = summary.statuses.get(r["status"], 0) + 1
            if on_rows is not None:
                on_rows(rows)
            if bar is not None:
                bar.update(1)
                bad = summary.statuses.get(NAN, 0) + summary.statuses.get(ERROR, 0)
                if bad:
                    bar.set_postfix(nan_or_failed=bad, refresh=False)
    finally:
        torch.set_num_threads(threads_before)
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - start
    return summary

