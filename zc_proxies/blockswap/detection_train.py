"""Training the chosen Mask R-CNN backbone on COCO, resumably, with the paper's schedule.

The model
    :func:`~zc_proxies.blockswap.detection.build_detector`: torchvision's
    ``MaskRCNN`` over the configuration's BlockSwap ResNet-34 body and a
    feature pyramid, all weights drawn from ``derive_seed(seed, "weights")``,
    trained from scratch. BatchNorm layers train as ordinary ones.
The schedule (:class:`DetectionTrainSettings`)
    The BlockSwap paper (Turner et al., ICLR 2020, arXiv 1906.04113), Section 7
    "COCO Detection": a Mask R-CNN with a ResNet-34 backbone, BlockSwap applied
    with COCO images for a 3M-parameter mixed-blocktype body, trained on 2017
    train and evaluated on 2017 val, everything from scratch and without
    distillation; "Implementation Details: networks are trained using the
    default Mask R-CNN settings in Torchvision. We use a batch-size of 16 split
    across 8 GPUs." Torchvision's defaults for Mask R-CNN (its detection
    reference, ``references/detection/train.py`` and its README: 8 GPUs x 2
    images) are: SGD with momentum 0.9 and weight decay 1e-4 on every
    parameter, learning rate 0.02, 26 epochs, multiplied by 0.1 after epochs
    16 and 22, a linear warm-up over the first min(1000, iterations per epoch
    - 1) iterations from 0.001 times the rate, horizontal flips with
    probability 0.5, images resized to a shorter side of 800 (longer at most
    1333). On train2017 (117,266 annotated images) that is 7,330 iterations an
    epoch, 190,580 in all. :meth:`DetectionTrainSettings.scaled` builds it for
    any dataset size and batch (linear scaling: rate x batch / 16, the same
    epochs), and shortens it to ``iterations`` with the steps at the same
    fractions of the run.
What differs from torchvision's reference
    Batches are drawn in a seeded random order without its grouping of
    images by aspect ratio (``--aspect-ratio-group-factor 3``); one process
    holds the whole batch (the paper: 2 images on each of 8 GPUs, so each
    BatchNorm normalised over 2 images); the losses are torchvision's (their
    sum is minimised), as there.
Determinism and resuming
    Batch ``i`` is a function of ``(seed, i)`` alone: the annotated images
    are visited epoch by epoch, epoch ``e`` in the order (and with the flips)
    drawn from ``derive_seed(seed, "epoch", e)``, which also gives every
    iteration the seed of the detector's own random choices (the anchors and
    proposals the RPN and box heads sample). Every ``checkpoint_every``
    iterations the output folder gets ``checkpoint.pt`` (detector, optimiser,
    iteration, the loss sums of the history row in progress, fingerprint),
    written atomically under a writer lock, and ``history.json`` /
    ``history.csv`` (one row per ``log_every`` iterations: learning rate and
    the mean losses). The same call on the same folder continues after the
    last checkpoint and, on the CPU, ends bit-identical to an uninterrupted
    run. ``model.pt`` holds the final detector; :func:`load_detector` reads it.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.coco import CocoDataset, CocoWarning, load_coco
from ..errors import ArchError, ConfigError, DataError, NonFiniteScoreError, ZCBenchError
from ..runs.atomic import atomic_torch_save
from ..runs.lock import WriterLock
from ..runs.seeding import check_seed, derive_seed
from ..runs.store import SEEDING, settings_difference
from .checkpoint import CHECKPOINT, MODEL, network_file, read_torch_record
from .checkpoint import FORMAT as NETWORK_FORMAT
from .coco_eval import DetectorEvaluation, evaluate_detector, write_evaluation
from .config import Configuration
from .detection import LOSS_KEYS, TASK, build_detector, summed_losses
from .train import write_history

FORMAT = "zcbench-blockswap-detector"
FORMAT_VERSION = 1
EVAL_DIR = "eval"

# torchvision's Mask R-CNN defaults (the paper's Section 7), for 16 images per batch
REFERENCE_BATCH = 16
REFERENCE_LR = 0.02
REFERENCE_EPOCHS = 26
REFERENCE_STEP_EPOCHS = (16, 22)
REFERENCE_WARMUP = 1000  # at most; torchvision: min(1000, iterations per epoch - 1)
REFERENCE_WARMUP_FACTOR = 1e-3
COCO_TRAIN_IMAGES = 117_266  # train2017 images with annotations (torchvision drops the others)
_EPOCH = math.ceil(COCO_TRAIN_IMAGES / REFERENCE_BATCH)  # 7,330 iterations

Images = list[torch.Tensor]
Targets = list[dict[str, torch.Tensor]]


@dataclass(frozen=True)
class DetectionTrainSettings:
    """Everything of a detector's training run (defaults: the paper's, on train2017; see the module docstring).

    Attributes
    ----------
    iterations
        Optimiser steps in the run; the only setting a resumed run may change.
    batch_size
        Images per step.
    lr, steps, gamma
        Learning rate, multiplied by ``gamma`` after each iteration count in ``steps``.
    warmup_iters, warmup_factor
        Over the first ``warmup_iters`` iterations the rate rises linearly from
        ``warmup_factor * lr`` towards ``lr``.
    momentum, weight_decay
        SGD's (not Nesterov).
    bias_lr_factor, bias_weight_decay
        Learning-rate factor and weight decay of the parameters named ``bias``
        (torchvision's defaults: 1 and the same decay as every other parameter).
    flip
        Probability of flipping a training image horizontally.
    min_size, max_size
        The detector's resizing bounds (shorter side, longest side), in training and evaluation.
    detector_options
        Further keyword arguments of torchvision's ``MaskRCNN`` (e.g. ``rpn_post_nms_top_n_train``).
    seed
        Seeds the weights, the batch order and flips, and the heads' sampling.
    """

    iterations: int = REFERENCE_EPOCHS * _EPOCH
    batch_size: int = REFERENCE_BATCH
    lr: float = REFERENCE_LR
    steps: tuple[int, ...] = tuple(e * _EPOCH for e in REFERENCE_STEP_EPOCHS)
    gamma: float = 0.1
    warmup_iters: int = REFERENCE_WARMUP
    warmup_factor: float = REFERENCE_WARMUP_FACTOR
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bias_lr_factor: float = 1.0
    bias_weight_decay: float = 1e-4
    flip: float = 0.5
    min_size: int = 800
    max_size: int = 1333
    detector_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")
        for name in ("iterations", "batch_size", "min_size", "max_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_iters, int) or self.warmup_iters < 0:
            raise ConfigError(f"warmup_iters must be a non-negative integer, got {self.warmup_iters!r}")
        steps = tuple(self.steps)
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in steps) or list(steps) != sorted(set(steps)):
            raise ConfigError(f"steps must be increasing positive iteration counts, got {list(steps)}")
        object.__setattr__(self, "steps", steps)
        for name in ("lr", "gamma", "momentum", "weight_decay", "bias_lr_factor", "bias_weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if not 0 < self.warmup_factor <= 1:
            raise ConfigError(f"warmup_factor must lie in (0, 1], got {self.warmup_factor!r}")
        if not 0 <= self.flip <= 1:
            raise ConfigError(f"flip is a probability in [0, 1], got {self.flip!r}")
        if self.min_size > self.max_size:
            raise ConfigError(f"min_size {self.min_size} exceeds max_size {self.max_size}")
        options = dict(self.detector_options)
        allowed = detector_option_names()
        for name, value in options.items():
            if name not in allowed:
                raise ConfigError(f"unknown detector option {name!r}; MaskRCNN's numeric options are "
                                  f"{', '.join(sorted(allowed))}")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"detector option {name} must be a finite number, got {value!r}")
        object.__setattr__(self, "detector_options", options)

    @classmethod
    def scaled(cls, batch_size: int = REFERENCE_BATCH, iterations: int | None = None, lr: float | None = None, *,
               num_images: int = COCO_TRAIN_IMAGES, **settings: Any) -> DetectionTrainSettings:
        """The paper's schedule for ``num_images`` training images and ``batch_size`` per step.

        An epoch is ``ceil(num_images / batch_size)`` iterations; the full run
        is 26 epochs with the rate x0.1 after epochs 16 and 22, and a warm-up
        over min(1000, epoch - 1) iterations, as torchvision's reference. The
        learning rate is ``0.02 * batch_size / 16`` unless ``lr`` is given.
        ``iterations`` shortens (or stretches) the run, the steps kept at 16/26
        and 22/26 of it, the warm-up within it. ``settings`` set any other field.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_images, int) or isinstance(num_images, bool) or num_images < 1:
            raise ConfigError(f"num_images must be a positive integer, got {num_images!r}")
        epoch = math.ceil(num_images / batch_size)
        full = REFERENCE_EPOCHS * epoch
        n = full if iterations is None else iterations
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
        steps = sorted({max(1, round(e * epoch * n / full)) for e in REFERENCE_STEP_EPOCHS})
        defaults: dict[str, Any] = {"steps": tuple(s for s in steps if s < n) or (n,),
                                    "warmup_iters": min(REFERENCE_WARMUP, epoch - 1, n - 1)}
        return cls(iterations=n, batch_size=batch_size,
                   lr=REFERENCE_LR * batch_size / REFERENCE_BATCH if lr is None else lr, **{**defaults, **settings})

    def lr_at(self, iteration: int) -> float:
        """Learning rate of (0-based) ``iteration``: warm-up, then ``lr * gamma ** (steps passed)``."""
        rate = self.lr * self.gamma ** bisect.bisect_right(self.steps, iteration)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            rate *= self.warmup_factor * (1.0 - alpha) + alpha
        return rate

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must share with these settings to be resumed (all but ``iterations``)."""
        out = asdict(self)
        del out["iterations"]
        out["steps"] = list(self.steps)
        return out


@lru_cache(maxsize=1)
def detector_option_names() -> frozenset[str]:
    """The numeric keyword arguments of torchvision's ``MaskRCNN`` (RPN and box-head sizes and thresholds)."""
    import inspect

    from torchvision.models.detection import FasterRCNN, MaskRCNN

    names = set()
    for cls in (MaskRCNN, FasterRCNN):
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if isinstance(p.default, (int, float)) and not isinstance(p.default, bool) and name not in (
                    "min_size", "max_size"):
                names.add(name)
    return frozenset(names)


# -- the data -------------------------------------------------------------------------------------
def open_detection_data(root: str | os.PathLike | None = None, split: str = "train2017", *,
                        annotations: str | os.PathLike | None = None,
                        images: str | os.PathLike | None = None) -> CocoDataset:
    """A COCO-layout data set: ``annotations`` (an instances JSON) with its ``images`` folder, else ``split``
    under the data root (``coco/annotations/instances_<split>.json``, or the COCO sample).

    Boxes without area are dropped, as :func:`~zc_proxies.data.coco.load_coco` does (with a warning).
    """
    if (annotations is None) != (images is None):
        raise ConfigError("give both an annotation file and its image folder (--annotations and --images), "
                          "or neither to read the split under the data root")
    if annotations is None:
        return load_coco(root, split)
    data = CocoDataset(annotations, images, skip_degenerate=True)
    if data.skipped:
        import warnings

        warnings.warn(f"{data.name}: dropped {data.skipped} non-crowd annotations whose boxes have no area "
                      "inside their image", CocoWarning, stacklevel=2)
    return data


def annotation_digest(path: str | os.PathLike) -> str:
    """A short SHA-256 of the annotation file (identifies a training set in a checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def check_head(config: Configuration, data: CocoDataset) -> None:
    """Refuse a head too small for the data's category ids, or a skeleton that is not a detection backbone."""
    if config.spec.family != "resnet":
        raise ArchError(f"a detector needs a ResNet configuration (a 'blockswap search --dataset coco' winner), "
                        f"not {config.net}")
    top = max(data.categories, default=0)
    if top >= config.num_classes:
        raise DataError(f"{data.name} has category ids up to {top}, but the configuration's head has "
                        f"{config.num_classes} classes; use a configuration with at least {top + 1}")


@lru_cache(maxsize=4)
def _epoch_plan(seed: int, epoch: int, n: int, flip: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(derive_seed(seed, "epoch", epoch))
    order = g.permutation(n)
    flips = g.random(n) < flip
    seeds = g.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    return order, flips, seeds


def batch_plan(settings: DetectionTrainSettings, pool_size: int, iteration: int) -> tuple[list[tuple[int, bool]], int]:
    """The (pool position, flipped) pairs of batch ``iteration``, and the seed of the heads' sampling in it.

    Position ``p = iteration * batch_size + k`` of the stream of images is
    entry ``p % pool_size`` of epoch ``p // pool_size``'s order.
    """
    picks = []
    seed = 0
    for k in range(settings.batch_size):
        p = iteration * settings.batch_size + k
        order, flips, seeds = _epoch_plan(settings.seed, p // pool_size, pool_size, settings.flip)
        j = p % pool_size
        picks.append((int(order[j]), bool(flips[j])))
        if k == 0:
            seed = int(seeds[j])
    return picks, seed


def flip_horizontally(image: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The image mirrored left-right, with its boxes and masks mirrored to match."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, 0], boxes[:, 2] = width - target["boxes"][:, 2], width - target["boxes"][:, 0]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


class TrainingBatches(torch.utils.data.Dataset):
    """Item ``k``: batch ``start + k`` of a run as (images, targets with boxes/labels/masks, sampling seed)."""

    def __init__(self, data: CocoDataset, pool: Sequence[int], settings: DetectionTrainSettings, start: int) -> None:
        self.data, self.pool, self.settings, self.start = data, list(pool), settings, start

    def __len__(self) -> int:
        return max(self.settings.iterations - self.start, 0)

    def __getitem__(self, k: int) -> tuple[Images, Targets, int]:
        picks, seed = batch_plan(self.settings, len(self.pool), self.start + k)
        images, targets = [], []
        for position, flipped in picks:
            image, target = self.data.load(self.pool[position])
            target = {key: target[key] for key in ("boxes", "labels", "masks")}
            if flipped:
                image, target = flip_horizontally(image, target)
            images.append(image)
            targets.append(target)
        return images, targets, seed


def _as_is(item: Any) -> Any:
    return item


# -- files --------------------------------------------------------------------------------------------
def detector_record(detector: nn.Module, config: Configuration, settings: DetectionTrainSettings) -> dict[str, Any]:
    """What identifies a trained detector in a file: backbone configuration, detector options and weights."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "task": TASK, "net": config.net,
            "blocks": list(config.blocks), "num_classes": config.num_classes, "min_size": settings.min_size,
            "max_size": settings.max_size, "detector_options": dict(settings.detector_options),
            "state_dict": {k: v.detach().cpu().clone() for k, v in detector.state_dict().items()}}


def read_detector_record(path: str | os.PathLike, what: str = "detector file") -> dict[str, Any]:
    """Load a detector file or checkpoint and check its keys (raises DataError naming the file)."""
    def wrong_format(obj: Any) -> str:
        hint = (" (it is a classification network; train a detector with 'zcbench blockswap train-detector')"
                if isinstance(obj, dict) and obj.get("format") == NETWORK_FORMAT else "")
        return f"is not a zcbench BlockSwap detector file{hint}"

    return read_torch_record(path, what, FORMAT,
                             ("net", "blocks", "num_classes", "min_size", "max_size", "state_dict"), wrong_format)


def load_detector(path: str | os.PathLike, device: str | torch.device = "cpu", *, min_size: int | None = None,
                  max_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The detector stored at ``path`` (a ``model.pt`` or a training run's folder) in eval mode, and its record.

    ``min_size`` / ``max_size`` override the stored resizing bounds (evaluation at another scale).
    """
    path = network_file(path)
    record = read_detector_record(path)
    try:
        config = Configuration.create(record["net"], record["blocks"], record["num_classes"])
        detector = build_detector(config, seed=0, min_size=min_size or record["min_size"],
                                  max_size=max_size or record["max_size"], **record.get("detector_options", {}))
        detector.load_state_dict(record["state_dict"])
    except (ZCBenchError, RuntimeError, TypeError) as exc:
        raise DataError(f"detector file {str(path)!r}: {str(exc).splitlines()[0]}") from exc
    return detector.to(device).eval(), record


# -- the training loop --------------------------------------------------------------------------------
@dataclass
class DetectorTrainResult:
    """The trained detector, its history rows, the iteration it resumed from, and the evaluation (if any)."""

    detector: nn.Module
    history: list[dict[str, Any]]
    resumed_from: int
    out: Path
    evaluation: DetectorEvaluation | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def _param_groups(detector: nn.Module, settings: DetectionTrainSettings) -> list[dict[str, Any]]:
    weights, biases = [], []
    for name, p in detector.named_parameters():
        if p.requires_grad:
            (biases if name.endswith(".bias") else weights).append(p)
    return [{"params": weights, "weight_decay": settings.weight_decay, "lr_factor": 1.0},
            {"params": biases, "weight_decay": settings.bias_weight_decay, "lr_factor": settings.bias_lr_factor}]


def _fingerprint(config: Configuration, data: CocoDataset, pool: Sequence[int],
                 settings: DetectionTrainSettings) -> dict[str, Any]:
    import json

    fp = {"kind": "detector", "task": TASK, "net": config.net, "blocks": list(config.blocks),
          "num_classes": config.num_classes, "settings": settings.fingerprint(),
          "data": {"name": data.name, "images": len(pool), "annotations": annotation_digest(data.path)},
          "seeding": SEEDING}
    return json.loads(json.dumps(fp))


def _new_pending() -> dict[str, Any]:
    return {"count": 0, "seconds": 0.0, "loss": 0.0, **{k: 0.0 for k in LOSS_KEYS}}


def train_detector(config: Configuration, data: CocoDataset, settings: DetectionTrainSettings,
                   out: str | os.PathLike, *, device: str | torch.device = "cpu", workers: int = 0,
                   checkpoint_every: int = 500, log_every: int = 20, eval_data: CocoDataset | None = None,
                   eval_limit: int | None = None, progress: bool = True,
                   on_log: Callable[[dict[str, Any]], None] | None = None) -> DetectorTrainResult:
    """Train Mask R-CNN over ``config``'s backbone on ``data``, resumably (see the module docstring).

    Parameters
    ----------
    config
        The backbone: a ResNet-34 configuration (a COCO search's winner file);
        its ``num_classes`` is the head size (91 for COCO category ids).
    data
        The training set; images with at least one non-crowd instance are used.
    settings
        The schedule (:meth:`DetectionTrainSettings.scaled` for another batch size or length).
    out
        Output folder: checkpoint, history and, when done, ``model.pt`` (and
        ``eval/`` with ``eval_data``). An existing checkpoint of the same run is resumed.
    device, workers
        Where to train; processes loading batches (0: the training process).
        Neither changes the result.
    checkpoint_every, log_every
        Iterations between checkpoints and between history rows.
    eval_data, eval_limit
        Evaluate the final detector on ``eval_data`` (its first ``eval_limit``
        images) with pycocotools; written to ``out/eval/``.
    on_log
        Called with each history row.

    Raises
    ------
    ArchError
        A configuration that is not a four-stage ResNet.
    DataError
        No annotated training images, a head too small for the categories, or a
        checkpoint of a different run in ``out``.
    NonFiniteScoreError
        The loss became NaN or infinite (the last checkpoint is kept).
    """
    for name, value, least in (("checkpoint_every", checkpoint_every, 1), ("log_every", log_every, 1),
                               ("workers", workers, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    check_head(config, data)
    pool = data.annotated()
    if not pool:
        raise DataError(f"{data.name} has no image with a non-crowd annotation to train on")
    device = torch.device(device)
    out = Path(out)
    detector = build_detector(config, seed=derive_seed(settings.seed, "weights"), min_size=settings.min_size,
                              max_size=settings.max_size, **settings.detector_options).to(device)
    optimizer = torch.optim.SGD(_param_groups(detector, settings), lr=settings.lr, momentum=settings.momentum)
    fingerprint = _fingerprint(config, data, pool, settings)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    with WriterLock(ckpt_path):  # one run per output folder at a time
        start, history, pending = 0, [], _new_pending()
        if ckpt_path.exists():
            state = read_detector_record(ckpt_path, "checkpoint")
            diffs = settings_difference(state.get("fingerprint"), fingerprint)
            if diffs:
                raise DataError(f"checkpoint {str(ckpt_path)!r} belongs to a different run ({'; '.join(diffs[:6])}); "
                                "use another output folder, or rerun with the stored settings to resume")
            start = int(state["iteration"])
            if start > settings.iterations:
                raise ZCBenchError(f"checkpoint {str(ckpt_path)!r} has already {start} iterations, more than the "
                                   f"{settings.iterations} asked for; use another output folder")
            try:
                detector.load_state_dict(state["state_dict"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise DataError(f"checkpoint {str(ckpt_path)!r} does not fit this run: {exc}") from exc
            history, pending = list(state["history"]), dict(state["pending"])
            write_history(out, history)

        def save_checkpoint(iteration: int) -> None:
            atomic_torch_save({**detector_record(detector, config, settings), "kind": "checkpoint",
                               "iteration": iteration, "optimizer": optimizer.state_dict(), "pending": pending,
                               "history": history, "settings": asdict(settings), "fingerprint": fingerprint},
                              ckpt_path)
            write_history(out, history)

        batches = torch.utils.data.DataLoader(TrainingBatches(data, pool, settings, start), batch_size=None,
                                              shuffle=False, num_workers=workers, collate_fn=_as_is)
        bar = None
        if progress and start < settings.iterations:
            from tqdm.auto import tqdm

            bar = tqdm(total=settings.iterations, initial=start, unit="it", leave=False, dynamic_ncols=True,
                       desc=f"train Mask R-CNN ({config.net}) on {data.name}")
        cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
        detector.train()
        try:
            with torch.random.fork_rng(devices=cuda):  # the caller's generators are left as they were
                t0 = time.perf_counter()
                for k, (images, targets, seed) in enumerate(batches):
                    i = start + k
                    lr = settings.lr_at(i)
                    for group in optimizer.param_groups:
                        group["lr"] = lr * group["lr_factor"]
                    torch.manual_seed(seed)
                    images = [im.to(device) for im in images]
                    targets = [{key: v.to(device) for key, v in t.items()} for t in targets]
                    losses = detector(images, targets)
                    loss = summed_losses(losses, targets)
                    value = float(loss.item())
                    if not math.isfinite(value):
                        raise NonFiniteScoreError(f"the training loss became {value} at iteration {i + 1} (lr {lr:.4g}); "
                                                  "the last checkpoint is kept")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    pending["count"] += 1
                    pending["loss"] += value
                    for key in LOSS_KEYS:
                        pending[key] += float(losses[key].item()) if key in losses else 0.0
                    now = time.perf_counter()
                    pending["seconds"] += now - t0
                    t0 = now
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.3g}", refresh=False)
                    done = i + 1
                    if done % log_every == 0 or done == settings.iterations:
                        n = pending["count"]
                        row = {"iteration": done, "lr": lr, "images": done * settings.batch_size,
                               "loss": pending["loss"] / n, **{key: pending[key] / n for key in LOSS_KEYS},
                               "seconds": round(pending["seconds"], 3)}
                        history.append(row)
                        pending = _new_pending()
                        if on_log is not None:
                            on_log(row)
                    if done % checkpoint_every == 0 or done == settings.iterations:
                        save_checkpoint(done)
        finally:
            if bar is not None:
                bar.close()
        atomic_torch_save({**detector_record(detector, config, settings), "kind": "model",
                           "iterations": settings.iterations, "history": history, "settings": asdict(settings),
                           "fingerprint": fingerprint}, out / MODEL)
        evaluation = None
        if eval_data is not None:
            check_head(config, eval_data)
            evaluation = evaluate_detector(detector, eval_data, device=device, limit=eval_limit, progress=progress)
            evaluation.extra.update(model=str(out / MODEL), iterations=settings.iterations)
            write_evaluation(evaluation, out / EVAL_DIR)
        return DetectorTrainResult(detector.eval(), history, start, out, evaluation)

