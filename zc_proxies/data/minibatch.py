"""Seeded minibatches of an :class:`~zc_proxies.data.images.ImageSet`, as every proxy score sees them.

A minibatch is a function of ``(images, batch size, seed, augment, sampling)``
alone, so each architecture's batch is the same whatever worker, order or
machine scores it.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .images import ImageSet, decode_image


def normalise(pixels: np.ndarray, data: ImageSet) -> torch.Tensor:
    """uint8 images (N, H, W, 3) as a float tensor (N, 3, H, W), normalised with ``data``'s mean and std."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32) / 255.0).permute(0, 3, 1, 2)
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _crop(img: np.ndarray, size: int, pad: int, rng: np.random.Generator | None) -> np.ndarray:
    """Pad-and-random-crop plus flip when ``rng`` is given, else a centre crop."""
    if rng is not None and pad:
        img = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    h, w = img.shape[:2]
    if h < size or w < size:
        raise DataError(f"image of {h}x{w} pixels is smaller than the {size}x{size} crop")
    if rng is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    out = img[top:top + size, left:left + size]
    if rng is not None and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


SAMPLINGS = ("uniform", "balanced")


def balanced_indices(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``batch_size`` distinct image indices with as equal a count per class as the batch allows.

    Every class present in ``labels`` gets ``batch_size // C`` images; the
    ``batch_size % C`` left over go to as many classes drawn at random (among
    those with an image to spare), one each. The class counts, and so the
    number of same-class pairs, are then the same for every draw;
    label-grouping proxies such as ``epe_nas`` lose the variance that a
    uniform draw's random class mix adds to them.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    per_class, extra = divmod(batch_size, len(classes))
    short = [f"class {c} has {n} < {per_class}" for c, n in zip(classes, counts) if n < per_class]
    spare = np.flatnonzero(counts > per_class)
    if short or len(spare) < extra:
        why = "; ".join(short[:5]) or f"only {len(spare)} classes have more than {per_class} images, {extra} must"
        raise DataError(f"a class-balanced batch of {batch_size} over {len(classes)} classes needs more images "
                        f"per class: {why}")
    want = np.full(len(classes), per_class, dtype=np.int64)
    want[rng.choice(spare, size=extra, replace=False)] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=w, replace=False) for c, w in zip(classes, want) if w]
    return np.sort(np.concatenate(picked))


def minibatch(data: ImageSet, batch_size: int, seed: int, *, augment: bool = True,
              sampling: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded minibatch: ``batch_size`` distinct images, normalised, with integer targets.

    The same ``(data, batch_size, seed, augment, sampling)`` always gives the
    same tensors. ``sampling="uniform"`` draws the images uniformly without
    replacement (each architecture then sees its own random class mix, as in
    NAS-Bench-Suite-Zero); ``"balanced"`` draws an equal number per class
    (:func:`balanced_indices`, the "grasp" data loading of zero-cost-nas).
    With ``augment`` the usual training augmentation is applied (random crop
    after zero padding, and horizontal flip), drawn from the same seed.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    if batch_size > len(data):
        raise DataError(f"{data.name} at {data.source!r} has {len(data)} images, fewer than batch size {batch_size}")
    if sampling not in SAMPLINGS:
        raise ConfigError(f"unknown minibatch sampling {sampling!r} (known: {', '.join(SAMPLINGS)})")
    rng = np.random.default_rng(seed)
    if sampling == "balanced":
        idx = balanced_indices(data.labels, batch_size, rng)
    else:
        idx = np.sort(rng.choice(len(data), size=batch_size, replace=False))
    aug = rng if augment else None
    crops = []
    for i in idx:
        img = data.images[i] if isinstance(data.images, np.ndarray) else decode_image(data.images[i], data.resize)
        crops.append(_crop(np.asarray(img), data.size, data.pad, aug))
    return normalise(np.stack(crops), data), torch.from_numpy(data.labels[idx].astype(np.int64))
