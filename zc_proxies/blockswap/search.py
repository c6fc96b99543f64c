"""BlockSwap's search: random mixed-block networks under a parameter budget, ranked by Fisher potential.

1. Sample: for candidate ``i``, draw one block type per block uniformly from
   the types of the pool that fit that block, and keep the first draw whose
   exact parameter count lies in ``budget * (1 +- tolerance)`` (rejection
   sampling; counts come from :meth:`NetSpec.params`, which equals the built
   network's count). The draws come from a generator seeded by
   ``derive_seed(seed, "candidate", i)`` alone, so candidate ``i`` is the same
   whatever else runs, in any order, on any worker or shard.
2. Score: build the candidate with weights seeded by the same per-candidate
   seed and take ``fisher_potential`` (BatchNorm in train mode) on one
   minibatch of training images with the usual crop and flip. As in the
   authors' code, each candidate sees its own minibatch (seeded by its seed);
   ``shared_batch`` gives every candidate the same one instead. The memory
   layout is an execution detail like the device (recorded in every row, not
   in the settings): ``auto`` scores WRNs on the CPU in NHWC, whose
   convolutions oneDNN runs faster, with BatchNorm statistics computed exactly
   (:mod:`zc_proxies.runs.batchnorm`); elsewhere NCHW.
3. Keep the highest score (ties: lowest index).

The search runs on the engine (:func:`zc_proxies.runs.search.run_search`):
every candidate is appended to the result store as soon as it is scored, a
rerun with the same settings skips those, and workers, shards and a Dask
scheduler split the candidates without changing any row.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import data_root
from ..data.sources import MinibatchSource, source_for
from ..errors import ArchError, ConfigError, DataError, UnknownNameError
from ..proxies import get_proxy
from ..runs.device import check_device
from ..runs.layout import apply_layout, resolve_layout
from ..runs.runner import Runner
from ..runs.search import SearchResult, run_search, scored_row
from ..runs.seeding import check_seed, derive_seed
from ..runs.shards import Shard
from ..score import score_detailed
from .blocks import PAPER_POOL, BlockType, parse_block
from .config import Configuration
from .networks import NetSpec, count_parameters, get_net

PROXY = "fisher_potential"
DATASETS = ("cifar10", "cifar100", "imagenet")


def parse_budget(text: str | int | float) -> int:
    """A parameter budget such as ``800k``, ``1.5M``, ``800000`` or ``2.2e6``, as an integer."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmM]?)\s*", str(text))
        if not m:
            raise ValueError(f"cannot read the budget {text!r}: write e.g. 800k, 1.5M or 800000")
        value = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6}[m[2].lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"a budget must be a positive parameter count, got {text!r}")
    return int(round(value))


def window(budget: int, tolerance: float) -> tuple[int, int]:
    """Smallest and largest parameter counts within ``budget * (1 +- tolerance)``."""
    return math.ceil(budget * (1 - tolerance) - 1e-9), math.floor(budget * (1 + tolerance) + 1e-9)


@dataclass(frozen=True)
class SearchSettings:
    """Everything that determines a search's candidates and scores.

    Attributes
    ----------
    net
        Network skeleton (``wrn-40-2``, ``resnet-34``...).
    budget, tolerance
        Accept configurations with ``budget * (1 +- tolerance)`` parameters.
    samples
        Number of candidates.
    seed
        Search seed; candidate ``i`` uses ``derive_seed(seed, "candidate", i)``.
    batch_size
        Images in the scoring minibatch.
    dataset
        ``cifar10``, ``cifar100`` or ``imagenet`` (an image folder).
    num_classes
        Head size (None: the dataset's class count).
    shared_batch
        Score every candidate on the same minibatch (seeded ``derive_seed(seed, "batch")``) rather than its own.
    pool
        Block names to draw from (default: the paper's 21).
    max_draws
        Rejection-sampling attempts per candidate before giving up.
    """

    net: str = "wrn-40-2"
    budget: int = 800_000
    samples: int = 1000
    seed: int = 0
    batch_size: int = 128
    tolerance: float = 0.025
    dataset: str = "cifar10"
    num_classes: int | None = None
    shared_batch: bool = False
    pool: tuple[str, ...] = field(default_factory=lambda: tuple(b.name for b in PAPER_POOL))
    max_draws: int = 1_000_000

    def __post_init__(self) -> None:
        check_search_fields(self)
        if self.dataset not in DATASETS:
            raise UnknownNameError(f"unknown dataset {self.dataset!r} (known: {', '.join(DATASETS)})")
        if self.num_classes is not None and (not isinstance(self.num_classes, int) or isinstance(
                self.num_classes, bool) or self.num_classes < 1):
            raise ConfigError(f"num_classes must be a positive integer, got {self.num_classes!r}")

    @property
    def classes(self) -> int:
        if self.num_classes is not None:
            return self.num_classes
        return {"cifar10": 10, "cifar100": 100, "imagenet": 1000}[self.dataset]

    def fingerprint(self) -> dict[str, Any]:
        """What a stored candidate must share with this search to be reused (not ``samples``)."""
        out = asdict(self)
        del out["samples"], out["max_draws"]
        out["pool"] = list(self.pool)
        out["num_classes"] = self.classes
        out["proxy"] = PROXY
        out["proxy_version"] = get_proxy(PROXY).spec.version
        return out


def check_search_fields(settings: Any, positive: Sequence[str] = ()) -> None:
    """Normalise ``net`` and ``pool`` of a frozen search-settings dataclass and check the fields all searches share.

    ``budget``, ``samples``, ``batch_size``, ``max_draws`` and the names in
    ``positive`` must be positive integers, ``tolerance`` lie in [0, 1), and the pool be non-empty.
    """
    object.__setattr__(settings, "net", get_net(settings.net).name)
    object.__setattr__(settings, "pool", tuple(parse_block(p).name for p in settings.pool))
    for name in ("budget", "samples", "batch_size", "max_draws", *positive):
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(settings.tolerance, (int, float)) or not 0 <= settings.tolerance < 1:
        raise ConfigError(f"tolerance must lie in [0, 1), got {settings.tolerance!r}")
    check_seed(settings.seed, "seed")
    if not settings.pool:
        raise ConfigError("the block pool is empty")


# -- sampling -------------------------------------------------------------------------------
class Sampler:
    """Rejection sampler of configurations of ``spec`` within a parameter window."""

    def __init__(self, spec: NetSpec, pool: Sequence[str | BlockType], num_classes: int,
                 budget: int, tolerance: float, max_draws: int = 1_000_000) -> None:
        self.spec, self.num_classes, self.budget, self.tolerance = spec, num_classes, budget, tolerance
        self.max_draws = max_draws
        self.options = spec.options(pool)
        self.counts = np.array([len(o) for o in self.options])
        width = int(self.counts.max())
        self.table = np.zeros((len(self.options), width), dtype=np.int64)
        for i, (slot, opts) in enumerate(zip(spec.slots, self.options)):
            self.table[i, :len(opts)] = [t.params(slot.in_channels, slot.out_channels, slot.stride) for t in opts]
        self.fixed = spec.fixed_params(num_classes)
        self.lo, self.hi = window(budget, tolerance)
        self.range = self.feasible_range()
        if self.hi < self.range[0] or self.lo > self.range[1]:
            raise ArchError(
                f"no {spec.name} configuration has {budget:,} +- {tolerance:.1%} parameters "
                f"({self.lo:,}..{self.hi:,}): with this block pool and {num_classes} classes the feasible range "
                f"is {self.range[0]:,} (cheapest block everywhere) to {self.range[1]:,} (largest everywhere) "
                "parameters; choose a budget within it"
            )

    def feasible_range(self) -> tuple[int, int]:
        """Fewest and most parameters over all configurations of the pool."""
        lo = sum(int(row[:n].min()) for row, n in zip(self.table, self.counts))
        hi = sum(int(row[:n].max()) for row, n in zip(self.table, self.counts))
        return self.fixed + lo, self.fixed + hi

    def sample(self, seed: int, chunk: int = 2048) -> tuple[tuple[BlockType, ...], int, int]:
        """The first configuration in the window drawn from ``seed``: (types, params, draws used)."""
        rng = np.random.default_rng(seed)
        rows = np.arange(len(self.options))
        drawn = 0
        while drawn < self.max_draws:
            n = min(chunk, self.max_draws - drawn)
            picks = rng.integers(0, self.counts, size=(n, len(self.counts)))
            totals = self.fixed + self.table[rows, picks].sum(axis=1)
            hits = np.flatnonzero((totals >= self.lo) & (totals <= self.hi))
            if hits.size:
                j = int(hits[0])
                types = tuple(self.options[i][k] for i, k in enumerate(picks[j]))
                return types, int(totals[j]), drawn + j + 1
            drawn += n
        raise ArchError(
            f"none of {self.max_draws:,} random {self.spec.name} configurations had {self.budget:,} +- "
            f"{self.tolerance:.1%} parameters ({self.lo:,}..{self.hi:,}), although the feasible range is "
            f"{self.range[0]:,}..{self.range[1]:,}: the budget sits where random mixes almost never land; "
            "choose one further from the ends of the range"
        )


def feasible_range(net: str | NetSpec, pool: Sequence[str | BlockType] = PAPER_POOL,
                   num_classes: int | None = None) -> tuple[int, int]:
    """Fewest and most parameters of ``net``'s configurations drawn from ``pool``."""
    spec = get_net(net)
    k = spec.num_classes if num_classes is None else num_classes
    mid = spec.params(spec.standard(), k)
    return Sampler(spec, pool, k, mid, 0.5).range


# -- scoring ---------------------------------------------------------------------------------
def score_configuration(config: Configuration, batch: tuple[torch.Tensor, torch.Tensor], seed: int,
                        device: str | torch.device = "cpu", layout: str = "nchw") -> float:
    """Fisher potential of ``config`` built with weights seeded ``seed``, on ``batch``, in ``layout``.

    In ``nhwc`` every BatchNorm collects exact batch statistics
    (:class:`~zc_proxies.runs.batchnorm.ExactBatchNorm2d`): torch's NHWC CPU
    kernel accumulates them sequentially in float32, which moved WRN-40-2
    candidates' scores by up to 1% from a float64 computation (NCHW: 0.2%),
    enough to reorder candidates. With exact statistics NHWC stays within
    0.18% (median 0.025%) and ranks 40 candidates as NCHW and float64 do
    (``benchmarks/layout_check.py --space blockswap``).
    """
    gen = torch.Generator().manual_seed(seed)
    model = config.build(generator=gen)
    built = count_parameters(model)
    if built != config.params:  # the analytic count is what the window was checked against
        raise ArchError(f"internal: analytic count {config.params} != built count {built} for {config.blocks}")
    device = torch.device(device)
    x, y = batch
    model, x = apply_layout(model, x, layout)  # NHWC: with exact BatchNorm statistics
    return score_built(model.to(device), (x, y), seed)


def score_built(model: torch.nn.Module, batch: Any, seed: int) -> float:
    """Fisher potential of a network built for this call alone: scored in place (given away, no private copy)."""
    result = score_detailed(model, batch, [PROXY], seed=seed, consume=True)[PROXY]
    if result.error is not None:
        raise result.error
    return float(result.value)


def draw_candidate(i: int, search_seed: int, spec: NetSpec, sampler: Sampler, num_classes: int,
                   batch_size: int, shared_batch: bool) -> tuple[dict[str, Any], Configuration]:
    """Candidate ``i``'s configuration and the start of its store row (seeds, blocks, parameter count)."""
    seed = derive_seed(search_seed, "candidate", i)
    types, params, draws = sampler.sample(seed)
    config = Configuration(spec.name, tuple(t.name for t in types), num_classes)
    row: dict[str, Any] = {
        "index": i, "seed": seed, "net": spec.name, "num_classes": num_classes,
        "blocks": list(config.blocks), "params": params, "draws": draws,
        "batch_size": batch_size, "batch_seed": derive_seed(search_seed, "batch") if shared_batch else seed,
    }
    return row, config


@dataclass(frozen=True)
class SearchJob:
    """What a worker needs to score candidates: the settings, where the images are, device and threads."""

    settings: SearchSettings
    data_root: str
    device: str = "cpu"
    threads: int | None = None
    layout: str = "nchw"


@dataclass
class SearchState:
    """A worker's loaded search: the skeleton, the sampler, the images and the shared minibatch (if any)."""

    job: SearchJob
    spec: NetSpec
    sampler: Sampler
    source: MinibatchSource
    shared: tuple[torch.Tensor, torch.Tensor] | None


def load_images(settings: SearchSettings, root: str | Path, *, warn: bool = False) -> MinibatchSource:
    """The training images a search scores on (the data layer's, stand-ins named), checked against the head."""
    source = source_for(settings.dataset, root, settings.classes, warn=warn)
    if source.data.num_classes > settings.classes:
        raise DataError(f"{source.name} has {source.data.num_classes} classes but the network head has "
                        f"{settings.classes}")
    return source


def setup_search(job: SearchJob) -> SearchState:
    """Load what scoring candidates needs (once per worker process)."""
    if job.threads:
        torch.set_num_threads(job.threads)
    s = job.settings
    spec = get_net(s.net)
    sampler = Sampler(spec, s.pool, s.classes, s.budget, s.tolerance, s.max_draws)
    source = load_images(s, job.data_root)
    shared = source.batch(s.batch_size, derive_seed(s.seed, "batch")) if s.shared_batch else None
    return SearchState(job, spec, sampler, source, shared)


def score_candidate(state: SearchState, i: int) -> list[dict[str, Any]]:
    """Candidate ``i``: drawn, built, scored on its minibatch; its row (failures recorded, not raised)."""
    s = state.job.settings
    t0 = time.perf_counter()
    row, config = draw_candidate(i, s.seed, state.spec, state.sampler, s.classes, s.batch_size,
                                 state.shared is not None)
    row["layout"] = state.job.layout

    def compute(_row: dict[str, Any]) -> float:
        batch = state.shared if state.shared is not None else state.source.batch(s.batch_size, row["seed"])
        return score_configuration(config, batch, row["seed"], state.job.device, state.job.layout)

    return [scored_row(row, t0, compute)]


def search(settings: SearchSettings, *, data_dir: str | Path | None = None, store: str | Path | None = None,
           device: str = "cpu", threads: int | None = None, layout: str = "auto", runner: Runner | None = None,
           shard: Shard | None = None, progress: bool = True, wait: bool = False,
           on_wait: Callable[[str], None] | None = None,
           on_candidate: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or resume) a BlockSwap search; see the module docstring.

    Parameters
    ----------
    settings
        What to search.
    data_dir
        Data root (``--data``; default ``$ZCBENCH_DATA``).
    store
        Result store to append to and resume from (None: keep rows in memory).
    device, threads
        Where candidates are scored, and torch threads per worker (None: torch's default).
    layout
        ``auto`` (the skeleton's choice on the CPU, :attr:`NetSpec.cpu_layout`; NCHW on other devices),
        ``nchw`` or ``nhwc``; recorded in every row.
    runner, shard
        Workers / Dask scheduler, and this run's share of the candidates.
    on_candidate
        Called with each newly scored row.
    """
    root = data_root(data_dir)
    spec = get_net(settings.net)
    device = check_device(device)
    job = SearchJob(settings, str(root), device, threads, resolve_layout(layout, spec, device))
    sampler = Sampler(spec, settings.pool, settings.classes, settings.budget, settings.tolerance, settings.max_draws)
    source = load_images(settings, root)  # a missing dataset stops the search before anything is stored
    return run_search(job, setup_search, score_candidate, samples=settings.samples,
                      settings={**settings.fingerprint(), **source.settings()}, feasible=sampler.range, store=store,
                      runner=runner, shard=shard, progress=progress, wait=wait, on_wait=on_wait,
                      desc=f"blockswap {spec.name} {settings.budget:,}", on_candidate=on_candidate)


def save_winner(result: SearchResult, path: str | Path, **extra: Any) -> Configuration:
    """Write the best candidate's configuration to ``path`` (atomically) with the search's record.

    The file is itself a configuration file (``blockswap train/distill --config``
    read it) plus ``params``, ``score``, ``seed``, ``index``, ``proxy``, the
    search ``settings`` it won under, ``samples`` and ``extra``.
    """
    best = result.best
    if best is None:
        raise DataError("the search has no scored candidate to save")
    config = Configuration(best["net"], tuple(best["blocks"]), best["num_classes"])
    config.save(path, **extra, params=best["params"], score=best["score"], seed=best["seed"], index=best["index"],
                proxy=PROXY, search=result.settings, samples=len(result.rows))
    return config
