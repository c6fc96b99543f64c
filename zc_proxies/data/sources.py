"""Which real images feed the proxies for a benchmark dataset, and the stand-ins when they are absent.

Each benchmark dataset is scored on minibatches of its own *training* images,
found under the data root. When those images are not there, the nearest real
stand-in is used instead, never silently: a :class:`StandInWarning` is raised
(as a warning), and the stand-in is recorded in every store row
(``stand_in_for``) and in the table's footnote.

==================  ==============================  =====================================================
dataset             own images                      stand-in when absent
==================  ==============================  =====================================================
cifar10(-valid)     CIFAR-10 train                  none (an error names the missing folder)
cifar100            CIFAR-100 train                 CIFAR-10 train images, CIFAR-10 normalisation
imagenet16-120      ImageNet16 train, classes 1-120 the ImageNet-1k JPEG sample (``imagenet-sample/``,
                                                    250 images) box-downsampled to 16x16, with
                                                    ImageNet16's normalisation and 2-pixel pad-crop
imagenet            ImageNet-1k: ``imagenet/``,     none
                    else the JPEG sample
==================  ==============================  =====================================================

Stand-in labels are remapped into the space's classes deterministically: the
stand-in's distinct labels are ranked in ascending order and taken modulo the
number of classes (CIFAR-10's 0..9 stay 0..9 under 100 classes; the ImageNet
sample's 250 classes become 0..119, 120..239 -> 0..119, 240..249 -> 0..9).
The loss then sees valid, image-consistent targets; what it cannot see is the
benchmark's own label semantics, which is why the stand-in is reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDataError, UnknownNameError
from .images import IMAGENET16_STATS, ImageSet, find_folder, load_cifar, load_image_folder, load_imagenet16
from .minibatch import minibatch

IMAGENET = "imagenet"
IMAGENET_SAMPLE = "imagenet-sample"


class StandInWarning(UserWarning):
    """A dataset's own training images are absent, so a named stand-in is used."""


@dataclass(frozen=True)
class MinibatchSource:
    """The images one evaluation draws its minibatches from.

    Attributes
    ----------
    dataset
        The benchmark dataset the networks are built for (``"cifar100"``).
    name
        What the images are (``"cifar10-train"``); stored as ``data_source``.
    stand_in_for
        None for the dataset's own images, else what they replace
        (``"cifar100-train"``); stored with every row.
    num_classes
        The classifier width; every label lies in ``0..num_classes-1``.
    data
        The image set (labels already remapped for a stand-in).
    note
        One sentence for the table's footnote.
    """

    dataset: str
    name: str
    stand_in_for: str | None
    num_classes: int
    data: ImageSet
    note: str

    def batch(self, batch_size: int, seed: int, augment: bool = True,
              sampling: str = "uniform") -> tuple[torch.Tensor, torch.Tensor]:
        """The seeded minibatch for one architecture (see :func:`zc_proxies.data.minibatch.minibatch`)."""
        return minibatch(self.data, batch_size, seed, augment=augment, sampling=sampling)

    def settings(self) -> dict[str, object]:
        """The fields that go into a store's settings and rows."""
        return {"data_source": self.name, "stand_in_for": self.stand_in_for, "transform": self.data.transform()}


def remap_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels unchanged if they fit ``num_classes``, else rank of the label among the distinct ones, mod classes."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0 or (labels.min() >= 0 and labels.max() < num_classes):
        return labels
    distinct, rank = np.unique(labels, return_inverse=True)
    return (rank % num_classes).astype(np.int64)


def _stand_in(dataset: str, own: str, data: ImageSet, num_classes: int, why: str, warn: bool) -> MinibatchSource:
    labels = remap_labels(data.labels, num_classes)
    how = (f"their labels kept, as they fit {num_classes} classes" if np.array_equal(labels, data.labels) else
           f"labels remapped into {num_classes} classes by rank modulo {num_classes}")
    data = replace(data, labels=labels, num_classes=num_classes)
    name = data.name
    note = (f"{dataset}: its training images are not under the data root ({why}), so {len(data)} {name} images "
            f"stand in for {own} ({how})")
    if warn:
        warnings.warn(f"stand-in minibatch data: {note}", StandInWarning, stacklevel=3)
    return MinibatchSource(dataset, name, own, num_classes, data, note)


def _own(dataset: str, data: ImageSet, num_classes: int, name: str) -> MinibatchSource:
    if int(data.labels.max()) >= num_classes:
        data = replace(data, labels=remap_labels(data.labels, num_classes), num_classes=num_classes)
    return MinibatchSource(dataset, name, None, num_classes, replace(data, name=name),
                           f"{dataset}: {len(data)} {name} images from {data.source}")


def _imagenet_sample_16(root: Path) -> ImageSet:
    folder = find_folder(root, IMAGENET_SAMPLE)
    data = load_image_folder(folder, num_classes=1000, name=f"{IMAGENET_SAMPLE}-box16", box=16)
    # ImageNet16's own pipeline: its normalisation and a 2-pixel pad before the random 16x16 crop.
    mean, std = IMAGENET16_STATS
    return replace(data, mean=mean, std=std, pad=2)


def source_for(dataset: str, root: str | Path, num_classes: int, *, warn: bool = True) -> MinibatchSource:
    """The minibatch images for benchmark ``dataset`` under data root ``root``.

    Raises
    ------
    UnknownNameError
        For a dataset with no known training images.
    MissingDataError
        When neither the dataset's images nor its stand-in exist.
    """
    root = Path(root)
    if dataset in ("cifar10", "cifar10-valid"):
        return _own(dataset, load_cifar(root, 10, "train"), num_classes, "cifar10-train")
    if dataset == "cifar100":
        try:
            return _own(dataset, load_cifar(root, 100, "train"), num_classes, "cifar100-train")
        except MissingDataError as exc:
            data = replace(load_cifar(root, 10, "train"), name="cifar10-train")
            return _stand_in(dataset, "cifar100-train", data, num_classes, str(exc), warn)
    if dataset.startswith("imagenet16"):
        classes = int(dataset.split("-")[1]) if "-" in dataset else 1000
        try:
            return _own(dataset, load_imagenet16(root, classes, "train"), num_classes, f"{dataset}-train")
        except MissingDataError as exc:
            return _stand_in(dataset, f"{dataset}-train", _imagenet_sample_16(root), num_classes, str(exc), warn)
    if dataset == "imagenet":
        for name in (IMAGENET, IMAGENET_SAMPLE):  # the full ImageNet training tree wins over the sample
            try:
                folder = find_folder(root, name)
            except MissingDataError:
                continue
            return _own(dataset, load_image_folder(folder, num_classes=1000, name=name), num_classes, name)
        raise MissingDataError(f"no ImageNet images under {str(root)!r}: expected an ImageFolder tree (or a "
                               f"labels.csv folder) named {IMAGENET}/ or {IMAGENET_SAMPLE}/")
    raise UnknownNameError(f"no minibatch images are known for dataset {dataset!r} "
                           "(known: cifar10, cifar10-valid, cifar100, imagenet16-120, imagenet)")
