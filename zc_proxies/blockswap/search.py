"""BlockSwap's search: random mixed-block networks under a parameter budget, ranked by Fisher potential.

1. Sample: for candidate ``i``, draw one block type per block uniformly from
   the types of the pool that fit that block, and keep the first draw whose
   exact parameter count lies in ``budget * (1 +- tolerance)`` (rejection
   sampling; counts come from :meth:`NetSpec.params`, which equals the built
   network's count). The draws come from a generator seeded by ``(seed, i)``
   alone, so candidate ``i`` is the same whatever else runs, in any order.
2. Score: build the candidate with weights seeded by the same per-candidate
   seed and take ``fisher_potential`` (BatchNorm in train mode) on one
   minibatch of training images with the usual crop and flip. As in the
   authors' code, each candidate sees its own minibatch (seeded by its seed);
   ``shared_batch`` gives every candidate the same one instead.
3. Keep the highest score (ties: lowest index).

Every candidate is appended to a :class:`~zc_proxies.blockswap.store.CandidateStore`
as soon as it is scored; a rerun with the same settings skips those.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..datasets import ImageSet, data_root, find_folder, load_cifar, load_image_folder, minibatch
from ..errors import ArchError, DataError, MissingDataError, NonFiniteScoreError, UnknownNameError, ZCBenchError
from ..proxies import get_proxy
from ..score import score
from .blocks import PAPER_POOL, BlockType, parse_block
from .config import Configuration
from .networks import NetSpec, count_parameters, get_net
from .store import CandidateStore

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


def candidate_seed(seed: int, index: int) -> int:
    """The seed of candidate ``index`` of a search seeded ``seed`` (a function of the pair alone)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


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
        Search seed; candidate ``i`` uses :func:`candidate_seed` ``(seed, i)``.
    batch_size
        Images in the scoring minibatch.
    dataset
        ``cifar10``, ``cifar100`` or ``imagenet`` (an image folder).
    num_classes
        Head size (None: the dataset's class count).
    shared_batch
        Score every candidate on the same minibatch (seeded ``seed``) rather than its own.
    channels_last
        Score in NHWC layout (faster on CPU, less exact in float32; see :func:`score_configuration`).
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
    channels_last: bool = False
    pool: tuple[str, ...] = field(default_factory=lambda: tuple(b.name for b in PAPER_POOL))
    max_draws: int = 1_000_000

    def __post_init__(self) -> None:
        check_search_fields(self)
        if self.dataset not in DATASETS:
            raise UnknownNameError(f"unknown dataset {self.dataset!r} (known: {', '.join(DATASETS)})")

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
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not 0 <= settings.tolerance < 1:
        raise ValueError(f"tolerance must lie in [0, 1), got {settings.tolerance!r}")
    if not settings.pool:
        raise ValueError("the block pool is empty")


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
def load_dataset(dataset: str, root: str | Path | None = None) -> ImageSet:
    """The training images of ``dataset`` under the data root (``--data`` or ``$ZCBENCH_DATA``)."""
    base = data_root(root)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(base, 10 if dataset == "cifar10" else 100, "train")
    if dataset == "imagenet":
        for name in ("imagenet", "imagenet-sample"):
            try:
                return load_image_folder(find_folder(base, name))
            except MissingDataError:
                continue
        return load_image_folder(base)
    raise UnknownNameError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")


def score_configuration(config: Configuration, batch: tuple[torch.Tensor, torch.Tensor], seed: int,
                        device: str | torch.device = "cpu", channels_last: bool = False) -> float:
    """Fisher potential of ``config`` built with weights seeded ``seed``, on ``batch``.

    ``channels_last`` runs the network in NHWC layout: on CPU (oneDNN) about
    1.8x faster for WRN-40-2 candidates, but in float32 its scores deviated
    from a float64 computation by ~0.4% (NCHW: ~0.03%), measured on 800k
    candidates at batch 128. Hence off by default.
    """
    gen = torch.Generator().manual_seed(seed)
    model = config.build(generator=gen)
    built = count_parameters(model)
    if built != config.params:  # the analytic count is what the window was checked against
        raise ArchError(f"internal: analytic count {config.params} != built count {built} for {config.blocks}")
    device = torch.device(device)
    x, y = batch
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model = model.to(device)
    return float(score(model, (x, y), PROXY, seed=seed))


@dataclass
class SearchResult:
    """The winner and every candidate row (sorted by index)."""

    best: dict[str, Any]
    rows: list[dict[str, Any]]
    scored: int  # candidates scored in this run (the rest came from the store)
    seconds: float
    feasible: tuple[int, int]


def search(settings: SearchSettings, *, data: ImageSet | None = None, data_dir: str | Path | None = None,
           store: str | Path | None = None, device: str | torch.device = "cpu", progress: bool = True,
           on_candidate: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run (or resume) a BlockSwap search; see the module docstring.

    Parameters
    ----------
    settings
        What to search.
    data
        Training images; loaded from ``data_dir`` / ``$ZCBENCH_DATA`` when None.
    store
        JSONL candidate store to append to and resume from (None: keep rows in memory).
    device
        Where candidates are scored.
    progress
        Show a tqdm progress bar.
    on_candidate
        Called with each newly scored row.
    """
    spec = get_net(settings.net)
    k = settings.classes
    sampler = Sampler(spec, settings.pool, k, settings.budget, settings.tolerance, settings.max_draws)
    fingerprint = settings.fingerprint()

    def prepare(todo: list[int]) -> Callable[[int], dict[str, Any]]:
        images = data
        if images is None and todo:
            images = load_dataset(settings.dataset, data_dir)
        if images is not None and images.num_classes > k:
            raise DataError(f"{images.name} has {images.num_classes} classes but the network head has {k}")
        shared = minibatch(images, settings.batch_size, settings.seed) if (settings.shared_batch and todo) else None
        return lambda i: _run_candidate(i, settings, spec, sampler, fingerprint, images, shared, device)

    return run_search(settings.samples, fingerprint, store, prepare, feasible=sampler.range, progress=progress,
                      desc=f"blockswap {spec.name} {settings.budget:,}", on_candidate=on_candidate)


def read_candidates(store: CandidateStore, fingerprint: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The stored candidates by index; rows of another search or without index/status are refused."""
    done: dict[int, dict[str, Any]] = {}
    for row in store.read():
        if row.get("search") != fingerprint:
            raise DataError(_mismatch(store.path, row.get("search"), fingerprint))
        if not isinstance(row.get("index"), int) or row.get("status") not in ("ok", "nan", "error"):
            raise DataError(f"candidate store {str(store.path)!r}: a row lacks an integer 'index' or a "
                            f"known 'status': {json.dumps(row)[:200]}")
        done[row["index"]] = row
    store.repair()
    return done


def run_search(samples: int, fingerprint: dict[str, Any], store: str | Path | None,
               prepare: Callable[[list[int]], Callable[[int], dict[str, Any]]], *, feasible: tuple[int, int],
               desc: str, progress: bool = True,
               on_candidate: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Score candidates ``0..samples-1`` not yet in ``store``, appending each row as it comes; pick the best.

    ``prepare(todo)`` is called once with the indices still to score (so data
    is loaded only when something is left) and returns the function that
    scores one candidate index into a store row. Shared by every BlockSwap
    search task (classification, detection).
    """
    start = time.perf_counter()
    cstore = CandidateStore(store) if store is not None else None
    done = read_candidates(cstore, fingerprint) if cstore is not None else {}
    todo = [i for i in range(samples) if i not in done]
    score_one = prepare(todo)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=samples, initial=samples - len(todo), unit="cand", desc=desc, dynamic_ncols=True)
    best = _best(r for i, r in done.items() if i < samples)
    try:
        with cstore if cstore is not None else contextlib.nullcontext():
            for i in todo:
                row = score_one(i)
                done[i] = row
                if cstore is not None:
                    cstore.append(row)
                if on_candidate is not None:
                    on_candidate(row)
                if row["status"] == "ok" and (best is None or row["score"] > best["score"]):
                    best = row  # for the progress bar; the winner is recomputed below
                if bar is not None:
                    bar.update(1)
                    if best is not None:
                        bar.set_postfix(best=f"{best['score']:.4g}", refresh=False)
    finally:
        if bar is not None:
            bar.close()

    rows = [done[i] for i in sorted(done) if i < samples]
    best = _best(rows)
    if best is None:
        raise ZCBenchError(f"none of the {len(rows)} candidates could be scored (see the store's messages)")
    return SearchResult(best, rows, len(todo), time.perf_counter() - start, feasible)


def scored_row(row: dict[str, Any], fingerprint: dict[str, Any], started: float,
               compute: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
    """``row`` completed with ``compute(row)`` as its score and a status; failures are recorded, not raised.

    A :class:`NonFiniteScoreError` gives status ``nan``; a torch failure (out
    of memory, ...) status ``error``, so that one bad candidate does not end
    the search. ``compute`` may add fields to the row.
    """
    try:
        row["score"] = compute(row)
        row["status"], row["message"] = "ok", None
    except NonFiniteScoreError as exc:
        row["score"], row["status"], row["message"] = None, "nan", str(exc)
    except RuntimeError as exc:
        row["score"], row["status"], row["message"] = None, "error", f"{type(exc).__name__}: {exc}"
    row["seconds"] = round(time.perf_counter() - started, 6)
    row["search"] = fingerprint
    return row


def draw_candidate(i: int, search_seed: int, spec: NetSpec, sampler: Sampler, num_classes: int,
                   batch_size: int, shared_batch: bool) -> tuple[dict[str, Any], Configuration]:
    """Candidate ``i``'s configuration and the start of its store row (seeds, blocks, parameter count)."""
    seed = candidate_seed(search_seed, i)
    types, params, draws = sampler.sample(seed)
    config = Configuration(spec.name, tuple(t.name for t in types), num_classes)
    row: dict[str, Any] = {
        "index": i, "seed": seed, "net": spec.name, "num_classes": num_classes,
        "blocks": list(config.blocks), "params": params, "draws": draws,
        "batch_size": batch_size, "batch_seed": search_seed if shared_batch else seed,
    }
    return row, config


def _run_candidate(i: int, settings: SearchSettings, spec: NetSpec, sampler: Sampler,
                   fingerprint: dict[str, Any], data: ImageSet | None,
                   shared: tuple[torch.Tensor, torch.Tensor] | None, device: str | torch.device) -> dict[str, Any]:
    t0 = time.perf_counter()
    row, config = draw_candidate(i, settings.seed, spec, sampler, settings.classes, settings.batch_size,
                                 shared is not None)
    seed = row["seed"]

    def compute(_row: dict[str, Any]) -> float:
        assert data is not None
        batch = shared if shared is not None else minibatch(data, settings.batch_size, seed)
        return score_configuration(config, batch, seed, device, settings.channels_last)

    return scored_row(row, fingerprint, t0, compute)


def _best(rows: Any) -> dict[str, Any] | None:
    ok = [r for r in rows if r.get("status") == "ok" and r.get("score") is not None]
    return max(ok, key=lambda r: (r["score"], -int(r["index"]))) if ok else None


def _mismatch(path: Path, stored: Any, wanted: dict[str, Any]) -> str:
    if not isinstance(stored, dict):
        return (f"candidate store {str(path)!r} holds rows without search settings; "
                "it was not written by this search (use another --store)")
    diffs = [f"{k}: stored {stored.get(k)!r}, now {wanted.get(k)!r}" for k in wanted if stored.get(k) != wanted.get(k)]
    return (f"candidate store {str(path)!r} holds candidates of a different search ({'; '.join(diffs)}); "
            "use another --store, or rerun with the stored settings to resume")
