"""Training data: CIFAR images held in memory, ImageNet JPEG folders, a seeded holdout split, epoch minibatches.

CIFAR training images are augmented as in BlockSwap's CIFAR recipe (``train.py`` of
BayesWatch/pytorch-blockswap): zero-padding 4 pixels, a random 32x32 crop and
a horizontal flip with probability 1/2, then normalised; BlockSwap's code then
applies Cutout (one 16x16 square, centred uniformly on the image and clipped
at its border, set to zero after normalisation), which ``cutout=0`` turns off.
Evaluation images are only normalised.

ImageNet (``dataset="imagenet"``) is read from JPEG folders and augmented by
:mod:`.imagenet_train` (RandomResizedCrop + flip for training, resize + centre
crop for evaluation) through a DataLoader with ``workers`` processes.
:func:`train_batches` and :func:`eval_batches` pick the pipeline from the image
set: decoded pixels in memory (CIFAR) or image files (ImageNet).

The order and augmentation of epoch ``e`` are drawn from a generator seeded by
``derive_seed(seed, "epoch", e)`` alone, so a resumed run sees the same batches as an
uninterrupted one; :func:`data_digest` identifies the images it must train on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, MissingDataError, UnknownNameError
from ..runs.seeding import rng
from .images import ImageSet, data_root, load_cifar
from .minibatch import normalise

DATASETS = ("cifar10", "cifar100", "imagenet")


def subset(data: ImageSet, indices: np.ndarray, name: str | None = None) -> ImageSet:
    """The images of ``data`` at ``indices`` (in that order)."""
    indices = np.asarray(indices, dtype=np.int64)
    images = data.images[indices] if isinstance(data.images, np.ndarray) else [data.images[i] for i in indices]
    return replace(data, name=name or data.name, images=images, labels=data.labels[indices])


def split_holdout(data: ImageSet, holdout: int, seed: int, limit: int | None = None) -> tuple[ImageSet, ImageSet | None]:
    """Split ``data`` into training images and ``holdout`` evaluation images, disjoint and seeded.

    A permutation drawn from ``seed`` puts its first ``holdout`` images in the
    evaluation set and the next ``limit`` (all the rest when None) in the
    training set; both keep the file order.
    """
    if not isinstance(holdout, int) or holdout < 0:
        raise DataError(f"--holdout must be a non-negative image count, got {holdout!r}")
    if holdout >= len(data):
        raise DataError(f"{data.name} has {len(data)} images: holding out {holdout} leaves none to train on")
    available = len(data) - holdout
    if limit is not None and not 1 <= limit <= available:
        raise DataError(f"asked to train on {limit} images, but {data.name} has {available} after holding out {holdout}")
    perm = rng(seed, "holdout").permutation(len(data))
    held = np.sort(perm[:holdout])
    rest = np.sort(perm[holdout:holdout + (available if limit is None else limit)])
    train = subset(data, rest) if limit is not None or holdout else data
    return train, (subset(data, held, f"{data.name}-holdout") if holdout else None)


def load_training_data(dataset: str = "cifar10", root: str | os.PathLike | None = None, *, holdout: int = 0,
                       limit: int | None = None, seed: int = 0, test: bool = True, image_size: int | None = None,
                       resize: int | None = None,
                       num_classes: int | None = None) -> tuple[ImageSet, dict[str, ImageSet], list[str]]:
    """Training images, evaluation sets and notes for a CIFAR or ImageNet run.

    Returns ``(train, eval_sets, notes)``: ``eval_sets`` has ``"holdout"``
    (``holdout`` training images kept out, see :func:`split_holdout`) when
    ``holdout > 0``, and for CIFAR ``"test"`` (the official test batch) when
    ``test`` and the file is present, for ImageNet ``"val"`` (the ``val/``
    folder, see :func:`~.imagenet_train.load_imagenet_training`); a missing
    test or validation set gives a note instead.

    ``image_size`` (224), ``resize`` (256, the evaluation resize) and
    ``num_classes`` (1000) apply to ImageNet only; CIFAR images are used at
    their own 32 pixels and classes, so giving them there is a ConfigError.
    """
    if dataset not in DATASETS:
        raise UnknownNameError(f"training reads {', '.join(DATASETS)}; got dataset {dataset!r}")
    if dataset == "imagenet":
        from .imagenet_train import EVAL_RESIZE, IMAGE_SIZE, load_imagenet_training

        return load_imagenet_training(root, holdout=holdout, limit=limit, seed=seed, test=test,
                                      size=IMAGE_SIZE if image_size is None else image_size,
                                      resize=EVAL_RESIZE if resize is None else resize,
                                      num_classes=1000 if num_classes is None else num_classes)
    given = [name for name, value in (("image_size", image_size), ("resize", resize), ("num_classes", num_classes))
             if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} apply to ImageNet only: CIFAR trains on its own 32x32 images and classes")
    base = data_root(root)
    classes = 10 if dataset == "cifar10" else 100
    full = load_cifar(base, classes, "train")
    train, held = split_holdout(full, holdout, seed, limit)
    evals: dict[str, ImageSet] = {}
    notes: list[str] = []
    if held is not None:
        evals["holdout"] = held
    if test:
        try:
            evals["test"] = load_cifar(base, classes, "test")
        except MissingDataError as exc:
            notes.append(f"no test set evaluated: {exc}")
    return train, evals, notes


def data_digest(data: ImageSet) -> str:
    """A short hash of the images and labels (what a resumed run must train on again).

    For pixels in memory it hashes the pixels; for image files, their paths
    relative to the set's folder (reading every ImageNet JPEG at each start
    would take long), so a data root that moves keeps its digest.
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    if isinstance(data.images, np.ndarray):
        h.update(np.ascontiguousarray(data.images).tobytes())
    else:
        base = Path(data.source)
        h.update("\n".join(_relative(Path(f), base) for f in data.images).encode())
    return h.hexdigest()[:16]


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def is_file_backed(data: ImageSet) -> bool:
    """Whether ``data`` is a list of image files (ImageNet) rather than decoded pixels in memory (CIFAR)."""
    return not isinstance(data.images, np.ndarray)


def in_memory(data: ImageSet) -> np.ndarray:
    """The decoded pixels of ``data`` (a DataError for a folder of image files)."""
    if is_file_backed(data):
        raise DataError(f"{data.name} at {data.source!r} is a folder of image files, not pixels in memory; read it "
                        "with train_batches / eval_batches")
    return data.images


def check_trainable(data: ImageSet) -> None:
    """Raise a DataError unless ``data`` can feed a training run: pixels in memory, or image files of a known size."""
    if is_file_backed(data):
        if not data.size or (data.resize is not None and data.resize < data.size):
            raise DataError(f"{data.name}: image files need a crop size and an evaluation resize of at least that "
                            f"size (got size {data.size}, resize {data.resize})")
    else:
        in_memory(data)


def training_transform(data: ImageSet) -> dict[str, object]:
    """What turns ``data``'s image files into network inputs (goes into a run's fingerprint); {} for pixels in memory."""
    if not is_file_backed(data):
        return {}
    from .imagenet_train import CROP_RATIO, CROP_SCALE

    return {"size": data.size, "resize": data.resize, "mean": list(data.mean), "std": list(data.std),
            "train": f"random-resized-crop scale {list(CROP_SCALE)} ratio {[round(r, 6) for r in CROP_RATIO]} + flip",
            "eval": "resize shorter side + centre crop"}


def train_batches(data: ImageSet, batch_size: int, seed: int, epoch: int, cutout: int = 0, *, workers: int = 0,
                  pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch ``epoch``'s augmented minibatches: a function of ``(data, batch_size, seed, epoch, cutout)`` alone.

    Pixels in memory (CIFAR) are augmented here, in this process (``workers``
    and ``pin_memory`` are unused); image files (ImageNet) go through
    :func:`~.imagenet_train.train_loader` with ``workers`` processes, which
    yields the same batches for any ``workers``.
    """
    if is_file_backed(data):
        from .imagenet_train import train_loader

        yield from train_loader(data, batch_size, seed, epoch, cutout=cutout, workers=workers, pin_memory=pin_memory)
        return
    pixels = in_memory(data)
    size, pad = data.size, data.pad
    gen = rng(seed, "epoch", epoch)
    order = gen.permutation(len(data))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        n = len(idx)
        padded = np.pad(pixels[idx], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        h, w = padded.shape[1:3]
        tops = gen.integers(0, h - size + 1, size=n)
        lefts = gen.integers(0, w - size + 1, size=n)
        flips = gen.random(n) < 0.5
        centres = gen.integers(0, size, size=(n, 2))  # drawn even without cutout: crops do not depend on it
        crops = np.empty((n, size, size, 3), dtype=np.uint8)
        for j in range(n):
            crop = padded[j, tops[j]:tops[j] + size, lefts[j]:lefts[j] + size]
            crops[j] = crop[:, ::-1] if flips[j] else crop
        x = normalise(crops, data)
        if cutout:
            half = cutout // 2
            for j, (cy, cx) in enumerate(centres):
                x[j, :, max(cy - half, 0):min(cy + half, size), max(cx - half, 0):min(cx + half, size)] = 0.0
        yield x, torch.from_numpy(data.labels[idx].astype(np.int64))


def eval_batches(data: ImageSet, batch_size: int, *, workers: int = 0,
                 pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The images in file order, unaugmented (a centre crop when larger than the network input).

    Image files are resized (shorter side to ``data.resize``) and centre-cropped
    by :func:`~.imagenet_train.eval_loader` with ``workers`` processes.
    """
    if is_file_backed(data):
        from .imagenet_train import eval_loader

        yield from eval_loader(data, batch_size, workers=workers, pin_memory=pin_memory)
        return
    pixels = in_memory(data)
    size = data.size
    top, left = (pixels.shape[1] - size) // 2, (pixels.shape[2] - size) // 2
    for start in range(0, len(data), batch_size):
        chunk = pixels[start:start + batch_size, top:top + size, left:left + size]
        yield normalise(chunk, data), torch.from_numpy(data.labels[start:start + batch_size].astype(np.int64))
