"""Training data: CIFAR images held in memory, a seeded holdout split, and epoch minibatches.

Training images are augmented as in BlockSwap's CIFAR recipe (``train.py`` of
BayesWatch/pytorch-blockswap): zero-padding 4 pixels, a random 32x32 crop and
a horizontal flip with probability 1/2, then normalised; BlockSwap's code then
applies Cutout (one 16x16 square, centred uniformly on the image and clipped
at its border, set to zero after normalisation), which ``cutout=0`` turns off.
Evaluation images are only normalised.

The order and augmentation of epoch ``e`` are drawn from a generator seeded by
``derive_seed(seed, "epoch", e)`` alone, so a resumed run sees the same batches as an
uninterrupted one; :func:`data_digest` identifies the images it must train on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch

from ..errors import DataError, MissingDataError, UnknownNameError
from ..runs.seeding import rng
from .images import ImageSet, data_root, load_cifar
from .minibatch import normalise

DATASETS = ("cifar10", "cifar100")


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
                       limit: int | None = None, seed: int = 0,
                       test: bool = True) -> tuple[ImageSet, dict[str, ImageSet], list[str]]:
    """Training images, evaluation sets and notes for a CIFAR run.

    Returns ``(train, eval_sets, notes)``: ``eval_sets`` has ``"holdout"``
    (``holdout`` training images kept out, see :func:`split_holdout`) when
    ``holdout > 0`` and ``"test"`` (the official test batch) when ``test`` and
    the file is present; a missing test batch gives a note instead.
    """
    if dataset not in DATASETS:
        raise UnknownNameError(f"training reads CIFAR: dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
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
    """A short hash of the images and labels (what a resumed run must train on again)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.labels, dtype=np.int64).tobytes())
    if isinstance(data.images, np.ndarray):
        h.update(np.ascontiguousarray(data.images).tobytes())
    else:
        h.update("\n".join(map(str, data.images)).encode())
    return h.hexdigest()[:16]


def in_memory(data: ImageSet) -> np.ndarray:
    if not isinstance(data.images, np.ndarray):
        raise DataError(f"training reads images held in memory (CIFAR); {data.name} at {data.source!r} is a folder "
                        "of image files")
    return data.images


def train_batches(data: ImageSet, batch_size: int, seed: int, epoch: int,
                  cutout: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch ``epoch``'s augmented minibatches: a function of ``(data, batch_size, seed, epoch, cutout)`` alone."""
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


def eval_batches(data: ImageSet, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The images in file order, unaugmented (a centre crop when larger than the network input)."""
    pixels = in_memory(data)
    size = data.size
    top, left = (pixels.shape[1] - size) // 2, (pixels.shape[2] - size) // 2
    for start in range(0, len(data), batch_size):
        chunk = pixels[start:start + batch_size, top:top + size, left:left + size]
        yield normalise(chunk, data), torch.from_numpy(data.labels[start:start + batch_size].astype(np.int64))
