"""ImageNet training data: JPEG folders, the standard augmentation, seeded epochs through a DataLoader.

Layouts read (under the data root, as :func:`zc_proxies.data.images.find_folder` finds folders):

* ``imagenet/train/`` and ``imagenet/val/``: the training and validation images, each an
  ImageFolder tree (``<wnid>/<file>.JPEG``) or a flat folder with ``labels.csv``
  (``file,class_index``), as :func:`~zc_proxies.data.images.load_image_folder` reads them. This is
  the layout BlockSwap's ``main.py`` reads (``--imagenet_loc`` with ``train`` and ``val``
  folders). ``val/`` is evaluated after every epoch as ``"val"``; in ImageFolder layout its class
  folders are matched to the training folders by name, so a validation tree may hold a subset of
  the classes.
* ``imagenet/`` itself as one ImageFolder tree or ``labels.csv`` folder: training images only.
* ``imagenet-sample/`` (250 JPEGs, one per class, ``labels.csv``), used when no ``imagenet/`` is
  there: training images only, for trying the pipeline out.

Augmentation (the ``imagenet`` branch of ``main.py`` of BayesWatch/pytorch-blockswap, which is
torchvision's ``RandomResizedCrop(224)``, ``RandomHorizontalFlip()``, ``Normalize`` with the
ImageNet mean and std; the paper's Section 6 calls it "standard crop + flip augmentation"):

training
    a random crop of area ``U(0.08, 1)`` times the image's area and aspect ratio
    ``exp(U(log 3/4, log 4/3))`` (up to ten draws; if none fits, the largest centred crop whose
    aspect ratio lies in that range), resized to ``size`` x ``size`` (bilinear), flipped
    horizontally with probability 1/2, then normalised (:data:`~.images.IMAGENET_STATS`);
    optionally Cutout (one ``cutout`` x ``cutout`` square set to zero after normalisation, as in
    the CIFAR recipe; off in the ImageNet recipe).
evaluation
    the shorter side resized to ``resize`` (256; bilinear), the centre ``size`` x ``size`` crop
    (224), normalised. The resize is :func:`~.images.decode_image`'s, which rounds the longer
    side where torchvision's ``Resize`` truncates it: at most one pixel apart, before the crop.

Determinism. Epoch ``e``'s order and every image's augmentation come from one generator seeded
with ``derive_seed(seed, "epoch", e)`` in the main process: it draws the permutation and one
64-bit seed per position, and each image is augmented from its own seed alone. The batches are
therefore a function of ``(images, batch size, seed, epoch)`` whatever ``workers`` is, and a
resumed run sees exactly the batches an uninterrupted one saw. The DataLoader gets its own
generator too, so it draws nothing from torch's global random state.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, DataError, MissingDataError
from ..runs.seeding import derive_seed, rng
from .images import ImageSet, data_root, decode_image, find_folder, load_image_folder
from .minibatch import normalise
from .sources import IMAGENET, IMAGENET_SAMPLE

#: Network input side and the evaluation resize of the ImageNet recipe (``main.py``).
IMAGE_SIZE = 224
EVAL_RESIZE = 256
#: RandomResizedCrop's range of crop area (fraction of the image) and of aspect ratio (torchvision's defaults).
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)

_SEED_CEILING = 2**63 - 1


def resized_crop_box(width: int, height: int, gen: np.random.Generator,
                     scale: tuple[float, float] = CROP_SCALE,
                     ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """The ``(left, top, crop width, crop height)`` of one RandomResizedCrop draw on a ``width`` x ``height`` image.

    Up to ten tries draw an area fraction uniformly from ``scale`` and an
    aspect ratio log-uniformly from ``ratio`` and keep the first crop that
    fits, placed uniformly; when none fits, the whole image is used, cut down
    to the nearest aspect ratio inside ``ratio`` and centred (the fallback of
    Szegedy et al.'s Inception crop as torchvision implements it).
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * gen.uniform(scale[0], scale[1])
        aspect = math.exp(gen.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(gen.integers(0, height - h + 1))
            left = int(gen.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augment(pixels: np.ndarray, size: int, gen: np.random.Generator) -> np.ndarray:
    """A RandomResizedCrop to ``size`` x ``size`` and a horizontal flip (probability 1/2) of an (H, W, 3) uint8 image."""
    from PIL import Image

    height, width = pixels.shape[:2]
    left, top, w, h = resized_crop_box(width, height, gen)
    img = Image.fromarray(pixels).resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    out = np.asarray(img, dtype=np.uint8)
    return out[:, ::-1] if gen.random() < 0.5 else out


def centre_crop(pixels: np.ndarray, size: int, where: str = "image") -> np.ndarray:
    """The centre ``size`` x ``size`` crop of an (H, W, 3) image (a DataError names ``where`` if it is smaller)."""
    height, width = pixels.shape[:2]
    if height < size or width < size:
        raise DataError(f"{where}: {height}x{width} pixels after resizing, smaller than the {size}x{size} crop; "
                        "use an evaluation resize of at least the image size")
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[top:top + size, left:left + size]


def _files(data: ImageSet) -> Sequence[Path]:
    if isinstance(data.images, np.ndarray):
        raise DataError(f"{data.name} holds decoded pixels, not image files; it is read by the in-memory pipeline")
    return data.images


class TrainImages(Dataset):
    """Augmented training images; an item is keyed by ``(image index, augmentation seed)``.

    Returns ``(normalised (3, size, size) float tensor, label)``. With
    ``cutout`` a square of that side, centred uniformly on the image and
    clipped at its border, is set to zero after normalisation. The centre is
    drawn whether or not Cutout is on, so crops and flips do not depend on it.
    """

    def __init__(self, data: ImageSet, cutout: int = 0) -> None:
        self.data = data
        self.files = _files(data)
        self.cutout = cutout

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        gen = np.random.default_rng(seed)
        size = self.data.size
        pixels = augment(decode_image(self.files[index], None), size, gen)
        x = normalise(pixels[None], self.data)[0]
        cy, cx = (int(v) for v in gen.integers(0, size, size=2))
        if self.cutout:
            half = self.cutout // 2
            x[:, max(cy - half, 0):min(cy + half, size), max(cx - half, 0):min(cx + half, size)] = 0.0
        return x, int(self.data.labels[index])


class EvalImages(Dataset):
    """Evaluation images in file order: shorter side resized to ``data.resize``, centre crop, normalised."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data
        self.files = _files(data)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        pixels = centre_crop(decode_image(path, self.data.resize), self.data.size, str(path))
        return normalise(pixels[None], self.data)[0], int(self.data.labels[index])


def epoch_plan(n: int, batch_size: int, seed: int, epoch: int) -> list[list[tuple[int, int]]]:
    """Epoch ``epoch``'s batches as lists of ``(image index, augmentation seed)``: every image once.

    A function of its four arguments alone (see the module docstring); the
    last batch may be smaller.
    """
    gen = rng(seed, "epoch", epoch)
    order = gen.permutation(n)
    seeds = gen.integers(0, _SEED_CEILING, size=n, dtype=np.int64)
    keys = [(int(i), int(s)) for i, s in zip(order, seeds)]
    return [keys[start:start + batch_size] for start in range(0, n, batch_size)]


def _check_workers(workers: int) -> int:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"workers must be a non-negative number of data-loading processes, got {workers!r}")
    return workers


def train_loader(data: ImageSet, batch_size: int, seed: int, epoch: int, *, cutout: int = 0, workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader over epoch ``epoch``'s augmented batches (:func:`epoch_plan`), with ``workers`` processes."""
    workers = _check_workers(workers)
    return DataLoader(TrainImages(data, cutout), batch_sampler=epoch_plan(len(data), batch_size, seed, epoch),
                      num_workers=workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch)))


def eval_loader(data: ImageSet, batch_size: int, *, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over the evaluation images in file order, ``batch_size`` at a time."""
    workers = _check_workers(workers)
    return DataLoader(EvalImages(data), batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))


# -- finding and loading the images -------------------------------------------------------------------
def _class_names(folder: Path) -> list[str] | None:
    """The sorted class folders of an ImageFolder tree, or None for a ``labels.csv`` folder."""
    if (folder / "labels.csv").is_file():
        return None
    return sorted(d.name for d in folder.iterdir() if d.is_dir())


def _load_split(folder: Path, name: str, num_classes: int, size: int, resize: int) -> ImageSet:
    return load_image_folder(folder, num_classes=num_classes, size=size, resize=resize, name=name)


def _align_val(train_folder: Path, val: ImageSet, val_folder: Path) -> ImageSet:
    """Give an ImageFolder validation set the training folder's class indices (matched by folder name)."""
    train_classes, val_classes = _class_names(train_folder), _class_names(val_folder)
    if train_classes is None or val_classes is None:
        if (train_classes is None) != (val_classes is None):
            raise DataError(f"{train_folder} and {val_folder} use different layouts (one ImageFolder tree, one "
                            "labels.csv); give both the same, so their class indices agree")
        return val  # both labels.csv: the class indices are explicit
    index = {name: i for i, name in enumerate(train_classes)}
    unknown = sorted({Path(f).parent.name for f in val.images} - set(index))
    if unknown:
        raise DataError(f"{val_folder} has class folders that {train_folder} lacks: {', '.join(unknown[:5])}"
                        f"{' ...' if len(unknown) > 5 else ''}")
    labels = np.asarray([index[Path(f).parent.name] for f in val.images], dtype=np.int64)
    return replace(val, labels=labels)


def find_imagenet(root: str | os.PathLike) -> tuple[Path, Path | None, str]:
    """``(training folder, validation folder or None, name)`` of the ImageNet images under data root ``root``."""
    root = Path(root)
    for name in (IMAGENET, IMAGENET_SAMPLE):
        try:
            folder = find_folder(root, name)
        except MissingDataError:
            continue
        if (folder / "train").is_dir():
            val = folder / "val"
            return folder / "train", (val if val.is_dir() else None), name
        return folder, None, name
    raise MissingDataError(f"no ImageNet images under {str(root)!r}: expected {IMAGENET}/train/ and "
                           f"{IMAGENET}/val/ (ImageFolder trees or labels.csv folders), an {IMAGENET}/ tree, or "
                           f"{IMAGENET_SAMPLE}/ (see data/README.md)")


def load_imagenet_training(root: str | os.PathLike | None = None, *, holdout: int = 0, limit: int | None = None,
                           seed: int = 0, test: bool = True, size: int = IMAGE_SIZE, resize: int = EVAL_RESIZE,
                           num_classes: int = 1000) -> tuple[ImageSet, dict[str, ImageSet], list[str]]:
    """Training images, evaluation sets and notes for an ImageNet run (file-backed image sets).

    Returns ``(train, eval_sets, notes)`` like
    :func:`zc_proxies.data.training.load_training_data`: ``eval_sets`` has
    ``"holdout"`` (``holdout`` training images kept out, seeded) when
    ``holdout > 0`` and ``"val"`` (the ``val/`` folder) when ``test`` and the
    folder exists; otherwise a note says why there is none.

    Raises
    ------
    ConfigError
        An image size or resize that is not a positive integer, or a resize smaller than the size.
    MissingDataError
        No ImageNet folder under the root.
    """
    from .training import split_holdout

    for what, value in (("image size", size), ("evaluation resize", resize), ("class count", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"the {what} must be a positive integer, got {value!r}")
    if resize < size:
        raise ConfigError(f"the evaluation resize ({resize}) must be at least the image size ({size}): the centre "
                          "crop is cut from the resized image")
    base = data_root(root)
    train_folder, val_folder, name = find_imagenet(base)
    full = _load_split(train_folder, name, num_classes, size, resize)
    train, held = split_holdout(full, holdout, seed, limit)
    evals: dict[str, ImageSet] = {}
    notes: list[str] = []
    if held is not None:
        evals["holdout"] = held
    if test:
        if val_folder is None:
            notes.append(f"no validation set evaluated: {train_folder} has no train/ and val/ folders"
                         + (" (the ImageNet sample is training images only)" if name == IMAGENET_SAMPLE else ""))
        else:
            val = _load_split(val_folder, f"{name}-val", num_classes, size, resize)
            evals["val"] = _align_val(train_folder, val, val_folder)
    return train, evals, notes
