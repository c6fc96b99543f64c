#!/usr/bin/env python
"""A measured BlockSwap result on CIFAR-10: the Fisher-potential winner against three ablations at one budget.

What runs (issue 15), all through the package's engine:

1. **Data.** The CIFAR-10 training images under the data root (``data_batch_1``
   here: 10,000) are split by :func:`zc_proxies.data.training.split_holdout`
   with ``--seed`` into ``--holdout`` validation images (1,000) and the rest
   (9,000; ``--train-images N`` keeps a seeded N of them, for trials). Every run,
   the teacher included, trains on the same images and is validated on the same
   holdout after every epoch. The final number is the error on a seeded
   ``--test-images`` (1,000) of the 10,000 official test images (drawn by
   ``split_holdout`` with ``derive_seed(--seed, "holdout", 1)``), or on all of
   them with ``--test-images all``; each network is tested once, after its last
   epoch (no choice is made on the test images).
2. **Search.** ``zc_proxies.blockswap.search`` (what ``zcbench blockswap search``
   runs): ``--samples`` configurations of the teacher's skeleton (``--net``,
   WRN-16-2) within ``--budget`` +- ``--tolerance`` parameters, each scored by
   Fisher potential on one minibatch of 128 training images; the best is the
   BlockSwap winner. Candidates go into ``OUT/search/candidates.jsonl`` (a rerun
   resumes), the winner into ``OUT/search/winner.json``. As in
   ``zcbench blockswap search``, the minibatches come from all 10,000 training
   images (the holdout included; it only validates, the test images are never
   seen).
3. **Teacher.** One WRN-16-2 trained from scratch with seed ``--seed`` for
   ``--teacher-epochs`` (default ``--epochs``), BlockSwap's CIFAR recipe
   (:class:`~zc_proxies.blockswap.train.TrainSettings`). It is trained once, not
   per seed: every student of every seed is distilled from this one network (as
   in BlockSwap, where the students of one table share a teacher), so the seeds'
   spread is the students' own. It finishes all its epochs before any
   distillation starts.
4. **Arms**, each trained for ``--epochs`` epochs with each seed of ``--seeds``
   (the seed fixes the student's weights, batch order and augmentation; all arms
   of one seed see the same batches, so differences are paired by seed):

   (a) ``blockswap``: the winner, distilled from the teacher with attention transfer (beta 1000);
   (b) ``scratch``: the winner trained from scratch (cross-entropy only);
   (c) ``random``: a random configuration in the same budget, distilled with AT.
       Seed s draws its own: candidate ``1,000,000,000 + s`` of the search's
       sampler and seed stream (``draw_candidate``: ``derive_seed(--seed,
       "candidate", i)``), a draw no search of fewer candidates makes, so it is
       independent of the winner. Its mean +- std is thus over random choices
       and training noise together, the expected result of picking at random;
   (d) ``wrn-16-1``: the plain WRN-16-1 (``--baseline``; 175,066 parameters), distilled with AT.

Every training run has its own folder ``OUT/runs/<arm>-s<seed>/`` (``checkpoint.pt``
after each epoch, ``history.csv``, ``model.pt``), and its result row (test,
holdout and training error, seconds) goes into the result store
``OUT/runs.jsonl`` (key arm + seed, the settings in its header: a rerun under
other settings is refused). A rerun skips finished runs (read back from the
store), resumes unfinished ones after their last finished epoch, and retries
runs that failed with an error. ``--workers W`` runs W training jobs at a time
through :class:`zc_proxies.runs.runner.Runner` (spawned processes, ``--threads``
torch threads each): first the search, then the teacher beside the scratch
runs, then the distillations (longest first).

Before training, the script times every distinct network (two epochs of train /
distill on ``--probe-images`` images, the second one timed) and prints an
estimate of the whole run, and the epoch count that would fill one hour here.
The results are printed and written as ``OUT/blockswap_cifar_mini.md`` (with the
machine and settings), ``OUT/blockswap_cifar_mini.csv`` (one row per arm: mean
+- std over seeds, std with n - 1) and ``OUT/runs.csv`` (one row per run).

Default epochs: 5. Measured here with the probes above (AMD EPYC VM, 2 vCPUs
shared with other jobs, torch 2.14 CPU, 1 thread per job, 9,000 training images,
probes of 256 images), CPU seconds per epoch: WRN-16-2 teacher 78, a 200K
WRN-16-2 mix 60 from scratch and 76 distilled (grouped and bottleneck blocks are
slow on a CPU for their size; distilling adds the teacher's forward pass),
WRN-16-1 distilled 64; a search candidate 0.6-0.8 s. With 3 seeds that is
~13 runs x ~70 s = ~900 CPU-seconds per epoch, ~8.5 min of wall time per epoch
on 2 workers, plus ~5-7 min of search (1,000 candidates on 2 workers) and ~1 min
of probes: 5 epochs make ~50 min on two otherwise idle cores, ~1 h with the two
jobs contending for the cores' caches and memory (a first wall-clock probe at a
load of 2-3 gave ~40% more: teacher 119 s per epoch, a mix 91). On a loaded
machine it takes longer: the printed estimate gives both figures. Five epochs
are far from BlockSwap's 200: the errors are of networks trained for minutes,
and the comparison is between arms at equal, short training.

Usage::

    python benchmarks/blockswap_cifar_mini.py --workers 2                      # the default run, ~1 h on 2 cores
    python benchmarks/blockswap_cifar_mini.py --estimate-only                  # settings and time estimate only
    python benchmarks/blockswap_cifar_mini.py --epochs 1 --seeds 1 --samples 20 --train-images 512 \\
        --holdout 128 --test-images 256 --out /tmp/bs-trial                   # a trial of a few minutes
    python benchmarks/blockswap_cifar_mini.py --seeds 0,1,2,3,4 --epochs 30 --device cuda --workers 4
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zc_proxies.blockswap import Configuration, SearchSettings, TrainSettings, get_net, parse_budget, search
from zc_proxies.blockswap.checkpoint import load_network
from zc_proxies.blockswap.search import Sampler, draw_candidate, save_winner
from zc_proxies.blockswap.train import HISTORY_JSON, distill, evaluate, train
from zc_proxies.data import data_root, load_cifar
from zc_proxies.data.images import ImageSet
from zc_proxies.data.training import load_training_data, split_holdout, subset
from zc_proxies.errors import ConfigError, DataError, NonFiniteScoreError, RunError, ZCBenchError, guarded
from zc_proxies.runs.device import check_device
from zc_proxies.runs.execute import execute
from zc_proxies.runs.runner import Runner
from zc_proxies.runs.seeding import check_seed, derive_seed
from zc_proxies.runs.store import ERROR, NAN, OK, SEEDING, ResultStore, normalise, read_store, settings_difference

#: Epochs of every run unless ``--epochs`` says otherwise (derived in the module docstring).
DEFAULT_EPOCHS = 5
#: Random configuration of seed s: candidate RANDOM_FIRST + s of the search's seed stream.
RANDOM_FIRST = 1_000_000_000
#: The store's key: one row per arm and seed.
KEY = ("arm", "seed")
NAME = "blockswap_cifar_mini"

#: The arms, in table order: name -> (label, distilled from the teacher).
ARMS: dict[str, tuple[str, bool]] = {
    "blockswap": ("(a) BlockSwap winner + AT", True),
    "scratch": ("(b) winner from scratch", False),
    "random": ("(c) random in budget + AT", True),
    "wrn-16-1": ("(d) WRN-16-1 + AT", True),
}
TEACHER = "teacher"


# -- what a worker needs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """Which images a run trains, validates and is tested on (the same for every run of the benchmark)."""

    root: str
    holdout: int
    train_images: int | None
    test_images: int | None  # None: all official test images
    split_seed: int


@dataclass(frozen=True)
class Job:
    """Everything a worker process loads once: the data, the device, its torch threads, the teacher's folder."""

    data: DataSpec
    device: str
    threads: int
    teacher_dir: str
    teacher_net: str
    log: bool


@dataclass(frozen=True)
class RunItem:
    """One training run: which arm and seed, the network, the recipe, and its output folder."""

    arm: str
    seed: int
    config: Configuration
    settings: TrainSettings
    distilled: bool
    out: str


@dataclass
class Loaded:
    """A worker's state: training images, per-epoch evaluation sets (the holdout) and the test images."""

    job: Job
    train: ImageSet
    evals: dict[str, ImageSet]
    test: ImageSet


def load_data(spec: DataSpec) -> tuple[ImageSet, dict[str, ImageSet], ImageSet]:
    """``(train, {"holdout": ...}, test)`` as the module docstring describes (no holdout when it is 0)."""
    train_set, evals, _ = load_training_data("cifar10", spec.root, holdout=spec.holdout, limit=spec.train_images,
                                             seed=spec.split_seed, test=False)
    full = load_cifar(spec.root, 10, "test")
    if spec.test_images is None or spec.test_images >= len(full):
        return train_set, evals, full
    _, test = split_holdout(full, spec.test_images, derive_seed(spec.split_seed, "holdout", 1))
    assert test is not None
    return train_set, evals, replace(test, name=f"cifar10-test-{spec.test_images}")


def setup(job: Job) -> Loaded:
    """Load a worker's data once (the runner calls it once per process)."""
    torch.set_num_threads(job.threads)
    train_set, evals, test = load_data(job.data)
    return Loaded(job, train_set, evals, test)


def run_training(state: Loaded, item: RunItem) -> list[dict[str, Any]]:
    """Train (or resume, or read back) one run and test it; its store row (a failure is a row, not raised)."""
    job = state.job
    t0 = time.perf_counter()
    row: dict[str, Any] = {"arm": item.arm, "seed": item.seed, "net": item.config.net,
                           "blocks": list(item.config.blocks), "params": item.config.params,
                           "epochs": item.settings.epochs, "distilled": item.distilled, "out": item.out}
    tag = f"{item.arm} seed {item.seed}"

    def report(epoch: dict[str, Any]) -> None:
        if job.log:
            held = (f", holdout error {100.0 - epoch['holdout_acc']:.2f}%" if "holdout_acc" in epoch else "")
            print(f"  [{tag}] epoch {epoch['epoch']}/{item.settings.epochs}: loss {epoch['train_loss']:.4f}, "
                  f"train error {100.0 - epoch['train_acc']:.2f}%{held} [{epoch['seconds']:.0f} s]", flush=True)

    try:
        if item.distilled:
            teacher, _ = load_network(job.teacher_dir, net=job.teacher_net, device=job.device)
            result = distill(item.config, teacher, state.train, item.settings, item.out, eval_sets=state.evals,
                             device=job.device, progress=False, on_epoch=report)
        else:
            result = train(item.config, state.train, item.settings, item.out, eval_sets=state.evals,
                           device=job.device, progress=False, on_epoch=report)
        _, test_acc = evaluate(result.model, state.test, 256, job.device)
        final = result.final
        row.update(status=OK, message=None, test_err=100.0 - test_acc,
                   holdout_err=100.0 - final["holdout_acc"] if "holdout_acc" in final else None,
                   train_err=100.0 - final["train_acc"], train_loss=final["train_loss"],
                   seconds=round(sum(h["seconds"] for h in result.history), 3), resumed_from=result.resumed_from,
                   test_images=len(state.test))
        if job.log:
            print(f"  [{tag}] done: test error {row['test_err']:.2f}% on {len(state.test):,} test images", flush=True)
    except NonFiniteScoreError as exc:
        row.update(status=NAN, message=str(exc))
    except (ZCBenchError, RuntimeError) as exc:
        row.update(status=ERROR, message=str(exc) if isinstance(exc, ZCBenchError) else f"{type(exc).__name__}: {exc}")
    row["wall"] = round(time.perf_counter() - t0, 3)
    return [row]


# -- timing and the estimate ---------------------------------------------------------------------------------
@dataclass
class Rates:
    """Seconds per image, measured on one clock: training or distilling each network, and evaluating it."""

    train: dict[tuple[Configuration, bool], float] = field(default_factory=dict)
    evaluate: dict[Configuration, float] = field(default_factory=dict)
    candidate: float = math.nan


@dataclass
class Timing:
    """The probes on two clocks: wall time (at the machine's present load) and CPU time per torch thread.

    On a CPU device the second is what the work takes on otherwise idle cores; on a GPU both are wall time.
    """

    threads: int
    device: str
    wall: Rates = field(default_factory=Rates)
    cpu: Rates = field(default_factory=Rates)

    def clock(self) -> tuple[float, float]:
        cpu = time.process_time() / self.threads if self.device == "cpu" else time.perf_counter()
        return time.perf_counter(), cpu


def probe(timing: Timing, config: Configuration, teacher: Configuration | None, data: ImageSet,
          images: int) -> None:
    """Time ``config`` (distilled from an untrained ``teacher``, or trained alone) with the package's own loop.

    Two epochs of ``images`` images in a temporary folder; the second (warm) one is timed (with its
    checkpoint write), then one evaluation pass over the same images.
    """
    key = (config, teacher is not None)
    if key in timing.wall.train:
        return
    part = subset(data, np.arange(min(images, len(data))))
    settings = TrainSettings(epochs=2)
    ends: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bs-mini-probe-") as tmp:
        if teacher is not None:
            result = distill(config, teacher.build().to(timing.device), part, settings, tmp, device=timing.device,
                             progress=False, on_epoch=lambda _: ends.append(timing.clock()))
        else:
            result = train(config, part, settings, tmp, device=timing.device, progress=False,
                           on_epoch=lambda _: ends.append(timing.clock()))
    t0 = timing.clock()
    evaluate(result.model, part, 256, timing.device)
    t1 = timing.clock()
    for i, rates in enumerate((timing.wall, timing.cpu)):
        rates.train[key] = (ends[1][i] - ends[0][i]) / len(part)
        rates.evaluate.setdefault(config, (t1[i] - t0[i]) / len(part))


def probe_search(timing: Timing, settings: SearchSettings, root: Path) -> None:
    """Seconds per search candidate: the search's first three candidates scored in memory, nothing stored.

    Wall time: the mean of the last two (warm) candidates; CPU time: the whole call over three (an upper bound).
    """
    t0 = timing.clock()
    result = search(replace(settings, samples=3), data_dir=root, store=None, device=timing.device,
                    threads=timing.threads, progress=False)
    t1 = timing.clock()
    timing.wall.candidate = statistics.mean(r["seconds"] for r in result.rows[1:])
    timing.cpu.candidate = (t1[1] - t0[1]) / 3


def done_epochs(item: RunItem) -> int:
    """Epochs an unfinished run has already done (from its history file; 0 when there is none)."""
    try:
        return len(json.loads((Path(item.out) / HISTORY_JSON).read_text()))
    except (OSError, ValueError):
        return 0


def run_seconds(item: RunItem, rates: Rates, n_train: int, n_holdout: int, n_test: int) -> float:
    """Estimated seconds ``item`` still needs."""
    per_epoch = rates.train[(item.config, item.distilled)] * n_train + rates.evaluate[item.config] * n_holdout
    left = max(item.settings.epochs - done_epochs(item), 0)
    return left * per_epoch + rates.evaluate[item.config] * n_test


def makespan(durations: Sequence[float], workers: int) -> float:
    """Wall time of tasks handed in order to whichever of ``workers`` is free first (the runner's scheduling)."""
    free = [0.0] * max(1, min(workers, len(durations)))
    for d in durations:
        heapq.heapreplace(free, free[0] + d)
    return max(free) if durations else 0.0


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


# -- the plan --------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """The benchmark's settings, checked, and what follows from them."""

    args: argparse.Namespace
    root: Path
    out: Path
    seeds: list[int]
    epochs: int
    teacher_epochs: int
    search: SearchSettings
    teacher: Configuration
    baseline: Configuration
    randoms: dict[int, Configuration]
    data: DataSpec
    device: str
    recipe: TrainSettings  # the shared recipe (seed and epochs set per run)

    def settings(self) -> dict[str, Any]:
        """What the result store is bound to: everything that determines a run's result except the seed list."""
        recipe = asdict(self.recipe)
        del recipe["seed"], recipe["epochs"]
        return {"benchmark": NAME, "epochs": self.epochs, "teacher_epochs": self.teacher_epochs,
                "teacher_seed": self.args.seed, "search": self.search.fingerprint(), "samples": self.search.samples,
                "teacher": self.teacher.to_json(), "baseline": self.baseline.to_json(), "recipe": recipe,
                "data": asdict(replace(self.data, root="")), "random_first": RANDOM_FIRST, "seeding": SEEDING}

    def item(self, arm: str, seed: int, config: Configuration) -> RunItem:
        epochs = self.teacher_epochs if arm == TEACHER else self.epochs
        distilled = arm != TEACHER and ARMS[arm][1]
        return RunItem(arm, seed, config, replace(self.recipe, seed=seed, epochs=epochs), distilled,
                       str(self.out / "runs" / f"{arm}-s{seed}"))

    def phases(self, winner: Configuration) -> tuple[list[RunItem], list[RunItem]]:
        """Phase 1: the teacher, then the scratch runs beside it; phase 2: the distillations."""
        first = [self.item(TEACHER, self.args.seed, self.teacher)] + [
            self.item("scratch", s, winner) for s in self.seeds]
        second = [self.item("blockswap", s, winner) for s in self.seeds]
        second += [self.item("random", s, self.randoms[s]) for s in self.seeds]
        second += [self.item("wrn-16-1", s, self.baseline) for s in self.seeds]
        return first, second


def parse_seeds(text: str) -> list[int]:
    """``"3"``: seeds 0, 1, 2; ``"0,4,7"`` (or ``"7,"``): those seeds."""
    text = text.strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            n = int(text)
            if n < 1:
                raise ConfigError(f"--seeds {text}: give a positive count or a comma-separated list of seeds")
            seeds = list(range(n))
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (3) or a comma-separated list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give at least one seed, each once")
    return [check_seed(s, "--seeds") for s in seeds]


def make_plan(args: argparse.Namespace) -> Plan:
    """Check every option and draw the random configurations; nothing is written."""
    root = data_root(args.data)
    seeds = parse_seeds(args.seeds)
    check_seed(args.seed, "--seed")
    for name in ("epochs", "workers", "threads"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    teacher_epochs = args.epochs if args.teacher_epochs is None else args.teacher_epochs
    if teacher_epochs < 1:
        raise ConfigError(f"--teacher-epochs must be a positive integer, got {teacher_epochs}")
    if args.probe_images < 0:
        raise ConfigError(f"--probe-images must be 0 (no estimate) or a positive count, got {args.probe_images}")
    try:
        budget = parse_budget(args.budget)
    except ValueError as exc:
        raise ConfigError(f"--budget: {exc}") from None
    if args.test_images.strip().lower() == "all":
        test_images = None
    else:
        try:
            test_images = int(args.test_images)
        except ValueError:
            raise ConfigError(f"--test-images {args.test_images!r}: give a count or 'all'") from None
        if test_images < 1:
            raise ConfigError(f"--test-images must be positive (or 'all'), got {test_images}")
    device = check_device(args.device)
    spec = get_net(args.net)
    if spec.family != "wrn":
        raise ConfigError(f"--net {args.net}: this benchmark trains on CIFAR, so the teacher is a WRN (wrn-16-2...)")
    settings = SearchSettings(net=spec.name, budget=budget, samples=args.samples, seed=args.seed,
                              tolerance=args.tolerance, dataset="cifar10")
    teacher = Configuration.create(spec, spec.standard(), 10)
    base = get_net(args.baseline)
    baseline = Configuration.create(base, base.standard(), 10)
    sampler = Sampler(spec, settings.pool, 10, budget, settings.tolerance, settings.max_draws)
    randoms = {s: draw_candidate(RANDOM_FIRST + s, settings.seed, spec, sampler, 10, settings.batch_size, False)[1]
               for s in seeds}
    data = DataSpec(str(root), args.holdout, args.train_images, test_images, args.seed)
    recipe = TrainSettings(batch_size=args.batch_size)
    return Plan(args, root, Path(args.out), seeds, args.epochs, teacher_epochs, settings, teacher, baseline, randoms,
                data, device, recipe)


# -- output ----------------------------------------------------------------------------------------------
def machine_line(plan: Plan) -> str:
    a = plan.args
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(torch.device(plan.device))}" if plan.device.startswith("cuda") else ""
    return (f"machine: {platform.node()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, {platform.system()} "
            f"{platform.release()}; python {platform.python_version()}, torch {torch.__version__}; device "
            f"{plan.device}{gpu}; {a.workers} worker(s) x {a.threads} torch thread(s)")


def settings_lines(plan: Plan, n_train: int, n_holdout: int, n_test: int) -> list[str]:
    s, r = plan.search, plan.recipe
    test = f"{n_test:,} seeded test images" if plan.data.test_images is not None else f"all {n_test:,} test images"
    return [
        f"data: CIFAR-10, {n_train:,} training images, {n_holdout:,} held out for validation (split seed "
        f"{plan.args.seed}); final number on {test}",
        f"search: {s.net} within {s.budget:,} +- {s.tolerance:.1%} parameters, {s.samples} candidates ranked by "
        f"fisher_potential on a {s.batch_size}-image minibatch each, seed {s.seed}",
        f"training: {plan.epochs} epochs per arm (teacher {plan.teacher_epochs}), SGD {r.momentum} momentum, lr "
        f"{r.lr} cosine, weight decay {r.weight_decay}, batch {r.batch_size}, crop + flip + cutout {r.cutout}; "
        f"AT beta {r.beta:g}; seeds {', '.join(map(str, plan.seeds))}; one {plan.teacher.net} teacher (seed "
        f"{plan.args.seed}) for all students",
    ]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def _pm(mean: float, std: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if math.isfinite(std) else f"{mean:.{digits}f}"


def _blocks(row: dict[str, Any]) -> str:
    return " ".join(row["blocks"])


def summarise(rows: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """One summary per arm (the teacher last): test / holdout error and seconds, mean and sample std over seeds."""
    by = {(r["arm"], int(r["seed"])): r for r in rows}
    ref = {s: by[("blockswap", s)]["test_err"] for s in seeds
           if ("blockswap", s) in by and by[("blockswap", s)]["status"] == OK}
    out = []
    for arm in [*ARMS, TEACHER]:
        mine = [r for r in rows if r["arm"] == arm and (arm == TEACHER or int(r["seed"]) in seeds)]
        if not mine:
            continue
        ok = [r for r in mine if r["status"] == OK]
        test = _mean_std([r["test_err"] for r in ok])
        held = _mean_std([r["holdout_err"] for r in ok if r.get("holdout_err") is not None])
        secs = _mean_std([r["seconds"] for r in ok])
        delta = _mean_std([r["test_err"] - ref[int(r["seed"])] for r in ok if int(r["seed"]) in ref])
        params = [int(r["params"]) for r in mine]
        nets = sorted({r["net"] for r in mine})
        configs = sorted({_blocks(r) for r in mine})
        out.append({
            "arm": arm, "label": ARMS[arm][0] if arm in ARMS else f"teacher {nets[0].upper()} (reference)",
            "net": ",".join(nets), "blocks": configs[0] if len(configs) == 1 else f"{len(configs)} configurations",
            "params_min": min(params), "params_max": max(params), "runs": len(ok), "failed": len(mine) - len(ok),
            "seeds": ",".join(str(r["seed"]) for r in sorted(ok, key=lambda r: int(r["seed"]))),
            "test_err_mean": test[0], "test_err_std": test[1], "holdout_err_mean": held[0], "holdout_err_std": held[1],
            "delta_vs_a_mean": math.nan if arm in ("blockswap", TEACHER) else delta[0],
            "delta_vs_a_std": math.nan if arm in ("blockswap", TEACHER) else delta[1],
            "seconds_mean": secs[0], "seconds_std": secs[1],
        })
    return out


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| arm | network | parameters | runs | test error % | Δ vs (a), paired by seed | holdout error % | "
             "training s / run |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        params = (f"{s['params_min']:,}" if s["params_min"] == s["params_max"]
                  else f"{s['params_min']:,}–{s['params_max']:,}")
        failed = f" ({s['failed']} failed)" if s["failed"] else ""
        lines.append(f"| {s['label']} | {s['net']}: {s['blocks']} | {params} | {s['runs']}{failed} | "
                     f"{_pm(s['test_err_mean'], s['test_err_std'])} | {_pm(s['delta_vs_a_mean'], s['delta_vs_a_std'])} | "
                     f"{_pm(s['holdout_err_mean'], s['holdout_err_std'])} | "
                     f"{_pm(s['seconds_mean'], s['seconds_std'], 0)} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, header: list[str], rows: list[dict[str, Any]], seeds: list[int],
                  notes: list[str]) -> str:
    """Write the Markdown table, the per-arm CSV and the per-run CSV; return the Markdown table."""
    summary = summarise(rows, seeds)
    table = markdown(summary)
    text = "\n".join(f"<!-- {h} -->" for h in header) + "\n\n" + table + "\n" + "\n".join(notes) + "\n"
    (out / f"{NAME}.md").write_text(text)
    with open(out / f"{NAME}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(summary[0]) if summary else ["arm"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(summary)
    fields = ["arm", "seed", "status", "net", "params", "epochs", "test_err", "holdout_err", "train_err",
              "train_loss", "seconds", "wall", "test_images", "blocks", "out", "message"]
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in sorted(rows, key=lambda r: ([*ARMS, TEACHER].index(r["arm"]), int(r["seed"]))):
            writer.writerow({**r, "blocks": _blocks(r)})
    return table


# -- main ------------------------------------------------------------------------------------------------
def estimate(plan: Plan, rates: Rates, winner: Configuration, n: tuple[int, int, int], workers: int,
             search_left: int) -> float:
    """Estimated seconds still needed: the search's candidates left, then both phases as the runner schedules them."""
    first, second = plan.phases(winner)
    second.sort(key=lambda it: -run_seconds(it, rates, *n))
    return (search_left * rates.candidate / workers + makespan([run_seconds(i, rates, *n) for i in first], workers)
            + makespan([run_seconds(i, rates, *n) for i in second], workers))


def epochs_for(seconds: float, plan: Plan, rates: Rates, winner: Configuration, n: tuple[int, int, int],
               workers: int) -> int:
    """About how many epochs (teacher and students alike) a whole fresh run of ``seconds`` allows."""
    def fresh(epochs: int) -> float:
        trial = replace(plan, epochs=epochs, teacher_epochs=epochs, out=Path(os.devnull))  # no history: nothing done
        return estimate(trial, rates, winner, n, workers, plan.search.samples)

    slope = fresh(2) - fresh(1)
    return max(0, int((seconds - (fresh(1) - slope)) // slope)) if slope > 0 else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                   help=f"epochs of every student run (default {DEFAULT_EPOCHS}: about an hour on 2 CPU cores)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="epochs of the teacher (default: --epochs)")
    p.add_argument("--seeds", default="3", help="a count N (seeds 0..N-1) or a list such as 0,1,2 (default 3)")
    p.add_argument("--seed", type=int, default=0, help="search, teacher and data-split seed (default 0)")
    p.add_argument("--budget", default="200k", help="parameter budget of the search (default 200k)")
    p.add_argument("--tolerance", type=float, default=0.025, help="relative budget window (default 0.025)")
    p.add_argument("--samples", type=int, default=1000, help="search candidates (default 1000, as in BlockSwap)")
    p.add_argument("--net", default="wrn-16-2", help="teacher and search skeleton (default wrn-16-2)")
    p.add_argument("--baseline", default="wrn-16-1", help="the plain small network of arm (d) (default wrn-16-1)")
    p.add_argument("--batch-size", type=int, default=128, help="training minibatch (default 128)")
    p.add_argument("--holdout", type=int, default=1000, help="training images held out for validation (1000)")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on a seeded N of the remaining training images (default: all, 9,000 here)")
    p.add_argument("--test-images", default="1000", help="seeded test images for the final number, or 'all' (1000)")
    p.add_argument("--workers", type=int, default=1, help="training jobs (and search workers) at a time (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--out", default=f"benchmark-results/{NAME}", help="output folder; a rerun resumes")
    p.add_argument("--data", default=None, help="data root (default: $ZCBENCH_DATA)")
    p.add_argument("--probe-images", type=int, default=256,
                   help="images per timing probe before training (default 256; 0: no probes, no estimate)")
    p.add_argument("--estimate-only", action="store_true",
                   help="print the settings and the time estimate (the winner's time from a random configuration "
                        "unless the search is stored), then stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    args = p.parse_args(argv)

    started = time.perf_counter()
    plan = make_plan(args)
    torch.set_num_threads(args.threads)
    train_set, evals, test = load_data(plan.data)
    n = (len(train_set), len(evals["holdout"]) if "holdout" in evals else 0, len(test))
    header = [machine_line(plan), *settings_lines(plan, *n)]
    print("\n".join(header), flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    if args.workers * args.threads > (os.cpu_count() or 1) and plan.device == "cpu":
        print(f"note: {args.workers} workers x {args.threads} threads exceed the {os.cpu_count()} CPUs: the runs "
              "will slow each other down", flush=True)
    if args.estimate_only and not args.probe_images:
        raise ConfigError("--estimate-only needs timing probes: give --probe-images a positive count")

    runs_path = plan.out / "runs.jsonl"
    if runs_path.is_file():  # a rerun under other settings stops here, before the search or the probes
        diff = settings_difference(read_store(runs_path)[0].get("settings") or {}, normalise(plan.settings()))
        if diff:
            raise DataError(f"result store {str(runs_path)!r} was written under other settings ({'; '.join(diff[:6])}); "
                            "use another --out, or rerun with the stored settings")
    search_dir = plan.out / "search"
    store_path = search_dir / "candidates.jsonl"
    winner_path = search_dir / "winner.json"
    timing = Timing(args.threads, plan.device)
    stored_winner = Configuration.load(winner_path) if winner_path.is_file() and not _stale(winner_path, plan) else None
    if args.probe_images:
        t0 = time.perf_counter()
        probe_search(timing, plan.search, plan.root)
        stand_in = stored_winner or plan.randoms[plan.seeds[0]]
        configs = [(plan.teacher, None), (stand_in, None), (stand_in, plan.teacher), (plan.baseline, plan.teacher),
                   *[(c, plan.teacher) for c in plan.randoms.values()]]
        for config, teacher in configs:
            probe(timing, config, teacher, train_set, args.probe_images)
        left = 0 if stored_winner else plan.search.samples
        print(f"timing probes ({_minutes(time.perf_counter() - t0)}), s / epoch on {n[0]:,} images "
              f"(CPU time per thread | wall time now):", flush=True)
        for config, teacher in configs[:4]:
            name = ("winner" if stored_winner else "winner (stand-in: a random configuration)") \
                if config == stand_in else config.net
            how = "distilled" if teacher else "from scratch"
            key = (config, teacher is not None)
            print(f"  {name} {how}: {timing.cpu.train[key] * n[0]:.0f} | {timing.wall.train[key] * n[0]:.0f}")
        print(f"  a search candidate: {timing.cpu.candidate:.2f} | {timing.wall.candidate:.2f} s", flush=True)
        for what, rates in (("on idle cores (CPU time)", timing.cpu), ("at the present load (wall time)", timing.wall)):
            total = estimate(plan, rates, stand_in, n, args.workers, left)
            print(f"estimate {what}: {_minutes(total)} still to run on {args.workers} worker(s), search "
                  f"{_minutes(left * rates.candidate / args.workers)} of it; one hour allows about "
                  f"{epochs_for(3600, plan, rates, stand_in, n, args.workers)} epochs", flush=True)
        if args.estimate_only:
            return 0

    with Runner(args.workers) as runner:
        result = search(plan.search, data_dir=plan.root, store=store_path, device=plan.device, threads=args.threads,
                        runner=runner, progress=not args.quiet)
        winner = save_winner(result, winner_path)
        best = result.best
        assert best is not None
        search_seconds = sum(float(r["seconds"]) for r in result.rows)
        print(f"search: {len(result.rows)} candidates ({result.scored} now, {search_seconds:.0f} s of candidate "
              f"time); winner index {best['index']}, {best['params']:,} parameters, fisher_potential "
              f"{best['score']:.6g}: {' '.join(winner.blocks)}", flush=True)
        if args.probe_images and not {(winner, False), (winner, True)} <= set(timing.wall.train):
            probe(timing, winner, None, train_set, args.probe_images)
            probe(timing, winner, plan.teacher, train_set, args.probe_images)
            print(f"winner: {timing.cpu.train[(winner, False)] * n[0]:.0f} | "
                  f"{timing.wall.train[(winner, False)] * n[0]:.0f} s / epoch from scratch, "
                  f"{timing.cpu.train[(winner, True)] * n[0]:.0f} | {timing.wall.train[(winner, True)] * n[0]:.0f} "
                  f"distilled (CPU | wall); training estimate {_minutes(estimate(plan, timing.cpu, winner, n, args.workers, 0))} "
                  f"on idle cores, {_minutes(estimate(plan, timing.wall, winner, n, args.workers, 0))} at the "
                  "present load", flush=True)
        for s, c in plan.randoms.items():
            print(f"random configuration of seed {s}: {c.params:,} parameters: {' '.join(c.blocks)}")

        first, second = plan.phases(winner)
        if args.probe_images:
            second.sort(key=lambda it: -run_seconds(it, timing.cpu, *n))
        job = Job(plan.data, plan.device, args.threads, str(plan.out / "runs" / f"{TEACHER}-s{args.seed}"),
                  plan.teacher.net, not args.quiet)
        info = {"torch": torch.__version__, "machine": machine_line(plan)}
        with ResultStore(runs_path, plan.settings(), key=KEY, info=info) as store:
            retry = [k for k in ((it.arm, it.seed) for it in first + second)
                     if (store.get(k) or {}).get("status") == ERROR]
            if retry:
                print(f"retrying {len(retry)} run(s) that failed before: "
                      f"{', '.join(f'{a} seed {s}' for a, s in retry)}", flush=True)
                store.discard(retry)
            for phase, items in (("teacher and scratch runs", first), ("distillations", second)):
                todo = [it for it in items if (it.arm, it.seed) not in store]
                if phase == "distillations":
                    teacher_row = store.get((TEACHER, args.seed))
                    if todo and (teacher_row is None or teacher_row["status"] != OK):
                        raise RunError(f"the teacher could not be trained ({(teacher_row or {}).get('message')}); "
                                       "no distillation without it")
                print(f"{phase}: {len(todo)} to run, {len(items) - len(todo)} stored", flush=True)
                summary = execute(store, runner, setup, run_training, todo, job, total=len(items), desc=phase,
                                  unit="run", progress=not args.quiet)
                for line in summary.failure_lines():
                    print(f"  failed: {line}", flush=True)
            rows = store.rows()

    notes = [
        f"Test error on {n[2]:,} CIFAR-10 test images after the last epoch; mean ± sample std (n − 1) over seeds "
        f"{', '.join(map(str, plan.seeds))}. Δ: per-seed difference from (a), mean ± std. (c) draws one random "
        "configuration per seed. The teacher is one run, shared by every distilled student.",
        f"Search: {len(result.rows)} candidates, {search_seconds:.0f} s of candidate time; the winner "
        f"({best['params']:,} parameters, index {best['index']}): {' '.join(winner.blocks)}.",
        f"Wall time of this invocation: {_minutes(time.perf_counter() - started)}; load average "
        f"{os.getloadavg()[0]:.2f} at the end.",
    ]
    table = write_outputs(plan.out, header, rows, plan.seeds, notes)
    print("\n" + table + "\n" + "\n".join(notes))
    print(f"wrote {plan.out / (NAME + '.md')}, {plan.out / (NAME + '.csv')}, {plan.out / 'runs.csv'}")
    return 0


def _stale(winner_path: Path, plan: Plan) -> bool:
    """Whether a stored winner file was made under other search settings than this run's (then it is ignored)."""
    try:
        record = json.loads(winner_path.read_text())
    except (OSError, ValueError):
        return True
    stored = dict(record.get("search") or {})
    stored.pop("seeding", None)
    want = plan.search.fingerprint()
    return record.get("samples") != plan.search.samples or any(stored.get(k) != v for k, v in want.items()
                                                               if k in stored)


if __name__ == "__main__":
    sys.exit(guarded(NAME, main))
