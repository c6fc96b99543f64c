"""An evaluation: architectures of a space -> proxy scores in a result store -> correlation tables.

One architecture is one task: derive its seed, draw its minibatch, build and
initialise the network, score it with every requested proxy in one
:func:`zc_proxies.score` call (so proxies share passes), and return one row
per proxy, which the engine appends to the store before the next
architecture is stored. Rows already stored are skipped, so a rerun after a
kill resumes where it stopped.

Determinism: architecture ``i``'s seed is ``derive_seed(seed, "arch", i)``
(:mod:`zc_proxies.runs.seeding`); it fixes the minibatch, the weight
initialisation (``torch.manual_seed`` right before ``build``) and the proxy's
own randomness. Scores therefore do not depend on how many workers run, in
which order, or on which shard an architecture lands. Bit-identity also needs
the same device, torch build and torch thread count per worker: every worker
runs ``threads`` (1 by default) intra-op threads, whatever the number of workers.

:func:`plan_evaluation` checks every run-level setting (device, seed, sizes,
the output folder, the scheduler, the images) before :func:`run_evaluation`
opens the store, so a run that cannot work stops before anything is stored.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import data_root
from ..data.minibatch import SAMPLINGS
from ..data.sources import MinibatchSource, StandInWarning, source_for
from ..errors import ArchError, ConfigError, DataError, MissingDataError, UnknownNameError, ZCBenchError
from ..proxies import get_proxy, list_proxies
from ..report import Report, ReportContext, make_report
from ..score import score_detailed
from ..spaces import SearchSpace
from ..spaces.spec import SpaceSpec, open_space, open_spec
from .device import check_device
from .execute import RunSummary, execute
from .layout import apply_layout, resolve_layout
from .runner import Runner
from .seeding import check_seed, derive_seed, rng
from .shards import Shard, resolve_shard, shard_items, shard_path
from .store import ERROR, NAN, OK, SCORE_KEY, SEEDING, ResultStore, check_writable

STORE_NAME = "scores.jsonl"


def arch_seed(seed: int, index: int) -> int:
    """The seed of architecture ``index`` in a run seeded ``seed``."""
    return derive_seed(seed, "arch", index)


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
        NAS-Bench-Suite-Zero) or ``"balanced"`` (equal images per class).
    imports
        Modules every worker imports first, so spaces and proxies registered
        by user code (not by an installed entry point) exist in spawned workers.
    layout
        ``"nchw"`` or ``"nhwc"``: the memory layout networks and minibatches are
        scored in (:mod:`zc_proxies.runs.layout`; recorded per row, like the device).
    source
        The results file the space is opened from (``--source``: an official
        benchmark file), absolute; None: the tables under ``data_root``. It
        says which architecture each index is, not how one is scored, so it is
        recorded in the store's header info (``results_source``), not in its
        settings.
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
    source: str | None = None
    layout: str = "nchw"


@dataclass
class WorkerState:
    """What a worker loads once: the space, the minibatch images and the classifier width."""

    config: EvalConfig
    space: SearchSpace
    source: MinibatchSource
    num_classes: int


def import_modules(modules: Iterable[str]) -> None:
    """Import user modules (``--import``) that register proxies or spaces; a missing one is a ConfigError."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--import {module}: {exc}") from None


def setup_worker(config: EvalConfig, *, warn: bool = False) -> WorkerState:
    """Load the space and the minibatch images for ``config`` (once per worker process)."""
    import_modules(config.imports)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    space = open_space(config.space, config.data_root, config.source)
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
        "seeding": SEEDING,
        **source.settings(),
    }


def run_info() -> dict[str, Any]:
    """Informational header fields: versions and machine."""
    from .. import __version__

    return {"zcbench": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "processor": platform.processor() or "", "host": platform.node(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _jsonable(arch: Any) -> Any:
    try:
        json.dumps(arch)
        return arch
    except (TypeError, ValueError):
        return str(arch)


def error_message(exc: BaseException) -> str:
    """One line for a stored ``error`` row: our own messages as they are, others with their type."""
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, ZCBenchError) else f"{type(exc).__name__}: {text}"


def network_and_batch(state: WorkerState, arch: Any, seed: int) -> tuple[torch.nn.Module, tuple]:
    """``arch``'s network and minibatch as a task scores them: seeded by ``seed``, on the run's device and layout.

    The minibatch is drawn first and the weights are initialised from ``torch.manual_seed(seed)`` inside a
    forked generator, so the caller's random state is untouched.
    """
    cfg = state.config
    batch = state.source.batch(cfg.batch_size, seed, cfg.augment, cfg.sampling)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = state.space.build(arch, state.num_classes)
    model = model.to(cfg.device)
    model, inputs = apply_layout(model, batch[0], cfg.layout)
    return model, (inputs, *batch[1:])


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
        "device": cfg.device, "threads": torch.get_num_threads(), "layout": cfg.layout,
    }

    def row(name: str, status: str, value: float | None, seconds: float, message: str | None, together: int) -> dict:
        return {**base, "proxy": name, "proxy_version": get_proxy(name).spec.version, "status": status,
                "score": value, "seconds": round(seconds, 6), "n_scored_together": together, "message": message}

    start = time.perf_counter()
    model = batch = None
    if build_error is None:
        try:
            model, batch = network_and_batch(state, arch, seed)
        except Exception as exc:  # noqa: BLE001
            build_error = exc
    if build_error is not None:
        spent = time.perf_counter() - start
        return [row(n, ERROR, None, spent, f"building the network or minibatch failed: {error_message(build_error)}",
                    1) for n in names]
    t0 = time.perf_counter()
    try:
        results = score_detailed(model, batch, list(names), seed=seed, consume=True)  # built for this call only
    except Exception as exc:  # noqa: BLE001 - a batch that does not fit the model fails every proxy
        spent = time.perf_counter() - t0
        return [row(n, ERROR, None, spent, error_message(exc), len(names)) for n in names]
    rows = []
    for name in names:
        res = results[name]
        message = None if res.error is None else error_message(res.error)
        if isinstance(res.value, Mapping):  # a population proxy: its components; the score comes at report time
            rows.append({**row(name, res.status, None, res.seconds, message, len(names)),
                         "components": dict(res.value)})
            continue
        status, value = res.status, float(res.value)
        if status == OK and not math.isfinite(value):
            status = NAN
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
    """All candidates, or ``sample`` of them drawn without replacement (seed stream ``"sample"``); sorted."""
    cands = np.asarray(sorted(candidates), dtype=np.int64)
    if sample is None:
        return cands.tolist()
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ConfigError(f"--sample must be a positive integer, got {sample!r}")
    if sample > len(cands):
        raise ConfigError(f"cannot sample {sample} architectures: only {len(cands)} have the stored accuracies "
                          "needed")
    return np.sort(rng(seed, "sample").choice(cands, size=sample, replace=False)).tolist()


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


def store_path(out_dir: str | os.PathLike, shard: Shard | None) -> Path:
    """``scores.jsonl``, or ``scores.shard-III-of-NNN.jsonl`` for a shard."""
    return shard_path(Path(out_dir) / STORE_NAME, shard)


# -- the run --------------------------------------------------------------------------------------------------
def pending_tasks(store: ResultStore, indices: Iterable[int], proxies: Sequence[str],
                  seed: int) -> list[tuple[int, tuple[str, ...]]]:
    """``(index, missing proxies)`` for every architecture that still lacks a row."""
    tasks = []
    for index in indices:
        missing = tuple(p for p in proxies if (int(index), p, int(seed)) not in store)
        if missing:
            tasks.append((int(index), missing))
    return tasks


def open_store(config: EvalConfig, path: str | os.PathLike, source: MinibatchSource, num_classes: int,
               info: Mapping[str, Any] | None = None, *, wait: bool = False,
               on_wait: Callable[[str], None] | None = None) -> ResultStore:
    """Open (or create) the store at ``path`` for ``config``, holding its writer lock.

    Refuses other settings or proxy versions; ``info`` adds informational
    header fields (the CLI's space spec, the shard) to a new store.
    """
    versions = {p: get_proxy(p).spec.version for p in config.proxies}
    return ResultStore(path, store_settings(config, source, num_classes), proxy_versions=versions,
                       info={**run_info(), **dict(info or {})}, wait=wait, on_wait=on_wait)


def evaluate(config: EvalConfig, indices: Sequence[int], store: ResultStore, *, runner: Runner | None = None,
             progress: bool = True, on_rows: Callable[[list[dict]], None] | None = None) -> RunSummary:
    """Score ``indices`` with ``config.proxies`` into ``store``, skipping what it holds already.

    ``runner`` says where the tasks run (default: this process); ``on_rows``
    is called with each architecture's rows after they are stored.
    """
    for p in config.proxies:
        get_proxy(p)  # unknown names fail before any work
    tasks = pending_tasks(store, indices, config.proxies, config.seed)
    return execute(store, runner or Runner(), setup_worker, score_arch, tasks, config, total=len(indices),
                   desc=f"{config.space}-{config.dataset} {','.join(config.proxies)}", unit="arch",
                   progress=progress, on_rows=on_rows)


def parse_proxies(text: str) -> tuple[str, ...]:
    """``"fisher,snip"`` -> ``("fisher", "snip")``; ``"all"`` -> every registered proxy. Unknown names raise."""
    names = list_proxies() if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UnknownNameError("--proxy names no proxy")
    for n in names:
        get_proxy(n)
    return tuple(dict.fromkeys(names))


def load_source(dataset: str, root: Path, num_classes: int) -> tuple[MinibatchSource, list[str]]:
    """The minibatch images and a notice for each stand-in used."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StandInWarning)
        source = source_for(dataset, root, num_classes, warn=True)
    notices = []
    for w in caught:
        if issubclass(w.category, StandInWarning):
            notices.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return source, notices


def positive(value: Any, option: str) -> int:
    """``value`` if it is a positive integer, else a ConfigError naming ``option``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class EvalRequest:
    """An evaluation as asked for (the ``zcbench eval`` options), before anything is checked."""

    space: str
    proxy: str = "fisher"
    sample: int | None = None
    archs: str | None = None
    seed: int = 0
    batch_size: int = 64
    workers: int = 1
    threads: int = 1
    device: str = "cpu"
    out: str = "zcbench-eval"
    data: str | None = None
    shard: str | None = None
    scheduler: str | None = None
    bootstrap: int = 1000
    augment: bool = True
    sampling: str = "uniform"
    plot: bool = True
    imports: tuple[str, ...] = ()
    wait: bool = False
    retry_failed: bool = False
    target: str | None = None
    source: str | None = None
    layout: str = "auto"


@dataclass
class EvalPlan:
    """A checked evaluation, ready to run: everything known before the store is opened."""

    request: EvalRequest
    config: EvalConfig
    spec: SpaceSpec
    space: SearchSpace
    source: MinibatchSource
    indices: list[int]
    shard: Shard | None
    path: Path
    runner: Runner
    notices: list[str] = field(default_factory=list)

    def describe(self) -> str:
        shard = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        cfg = self.config
        source = f" (results from {cfg.source})" if cfg.source else ""
        return (f"{len(self.indices)} architectures{shard} of {self.spec.text}{source}, proxies "
                f"{', '.join(cfg.proxies)}, targets {', '.join(s for s, _ in self.spec.targets)}, "
                f"batch {cfg.batch_size}, seed {cfg.seed}, {cfg.layout.upper()}, on {self.runner.describe()} x "
                f"{cfg.threads} thread(s); "
                f"store {self.path}")


def plan_evaluation(req: EvalRequest) -> EvalPlan:
    """Check every run-level setting and resolve the architectures; nothing is written.

    Raises :class:`~zc_proxies.errors.ZCBenchError` subclasses naming the
    problem: an unknown space, proxy or device, a seed, size or count out of
    range, an output that cannot be a store, too few images for the batch,
    an unreachable scheduler.
    """
    import_modules(req.imports)
    check_seed(req.seed, "--seed")
    positive(req.batch_size, "--batch-size")
    positive(req.bootstrap, "--bootstrap")
    positive(req.threads, "--threads")
    if req.sample is not None:
        positive(req.sample, "--sample")
    if req.sampling not in SAMPLINGS:
        raise ConfigError(f"unknown minibatch sampling {req.sampling!r} (known: {', '.join(SAMPLINGS)})")
    device = check_device(req.device)
    root = data_root(req.data)
    results_source = check_source(req.source)
    space, spec = open_spec(req.space, root, req.target, source=results_source)
    proxies = parse_proxies(req.proxy)
    shard = resolve_shard(req.shard)
    path = check_writable(store_path(req.out, shard))
    if req.archs:
        indices = read_arch_list(req.archs, space)
    else:
        indices = sample_indices(candidate_indices(space, spec.target_map), req.sample, req.seed)
    indices = shard_items(indices, shard)
    num_classes = space.num_classes(spec.dataset)
    source, notices = load_source(spec.dataset, root, num_classes)
    if indices:  # one minibatch now: too few images (or per class) stops the run here, not per architecture
        try:
            source.batch(req.batch_size, arch_seed(req.seed, indices[0]), req.augment, req.sampling)
        except DataError as exc:
            raise ConfigError(f"--batch-size {req.batch_size}: {exc}") from None
    config = EvalConfig(space=spec.space, dataset=spec.dataset, proxies=proxies, batch_size=req.batch_size,
                        seed=req.seed, data_root=str(root), device=device, threads=req.threads,
                        augment=req.augment, sampling=req.sampling, imports=tuple(req.imports),
                        source=results_source, layout=resolve_layout(req.layout, space, device, proxies))
    runner = Runner(req.workers, req.scheduler)
    return EvalPlan(req, config, spec, space, source, indices, shard, path, runner, notices)


def check_source(source: str | os.PathLike | None) -> str | None:
    """``--source FILE`` as an absolute path (workers may run elsewhere), or None; a missing file is refused."""
    if source is None or str(source) == "":
        return None
    path = Path(source).expanduser()
    if not path.is_file():
        raise MissingDataError(f"--source {str(source)!r} is not a file (give an official benchmark file: "
                               "NAS-Bench-201 .pth, NAS-Bench-101 .tfrecord/.h5, an NDS .json, or a table)")
    return str(path.resolve())


def check_same_archs(space: SearchSpace, rows: Iterable[Mapping[str, Any]], recorded: str | None,
                     current: str | None, what: str) -> None:
    """Rows scored on another results file than ``space`` is opened from must name the same architectures.

    An index means the architecture at that place in the results file (for
    NAS-Bench-101, the rank of its hash among the cells present), so stored
    rows are only comparable with a space that puts the same architecture at
    each index. Nothing is checked when both are the same file (or both the
    default tables); else every stored architecture is compared, by the
    space's key, with the space's own at that index.
    """
    if (recorded or None) == (current or None):
        return
    seen: set[int] = set()
    for r in rows:
        i = int(r["index"])
        if i in seen or r.get("arch") is None:
            continue
        seen.add(i)
        try:
            same = space.arch_key(space[i]) == space.arch_key(r["arch"])
        except (ZCBenchError, IndexError, TypeError, ValueError, KeyError):
            same = False
        if not same:
            raise DataError(
                f"{what} holds scores of the architectures of {recorded or 'the default tables'}, but index {i} "
                f"is another architecture in {current or 'the default tables'}; "
                + (f"pass --source {recorded}" if recorded else "leave out --source") + " (or use another --out)")


@dataclass
class EvalOutcome:
    """What :func:`run_evaluation` did: the run's summary, its retried rows and its report."""

    plan: EvalPlan
    summary: RunSummary
    retried: int
    report: Report


def report_context(space: SearchSpace, spec: SpaceSpec, settings: Mapping[str, Any], seed: int, source_note: str,
                   n_resamples: int, extra: Sequence[str] = ()) -> ReportContext:
    """The footnote settings of a table over a store with ``settings``."""
    return ReportContext(spec=spec.text, space=spec.space, dataset=spec.dataset,
                         num_classes=settings.get("num_classes"), batch_size=settings.get("batch_size"), seed=seed,
                         augment=settings.get("augment"), data_source=str(settings.get("data_source")),
                         stand_in_for=settings.get("stand_in_for"), source_note=source_note,
                         targets=spec.targets, n_resamples=n_resamples, extra_notes=tuple(extra),
                         sampling=str(settings.get("sampling", "uniform")),
                         target_notes={split: space.target_note(split, ds) for split, ds in spec.targets})


def run_evaluation(plan: EvalPlan, *, progress: bool = True,
                   on_wait: Callable[[str], None] | None = None,
                   on_store: Callable[[ResultStore], None] | None = None) -> EvalOutcome:
    """Open the store (waiting for another writer if asked), score what is missing, write the report.

    ``on_store`` is called once the store is open (the CLI prints what it resumes).
    """
    req, cfg = plan.request, plan.config
    info: dict[str, Any] = {"spec": plan.spec.text, "targets": dict(plan.spec.targets)}
    if cfg.source:
        info["results_source"] = cfg.source
    if plan.shard:
        info["shard"] = list(plan.shard)
    with plan.runner, open_store(cfg, plan.path, plan.source, plan.source.num_classes, info,
                                 wait=req.wait, on_wait=on_wait) as store:
        check_same_archs(plan.space, store.rows(), store.info.get("results_source"), cfg.source,
                         f"result store {str(plan.path)!r}")
        retried = 0
        if req.retry_failed:
            failed = [k for k, r in ((key, store.get(key)) for index in plan.indices for key in
                      ((index, p, cfg.seed) for p in cfg.proxies)) if r is not None and r["status"] == ERROR]
            retried = store.discard(failed)
        if on_store is not None:
            on_store(store)
        summary = evaluate(cfg, plan.indices, store, runner=plan.runner, progress=progress)
        rows = store.rows()
    extra = [f"Shard {plan.shard[0]} of {plan.shard[1]} only; merge the shards with `zcbench merge`."] \
        if plan.shard else []
    covered, note = report_coverage(plan, rows)
    if note:
        extra.append(note)
    ctx = report_context(plan.space, plan.spec, store.settings, cfg.seed, plan.source.note, req.bootstrap, extra)
    stem = "correlations" + plan.path.stem[len("scores"):]
    report = make_report(plan.path.parent, stem, rows, plan.space, ctx, cfg.proxies, covered, plot=req.plot)
    return EvalOutcome(plan, summary, retried, report)


def report_coverage(plan: EvalPlan, rows: Sequence[Mapping[str, Any]]) -> tuple[list[int], str]:
    """The architectures a run's tables cover, and a footnote when they are more than the run asked for.

    The tables (``correlations.*``) cover every architecture the run asked
    for, plus every other architecture the store holds for the run's seed
    with a score of each of the run's proxies and a stored accuracy for every
    target: a rerun into an existing ``--out`` with a smaller ``--sample`` (or
    other ``--archs``) does not shrink them to the smaller set, so the files
    describe what the store holds, and every proxy is correlated on the same
    architectures. When that is more than this invocation asked for, the
    footnote says how many of them it requested (and how many stored ones
    were left out, and why).
    """
    cfg = plan.config
    wanted = {int(i) for i in plan.indices}
    by_proxy: dict[str, set[int]] = {p: set() for p in cfg.proxies}
    for r in rows:
        if int(r["seed"]) == int(cfg.seed) and r["proxy"] in by_proxy:
            by_proxy[r["proxy"]].add(int(r["index"]))
    stored = set().union(*by_proxy.values()) - wanted
    if not stored:
        return list(plan.indices), ""
    have = set(candidate_indices(plan.space, plan.spec.target_map))
    common = set.intersection(*by_proxy.values()) & have
    covered = sorted(wanted | (stored & common))
    note = (f"The tables cover every architecture stored in {plan.path.name} for seed {cfg.seed}: {len(covered)}, "
            f"of which this run requested {len(wanted)}")
    left_out = len(stored - common)
    if left_out:
        note += (f" ({left_out} more stored architectures lack a score of one of these proxies or a target's "
                 "stored accuracy and are left out)")
    return covered, note + "."


@dataclass
class StoredReport:
    """The correlation report of stored rows, checked and ready to write (see :func:`prepare_report`)."""

    space: SearchSpace
    context: ReportContext
    rows: list[dict]
    proxies: list[str]
    plot: bool

    def write(self, out_dir: str | os.PathLike) -> Report:
        return make_report(out_dir, "correlations", self.rows, self.space, self.context, self.proxies, None,
                           plot=self.plot)


def prepare_report(header: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *, data: str | None = None,
                   spec_text: str | None = None, seed: int | None = None, n_resamples: int = 1000,
                   plot: bool = True, extra: Sequence[str] = (), targets: str | Sequence[str] | None = None,
                   source: str | os.PathLike | None = None) -> StoredReport:
    """Check that an evaluation store's rows (a merge's, an import's) can be correlated; writes nothing.

    ``spec_text`` defaults to the ``--space`` the store records; ``seed`` must
    be given when the rows hold several run seeds; ``targets`` chooses the
    space's targets (default: its default ones); ``source`` opens the space
    from that results file (rows scored on another file must name the same
    architectures at each index).
    """
    positive(n_resamples, "--bootstrap")
    settings = dict(header.get("settings") or {})
    if tuple(header.get("key") or SCORE_KEY) != tuple(SCORE_KEY):
        raise DataError("these results are not proxy scores of architectures (a BlockSwap search's candidates?); "
                        "there is nothing to correlate")
    root = data_root(data)
    info = dict(header.get("info") or {})
    spec_text = spec_text or info.get("spec") or f"{settings['space']}-{settings['dataset']}"
    source = check_source(source)
    space, spec = open_spec(spec_text, root, targets, source=source)
    if spec.space != settings.get("space") or spec.dataset != settings.get("dataset"):
        raise DataError(f"--space {spec_text} means space {spec.space!r} with dataset {spec.dataset!r}, but the "
                        f"stores hold {settings.get('space')!r} with {settings.get('dataset')!r}")
    seeds = sorted({int(r["seed"]) for r in rows})
    if seed is None:
        if len(seeds) > 1:
            raise ConfigError(f"the stores hold runs of several seeds ({', '.join(map(str, seeds))}); pick one "
                              "with --seed")
        seed = seeds[0] if seeds else 0
    elif seed not in seeds:
        raise ConfigError(f"--seed {seed}: the stores hold seeds {', '.join(map(str, seeds)) or 'none'}")
    proxies = sorted({r["proxy"] for r in rows if int(r["seed"]) == seed})
    for p in proxies:
        get_proxy(p)
    check_same_archs(space, rows, info.get("results_source"), source, "the stores")
    note = ""
    if settings.get("stand_in_for"):
        classes = int(settings.get("num_classes") or space.num_classes(spec.dataset))
        note = source_for(spec.dataset, root, classes, warn=False).note
    ctx = report_context(space, spec, settings, seed, note, n_resamples, extra)
    return StoredReport(space, ctx, [dict(r) for r in rows], proxies, plot)
