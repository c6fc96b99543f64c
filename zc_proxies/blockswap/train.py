"""Training a BlockSwap network: a teacher from scratch, or a student distilled from it with AT.

Two recipes, both BlockSwap's (Turner et al., ICLR 2020, arXiv 1906.04113; code:
BayesWatch/pytorch-blockswap), picked by :func:`recipe`:

==================  =======================================  ==========================================
setting             CIFAR (:data:`CIFAR_RECIPE`)             ImageNet (:data:`IMAGENET_RECIPE`)
==================  =======================================  ==========================================
loss                cross-entropy (+ AT when distilling)     cross-entropy (+ AT when distilling), Sec. 6
optimiser           SGD, momentum 0.9, not Nesterov          SGD, momentum 0.9 (Sec. 6), not Nesterov
                                                             (``main.py``: ``torch.optim.SGD``)
epochs              200                                      100 (Sec. 6)
learning rate       0.1, cosine to 1e-10 over the epochs     0.1, divided by 10 every 30 epochs (Sec. 6)
                    (``CosineAnnealingLR(T_max=epochs,       (``StepLR(step_size=30, gamma=0.1)``),
                    eta_min=1e-10)``), stepped per epoch     stepped per epoch
batch size          128                                      256 (Sec. 6; the paper splits it over 4
                                                             GPUs, see below)
weight decay        5e-4 on every parameter                  1e-4 on every parameter (Sec. 6)
augmentation        pad 4 + random 32 crop + flip + Cutout   RandomResizedCrop 224 + flip (Sec. 6
                    16 (:mod:`zc_proxies.data.training`)     "standard crop + flip", ``main.py``);
                                                             evaluation: resize 256 + centre crop 224
                                                             (:mod:`zc_proxies.data.imagenet_train`)
AT                  beta 1000, three WRN stage outputs       per-stage weight 750 at the outputs of
                    (Sec. 5: "beta is set to 1000")          the four sections (Sec. 6: "beta is set
                                                             to 750 using the output of each of the
                                                             four sections"), i.e. ``beta`` 1000
                                                             rescaled by 3/4 (:mod:`.attention`)
mixed precision     no                                       autocast (float16) + GradScaler on CUDA
==================  =======================================  ==========================================

The CIFAR column is ``train.py`` of the authors' code and the paper's Section 5
("Implementation Details"); the ImageNet column is Section 6 ("Implementation
Details") and the ``imagenet`` branch of ``main.py`` (transforms). Where the
paper is silent, these are our choices:

* The paper trains its ImageNet networks on 4 GPUs, 64 images each, so its
  BatchNorm statistics are over 64 images; one device here normalises over
  all 256.
* Section 6 uses a *pretrained* ResNet-34 teacher (torchvision's weights,
  converted). It gives no teacher recipe; ``train`` with ``dataset="imagenet"``
  uses the students' recipe above without AT.
* Nesterov momentum is not mentioned in Section 6; ``main.py`` does not use it.
* Mixed precision is not in the paper (its code trains in float32); we add it
  on CUDA only, for speed. On the CPU every run is float32.

A student is trained with cross-entropy plus attention transfer from a frozen
teacher (:mod:`.attention`; the teacher runs in eval mode without gradients).

Runs are deterministic for a given seed: the batches of each epoch are a
function of ``(seed, epoch)`` (:mod:`zc_proxies.data.training`; for ImageNet
whatever the number of data-loading ``workers``), and the weights of ``seed``.
They are also resumable: after every epoch the output folder gets
``checkpoint.pt`` (network, optimiser, gradient scaler, schedule position,
epoch, torch RNG state, history, and a fingerprint of everything that
determines the run), written atomically (:mod:`.checkpoint`), and
``history.json`` / ``history.csv``. The same call (or CLI command) on the same
folder continues after the last finished epoch, and on the CPU ends
bit-identical to an uninterrupted run (on a GPU, cuDNN may pick kernels that
differ in the last bits from run to run). When all epochs are done,
``model.pt`` holds the final network.
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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.images import ImageSet
from ..data.training import check_trainable, data_digest, eval_batches, train_batches, training_transform
from ..errors import ConfigError, DataError, ModelError, NonFiniteScoreError, UnknownNameError, ZCBenchError
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


SCHEDULES = ("cosine", "step")


@dataclass(frozen=True)
class TrainSettings:
    """Everything of the recipe (defaults: BlockSwap's CIFAR recipe; :data:`IMAGENET_RECIPE` for ImageNet).

    ``schedule`` is ``"cosine"`` (``lr`` annealed to ``eta_min`` over
    ``epochs``) or ``"step"`` (``lr`` times ``gamma`` every ``step_size``
    epochs). ``amp`` asks for mixed precision, which is used on CUDA devices
    only. ``epochs`` sets the length of the cosine schedule; the rest, and the
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
    schedule: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    amp: bool = False

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")
        for name in ("epochs", "batch_size", "step_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.cutout, int) or self.cutout < 0:
            raise ConfigError(f"cutout must be a non-negative pixel count, got {self.cutout!r}")
        for name in ("lr", "momentum", "weight_decay", "eta_min", "beta", "gamma"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of (0-based) ``epoch``.

        Cosine: from ``lr`` to ``eta_min`` over ``epochs`` (PyTorch's
        ``CosineAnnealingLR``). Step: ``lr * gamma ** (epoch // step_size)``
        (PyTorch's ``StepLR``).
        """
        if self.schedule == "step":
            return self.lr * self.gamma ** (epoch // self.step_size)
        return self.eta_min + (self.lr - self.eta_min) * (1.0 + math.cos(math.pi * epoch / self.epochs)) / 2.0

    def describe_schedule(self) -> str:
        """The learning-rate schedule in words, e.g. ``"step: 0.1 x 0.1 every 30 epochs"``."""
        if self.schedule == "step":
            return f"step: {self.lr:g} x {self.gamma:g} every {self.step_size} epochs"
        return f"cosine: {self.lr:g} to {self.eta_min:g} over {self.epochs} epochs"

    def schedule_record(self, next_epoch: int) -> dict[str, Any]:
        """The schedule as a checkpoint stores it."""
        record: dict[str, Any] = {"name": self.schedule, "epochs": self.epochs, "lr": self.lr,
                                  "next_epoch": next_epoch}
        if self.schedule == "step":
            record.update(step_size=self.step_size, gamma=self.gamma)
        else:
            record["eta_min"] = self.eta_min
        return record

    def fingerprint(self, distilling: bool) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed.

        Fields of the step schedule and ``amp`` appear only when they take
        part (a step schedule; mixed precision asked for), so a CIFAR run's
        fingerprint is the same as before they existed and its old
        checkpoints still resume.
        """
        out = asdict(self)
        del out["epochs"]
        if not distilling:
            del out["beta"]
        if self.schedule == "cosine":
            for name in ("schedule", "step_size", "gamma"):
                del out[name]
        else:
            del out["eta_min"]
        if not self.amp:
            del out["amp"]
        return out


#: BlockSwap's CIFAR recipe (``train.py``; the paper's Section 5).
CIFAR_RECIPE = TrainSettings()
#: BlockSwap's ImageNet recipe (the paper's Section 6; see the module docstring for its sources).
IMAGENET_RECIPE = TrainSettings(epochs=100, batch_size=256, lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
                                cutout=0, beta=BETA, schedule="step", step_size=30, gamma=0.1, amp=True)
RECIPES = {"cifar10": CIFAR_RECIPE, "cifar100": CIFAR_RECIPE, "imagenet": IMAGENET_RECIPE}


def recipe(dataset: str, **overrides: Any) -> TrainSettings:
    """The recipe for ``dataset`` (``cifar10``, ``cifar100`` or ``imagenet``) with ``overrides`` (None values ignored).

    Raises
    ------
    UnknownNameError
        For another dataset.
    ConfigError
        For an override that is no setting, or a value out of range.
    """
    if dataset not in RECIPES:
        raise UnknownNameError(f"no training recipe for dataset {dataset!r} (known: {', '.join(RECIPES)})")
    names = set(asdict(CIFAR_RECIPE))
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return replace(RECIPES[dataset], **{k: v for k, v in overrides.items() if v is not None})


def _amp_active(settings: TrainSettings, device: torch.device) -> bool:
    return settings.amp and device.type == "cuda"


@torch.no_grad()
def measure(model: nn.Module, data: ImageSet, batch_size: int = 256, device: str | torch.device = "cpu", *,
            workers: int = 0, amp: bool = False) -> dict[str, float]:
    """Mean cross-entropy, top-1 accuracy and (heads of more than 5 classes) top-5 accuracy, in percent.

    Returns ``{"loss", "acc", "top5"}`` (no ``"top5"`` for 5 classes or
    fewer). ``model`` runs in eval mode; its mode is restored. ``amp`` runs it
    under float16 autocast on CUDA (ignored elsewhere).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum, correct, correct5, seen = 0.0, 0, 0, 0
    top5 = None
    try:
        for x, y in eval_batches(data, batch_size, workers=workers, pin_memory=device.type == "cuda"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
                logits = model(x)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            if top5 is None:
                top5 = logits.shape[1] > 5
            if top5:
                correct5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(1).sum())
            seen += len(y)
    finally:
        model.train(was_training)
    out = {"loss": loss_sum / seen, "acc": 100.0 * correct / seen}
    if top5:
        out["top5"] = 100.0 * correct5 / seen
    return out


def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 256, device: str | torch.device = "cpu", *,
             workers: int = 0, amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy (percent) of ``model`` in eval mode; its mode is restored."""
    result = measure(model, data, batch_size, device, workers=workers, amp=amp)
    return result["loss"], result["acc"]


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
          progress: bool = True, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          workers: int = 0) -> TrainResult:
    """Train ``config`` from scratch with cross-entropy (a teacher, or any configuration), resumably.

    Parameters
    ----------
    config
        The network; its weights are drawn from ``settings.seed``.
    data
        Training images: pixels in memory (CIFAR, :func:`load_training_data`'s)
        or image files (ImageNet, read through a DataLoader).
    settings
        The recipe (:func:`recipe`).
    out
        Output folder: checkpoint, history and, when done, ``model.pt``. An
        existing checkpoint of the same run is resumed.
    eval_sets
        Sets evaluated after every epoch (``name_loss``, ``name_acc`` and, for
        heads of more than 5 classes, ``name_top5`` in the history).
    on_epoch
        Called with each finished epoch's history row.
    workers
        Data-loading processes for image files (ignored for pixels in memory);
        the result does not depend on it.
    """
    return _run(config, data, settings, Path(out), None, eval_sets or {}, device, progress, on_epoch, workers)


def distill(config: Configuration, teacher: BlockSwapNet, data: ImageSet, settings: TrainSettings,
            out: str | os.PathLike, *, eval_sets: Mapping[str, ImageSet] | None = None,
            device: str | torch.device = "cpu", progress: bool = True,
            on_epoch: Callable[[dict[str, Any]], None] | None = None, workers: int = 0) -> TrainResult:
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
    return _run(config, data, settings, Path(out), teacher, eval_sets or {}, device, progress, on_epoch, workers)


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
    transform = training_transform(data)  # image files only: a CIFAR fingerprint stays as it was
    if transform:
        fp["data"]["transform"] = transform
    if teacher is not None:
        fp["teacher"] = {"net": teacher.spec.name, "blocks": list(teacher.config),
                         "num_classes": teacher.num_classes, "digest": state_digest(teacher)}
    return json.loads(json.dumps(fp))


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    """The run's history as ``history.json`` and ``history.csv`` in ``out`` (both written atomically)."""
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
         on_epoch: Callable[[dict[str, Any]], None] | None, workers: int) -> TrainResult:
    device = torch.device(device)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"workers must be a non-negative number of data-loading processes, got {workers!r}")
    if data.num_classes > config.num_classes:
        raise DataError(f"{data.name} has {data.num_classes} classes but the {config.net} head has {config.num_classes}")
    if len(data) < 1:
        raise DataError(f"{data.name} has no training images")
    check_trainable(data)
    for name, ds in eval_sets.items():
        if name == "train":
            raise ConfigError("an evaluation set may not be named 'train': its columns would overwrite the "
                              "training loss and accuracy in the history")
        check_trainable(ds)
        if ds.num_classes > config.num_classes:
            raise DataError(f"evaluation set {name!r} has {ds.num_classes} classes, more than the head's "
                            f"{config.num_classes}")
    amp = _amp_active(settings, device)

    model = config.build(generator=torch.Generator().manual_seed(derive_seed(settings.seed, "weights"))).to(device)
    teacher_modes: list[bool] = []
    if teacher is not None:
        if any(p.device != device for p in teacher.parameters()):
            import copy

            teacher = copy.deepcopy(teacher).to(device)
        teacher_modes = [m.training for m in teacher.modules()]
        check_compatible(model, teacher, next(iter(eval_batches(data, 1)))[0].to(device))
    fingerprint = _fingerprint(config, data, settings, teacher)

    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, nesterov=settings.nesterov)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
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
                if amp and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise DataError(f"checkpoint {str(ckpt_path)!r} does not fit this run: {exc}") from exc
            torch.set_rng_state(state["rng"])
            history = list(state["history"])
            moved = [row["epoch"] for row in history if row["lr"] != settings.lr_at(row["epoch"] - 1)]
            if moved:
                warnings.warn(f"{ckpt_path}: epochs {moved[:5]} were trained at other learning rates than the "
                              f"schedule asked for now ({settings.describe_schedule()}; stored: "
                              f"{state.get('schedule')}); the result will differ from an uninterrupted run",
                              stacklevel=3)
            write_history(out, history)

        try:
            for epoch in range(start, settings.epochs):
                row = _epoch(model, teacher, data, settings, epoch, optimizer, scaler, device, progress, workers)
                for name, ds in eval_sets.items():
                    result = measure(model, ds, settings.batch_size, device, workers=workers, amp=amp)
                    row[f"{name}_loss"], row[f"{name}_acc"] = result["loss"], result["acc"]
                    if "top5" in result:
                        row[f"{name}_top5"] = result["top5"]
                history.append(row)
                atomic_torch_save({**network_record(model), "kind": fingerprint["kind"], "epoch": epoch + 1,
                                   "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                   "schedule": settings.schedule_record(epoch + 1),
                                   "rng": torch.get_rng_state(), "history": history, "fingerprint": fingerprint},
                                  ckpt_path)
                write_history(out, history)
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
           optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device, progress: bool,
           workers: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    lr = settings.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    model.train()
    if teacher is not None:
        teacher.eval()
    amp = _amp_active(settings, device)
    sums = {"loss": 0.0, "ce": 0.0, "at": 0.0}
    correct, seen = 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        kind = "distill" if teacher is not None else "train"
        bar = tqdm(total=math.ceil(len(data) / settings.batch_size), unit="batch", leave=False,
                   desc=f"{kind} {model.spec.name} epoch {epoch + 1}/{settings.epochs}", dynamic_ncols=True)
    batches = train_batches(data, settings.batch_size, settings.seed, epoch, settings.cutout, workers=workers,
                            pin_memory=device.type == "cuda")
    try:
        with StageTaps(model) as s_taps, (StageTaps(teacher) if teacher is not None else _NoTaps()) as t_taps:
            for step, (x, y) in enumerate(batches):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    if teacher is not None:
                        with torch.no_grad():
                            t_acts = t_taps.capture(x)[1]
                        logits, s_acts = s_taps.capture(x)
                        parts = distillation_loss(logits.float(), y, s_acts, t_acts, settings.beta)
                        loss = parts.total
                    else:
                        logits = model(x)
                        loss = F.cross_entropy(logits.float(), y)
                value = loss.item()
                if not math.isfinite(value):
                    raise NonFiniteScoreError(f"the training loss became {value} in epoch {epoch + 1}, batch {step + 1} "
                                              f"(lr {lr:.4g}); the last finished epoch is kept in the checkpoint")
                if teacher is not None:
                    sums["ce"] += parts.ce.item() * len(y)
                    sums["at"] += sum(a.item() for a in parts.at) * len(y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                sums["loss"] += value * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", acc=f"{100.0 * correct / seen:.1f}%",
                                    refresh=False)
    finally:
        batches.close()
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
