"""Training a BlockSwap network: a teacher from scratch, or a student distilled from it with AT.

The recipe is BlockSwap's (``train.py`` of BayesWatch/pytorch-blockswap) for CIFAR:
SGD with momentum 0.9 (not Nesterov), weight decay 5e-4 on every parameter,
learning rate 0.1 annealed by a cosine over the run's epochs to 1e-10
(PyTorch's ``CosineAnnealingLR(T_max=epochs, eta_min=1e-10)``, stepped once
per epoch), batch size 128, 200 epochs, every training image once per epoch
in a fresh random order (the last batch may be smaller), augmented with
Cutout (:mod:`.trainset`). A student is trained with cross-entropy plus
attention transfer from a frozen teacher (:mod:`.attention`; the teacher runs
in eval mode without gradients).

Runs are deterministic for a given seed: the batches of each epoch are a
function of ``(seed, epoch)`` (:mod:`.trainset`), and the weights of ``seed``.
They are also resumable: after every epoch the output folder gets
``checkpoint.pt`` (network, optimiser, schedule position, epoch, torch RNG
state, history, and a fingerprint of everything that determines the run),
written atomically (:mod:`.checkpoint`), and ``history.json`` /
``history.csv``. The same call (or CLI command) on the same folder continues
after the last finished epoch, and on the CPU ends bit-identical to an
uninterrupted run (on a GPU, cuDNN may pick kernels that differ in the last
bits from run to run). When all epochs are done, ``model.pt`` holds the final
network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import ImageSet
from ..data.training import data_digest, eval_batches, in_memory, train_batches
from ..errors import ConfigError, DataError, ModelError, NonFiniteScoreError, ZCBenchError
from ..runs.atomic import atomic_torch_save, atomic_write_text
from ..runs.lock import WriterLock
from ..runs.seeding import check_seed, derive_seed
from ..runs.store import SEEDING, settings_difference
from .attention import BETA, StageTaps, distillation_loss
from .checkpoint import CHECKPOINT, MODEL, network_record, read_record, save_network, state_digest
from .config import Configuration
from .networks import BlockSwapNet

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"


@dataclass(frozen=True)
class TrainSettings:
    """Everything of the recipe (defaults: BlockSwap's CIFAR recipe, see the module docstring).

    ``epochs`` sets the length of the cosine schedule; the rest, and the
    data, form the fingerprint a checkpoint must match to be resumed.
    ``beta`` is only used when distilling.
    """

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    eta_min: float = 1e-10
    cutout: int = 16
    seed: int = 0
    beta: float = BETA

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise ConfigError(f"cutout must be a non-negative pixel count, got {self.cutout!r}")
        for name in ("lr", "momentum", "weight_decay", "eta_min", "beta"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``: cosine from ``lr`` to ``eta_min`` over ``epochs``."""
        return self.eta_min + (self.lr - self.eta_min) * (1.0 + math.cos(math.pi * epoch / self.epochs)) / 2.0

    def fingerprint(self, distilling: bool) -> dict[str, Any]:
        out = asdict(self)
        del out["epochs"]
        if not distilling:
            del out["beta"]
        return out


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 256,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy (percent) of ``model`` in eval mode; its mode is restored."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        for x, y in eval_batches(data, batch_size):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    finally:
        model.train(was_training)
    return loss_sum / len(data), 100.0 * correct / len(data)


# -- the training loop ------------------------------------------------------------------------
@dataclass
class TrainResult:
    """The trained network, the per-epoch history, and how many epochs came from a checkpoint."""

    model: BlockSwapNet
    history: list[dict[str, Any]]
    resumed_from: int
    out: Path

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def train(config: Configuration, data: ImageSet, settings: TrainSettings, out: str | os.PathLike, *,
          eval_sets: Mapping[str, ImageSet] | None = None, device: str | torch.device = "cpu",
          progress: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``config`` from scratch with cross-entropy (a teacher, or any configuration), resumably.

    Parameters
    ----------
    config
        The network; its weights are drawn from ``settings.seed``.
    data
        Training images (array-backed, e.g. :func:`load_training_data`'s).
    settings
        The recipe.
    out
        Output folder: checkpoint, history and, when done, ``model.pt``. An
        existing checkpoint of the same run is resumed.
    eval_sets
        Sets evaluated after every epoch (``name_loss`` and ``name_acc`` in the history).
    on_epoch
        Called with each finished epoch's history row.
    """
    return _run(config, data, settings, Path(out), None, eval_sets or {}, device, progress, on_epoch)


def distill(config: Configuration, teacher: BlockSwapNet, data: ImageSet, settings: TrainSettings,
            out: str | os.PathLike, *, eval_sets: Mapping[str, ImageSet] | None = None,
            device: str | torch.device = "cpu", progress: bool = True,
            on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``config`` from scratch with cross-entropy plus attention transfer from ``teacher``.

    The teacher is frozen: it runs in eval mode under ``torch.no_grad`` and
    its weights and buffers are left as they were (its mode is restored at
    the end; if it lives on another device a copy is used). Teacher and
    student must have the same number of stages with the same spatial sizes
    (checked on one image before anything is written). Other parameters as
    for :func:`train`; the history adds ``train_ce`` and ``train_at`` (the
    unweighted sum of the stages' AT losses).
    """
    if not isinstance(teacher, BlockSwapNet):
        raise ModelError(f"the teacher must be a BlockSwap network (from load_network), got {type(teacher).__name__}")
    return _run(config, data, settings, Path(out), teacher, eval_sets or {}, device, progress, on_epoch)


def check_compatible(student: BlockSwapNet, teacher: BlockSwapNet, x: torch.Tensor) -> None:
    """Raise ModelError unless the two networks' stage outputs on ``x`` can be matched one to one.

    Both run in eval mode without gradients, so neither changes; their modes are restored.
    """
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    try:
        with torch.no_grad(), StageTaps(student) as s_taps, StageTaps(teacher) as t_taps:
            s_acts = s_taps.capture(x)[1]
            t_acts = t_taps.capture(x)[1]
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    if len(s_acts) != len(t_acts):
        raise ModelError(f"the student ({student.spec.name}) has {len(s_acts)} stages but the teacher "
                         f"({teacher.spec.name}) has {len(t_acts)}: attention transfer matches stages one to one")
    for stage, (s, t) in enumerate(zip(s_acts, t_acts)):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise ModelError(f"stage {stage}: the student's ({student.spec.name}) output has shape {tuple(s.shape)} "
                             f"but the teacher's ({teacher.spec.name}) has {tuple(t.shape)}; attention transfer "
                             "needs the same spatial size at every stage")


def _fingerprint(config: Configuration, data: ImageSet, settings: TrainSettings,
                 teacher: BlockSwapNet | None) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "kind": "distill" if teacher is not None else "train",
        "net": config.net, "blocks": list(config.blocks), "num_classes": config.num_classes,
        "settings": settings.fingerprint(teacher is not None),
        "data": {"name": data.name, "images": len(data), "digest": data_digest(data)},
        "seeding": SEEDING,
    }
    if teacher is not None:
        fp["teacher"] = {"net": teacher.spec.name, "blocks": list(teacher.config),
                         "num_classes": teacher.num_classes, "digest": state_digest(teacher)}
    return json.loads(json.dumps(fp))


def _write_history(out: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_text(out / HISTORY_JSON, json.dumps(history, indent=1) + "\n")
    fields: list[str] = []
    for row in history:
        fields += [k for k in row if k not in fields]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(out / HISTORY_CSV, text.getvalue())


def _run(config: Configuration, data: ImageSet, settings: TrainSettings, out: Path, teacher: BlockSwapNet | None,
         eval_sets: Mapping[str, ImageSet], device: str | torch.device, progress: bool,
         on_epoch: Callable[[dict[str, Any]], None] | None) -> TrainResult:
    device = torch.device(device)
    if data.num_classes > config.num_classes:
        raise DataError(f"{data.name} has {data.num_classes} classes but the {config.net} head has {config.num_classes}")
    if len(data) < 1:
        raise DataError(f"{data.name} has no training images")
    in_memory(data)
    for name, ds in eval_sets.items():
        in_memory(ds)
        if ds.num_classes > config.num_classes:
            raise DataError(f"evaluation set {name!r} has {ds.num_classes} classes, more than the head's "
                            f"{config.num_classes}")

    model = config.build(generator=torch.Generator().manual_seed(derive_seed(settings.seed, "weights"))).to(device)
    teacher_modes: list[bool] = []
    if teacher is not None:
        if any(p.device != device for p in teacher.parameters()):
            import copy

            teacher = copy.deepcopy(teacher).to(device)
        teacher_modes = [m.training for m in teacher.modules()]
        check_compatible(model, teacher, next(eval_batches(data, 1))[0].to(device))
    fingerprint = _fingerprint(config, data, settings, teacher)

    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, nesterov=settings.nesterov)
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out / CHECKPOINT):  # one run per output folder at a time
        history: list[dict[str, Any]] = []
        start = 0
        ckpt_path = out / CHECKPOINT
        if ckpt_path.exists():
            state = read_record(ckpt_path, "checkpoint")
            diffs = settings_difference(state.get("fingerprint"), fingerprint)
            if diffs:
                raise DataError(f"checkpoint {str(ckpt_path)!r} belongs to a different run "
                                f"({'; '.join(diffs[:6])}); use another output folder, or rerun with the stored "
                                "settings to resume")
            start = int(state["epoch"])
            if start > settings.epochs:
                raise ZCBenchError(f"checkpoint {str(ckpt_path)!r} has already {start} epochs, more than the "
                                   f"{settings.epochs} asked for; use another output folder")
            try:
                model.load_state_dict(state["state_dict"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise DataError(f"checkpoint {str(ckpt_path)!r} does not fit this run: {exc}") from exc
            torch.set_rng_state(state["rng"])
            history = list(state["history"])
            moved = [row["epoch"] for row in history if row["lr"] != settings.lr_at(row["epoch"] - 1)]
            if moved:
                warnings.warn(f"{ckpt_path}: epochs {moved[:5]} were trained on a cosine schedule over "
                              f"{state['schedule']['epochs']} epochs, now {settings.epochs}; the result will differ "
                              "from an uninterrupted run of this length", stacklevel=3)
            _write_history(out, history)

        try:
            for epoch in range(start, settings.epochs):
                row = _epoch(model, teacher, data, settings, epoch, optimizer, device, progress)
                for name, ds in eval_sets.items():
                    row[f"{name}_loss"], row[f"{name}_acc"] = evaluate(model, ds, settings.batch_size, device)
                history.append(row)
                atomic_torch_save({**network_record(model), "kind": fingerprint["kind"], "epoch": epoch + 1,
                                   "optimizer": optimizer.state_dict(),
                                   "schedule": {"name": "cosine", "epochs": settings.epochs, "lr": settings.lr,
                                                "eta_min": settings.eta_min, "next_epoch": epoch + 1},
                                   "rng": torch.get_rng_state(), "history": history, "fingerprint": fingerprint},
                                  ckpt_path)
                _write_history(out, history)
                if on_epoch is not None:
                    on_epoch(row)
        finally:
            if teacher is not None:
                for m, mode in zip(teacher.modules(), teacher_modes):
                    m.training = mode
        save_network(out / MODEL, model, kind=fingerprint["kind"], epochs=settings.epochs, history=history,
                     fingerprint=fingerprint)
        return TrainResult(model, history, start, out)


def _epoch(model: BlockSwapNet, teacher: BlockSwapNet | None, data: ImageSet, settings: TrainSettings, epoch: int,
           optimizer: torch.optim.Optimizer, device: torch.device, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    lr = settings.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    if teacher is not None:
        teacher.eval()
    sums = {"loss": 0.0, "ce": 0.0, "at": 0.0}
    correct, seen = 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        kind = "distill" if teacher is not None else "train"
        bar = tqdm(total=math.ceil(len(data) / settings.batch_size), unit="batch", leave=False,
                   desc=f"{kind} {model.spec.name} epoch {epoch + 1}/{settings.epochs}", dynamic_ncols=True)
    try:
        with StageTaps(model) as s_taps, (StageTaps(teacher) if teacher is not None else _NoTaps()) as t_taps:
            for step, (x, y) in enumerate(train_batches(data, settings.batch_size, settings.seed, epoch,
                                                        settings.cutout)):
                x, y = x.to(device), y.to(device)
                if teacher is not None:
                    with torch.no_grad():
                        t_acts = t_taps.capture(x)[1]
                    logits, s_acts = s_taps.capture(x)
                    parts = distillation_loss(logits, y, s_acts, t_acts, settings.beta)
                    loss = parts.total
                    sums["ce"] += parts.ce.item() * len(y)
                    sums["at"] += sum(a.item() for a in parts.at) * len(y)
                else:
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                value = loss.item()
                if not math.isfinite(value):
                    raise NonFiniteScoreError(f"the training loss became {value} in epoch {epoch + 1}, batch {step + 1} "
                                              f"(lr {lr:.4g}); the last finished epoch is kept in the checkpoint")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sums["loss"] += value * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", acc=f"{100.0 * correct / seen:.1f}%",
                                    refresh=False)
    finally:
        if bar is not None:
            bar.close()
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": sums["loss"] / seen,
                           "train_acc": 100.0 * correct / seen}
    if teacher is not None:
        row["train_ce"] = sums["ce"] / seen
        row["train_at"] = sums["at"] / seen
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


class _NoTaps:
    """Stand-in for a teacher's taps when training without one."""

    def __enter__(self) -> _NoTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
