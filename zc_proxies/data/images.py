"""Real image data in its official layouts: CIFAR, ImageNet16 and ImageNet-style JPEG folders.

Layouts read:

* CIFAR-10 / CIFAR-100 "python version" folders (``cifar-10-batches-py/``,
  ``cifar-100-python/``): pickled dicts with an N x 3072 uint8 ``data`` array.
* ImageNet16 / ImageNet16-120 (Chrabaszcz et al. 2017, as used by NAS-Bench-201):
  ``ImageNet16/train_data_batch_{1..10}`` and ``val_data``, pickles with an
  N x 768 ``data`` array and 1-based ``labels``; ImageNet16-120 keeps labels 1..120.
* ImageNet-style JPEG folders: ``<root>/<wnid>/<file>`` (torchvision's
  ImageFolder layout), or a flat folder with a ``labels.csv`` (``file,class_index``).

Minibatches are drawn by :mod:`.minibatch`; which images feed which benchmark
dataset (and the stand-ins) is :mod:`.sources`.

The data root comes from the caller (the CLI's ``--data``) or the environment
variable ``ZCBENCH_DATA``; a dataset folder is looked for directly under it and
under ``<root>/images/``.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingDataError, UnknownNameError

DATA_ENV = "ZCBENCH_DATA"

# Per-channel mean and std on the 0..1 scale, as NAS-Bench-201 and torchvision use them.
CIFAR10_STATS = ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255))
CIFAR100_STATS = ((129.3 / 255, 124.1 / 255, 112.4 / 255), (68.2 / 255, 65.4 / 255, 70.4 / 255))
IMAGENET16_STATS = ((122.68 / 255, 116.66 / 255, 104.01 / 255), (63.22 / 255, 61.26 / 255, 65.09 / 255))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$ZCBENCH_DATA``; it must exist."""
    value = explicit if explicit is not None else os.environ.get(DATA_ENV)
    if not value:
        raise MissingDataError(f"no data root given: pass --data DIR or set {DATA_ENV}=DIR (see data/README.md)")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise MissingDataError(f"data root {str(root)!r} is not a folder (from {'--data' if explicit else DATA_ENV})")
    return root


def find_folder(root: str | os.PathLike, name: str) -> Path:
    """``root/name`` or ``root/images/name``, or ``root`` itself if it is named ``name``."""
    root = Path(root)
    for candidate in (root / name, root / "images" / name, root):
        if candidate.name == name and candidate.is_dir():
            return candidate
    raise MissingDataError(f"no {name}/ folder under {str(root)!r} (looked in {root / name} and {root / 'images' / name})")


@dataclass(frozen=True)
class ImageSet:
    """Images of one split, ready to draw minibatches from.

    ``images`` is either a uint8 array (N, H, W, 3) or a list of image files
    (decoded on demand); ``labels`` are integer class indices.
    """

    name: str
    images: np.ndarray | Sequence[Path]
    labels: np.ndarray
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int
    source: str
    pad: int = 4
    resize: int | None = None
    notes: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.labels)

    def transform(self) -> str:
        """How a minibatch image is made from a stored one, in words (stored with every score).

        With augmentation the crop is random (after zero padding ``pad``) and
        flipped half the time; without, it is the centre crop.
        """
        resize = f"shorter side resized to {self.resize} px (bilinear), " if self.resize else ""
        pad = f"zero-padded {self.pad} px, " if self.pad else ""
        mean = ", ".join(f"{m:.4f}" for m in self.mean)
        std = ", ".join(f"{v:.4f}" for v in self.std)
        return (f"{resize}{pad}{self.size}x{self.size} crop (random + horizontal flip with augmentation, else "
                f"centre), normalised with mean ({mean}) and std ({std})")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise MissingDataError(f"missing data file {str(path)!r}")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except Exception as exc:
        raise DataError(f"{str(path)!r} is not a readable pickle ({type(exc).__name__}: {exc}); "
                        "expected the official python-layout batch file") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{str(path)!r} holds a {type(obj).__name__}, expected a dict with 'data' and labels")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _pixels(path: Path, batch: dict, label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{str(path)!r} lacks the key {'data' if 'data' not in batch else label_key!r}; "
                        f"expected keys 'data' and {label_key!r}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    width = 3 * side * side
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        raise DataError(f"{str(path)!r}: 'data' is {data.dtype} of shape {data.shape}, expected uint8 (N, {width})")
    if len(labels) != len(data):
        raise DataError(f"{str(path)!r}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, side, side).transpose(0, 2, 3, 1), labels


def load_cifar(root: str | os.PathLike, classes: int = 10, split: str = "train") -> ImageSet:
    """CIFAR-10 or CIFAR-100 from the official python-layout folder under ``root``."""
    if classes not in (10, 100):
        raise UnknownNameError(f"CIFAR has 10 or 100 classes, not {classes}")
    if split not in ("train", "test"):
        raise UnknownNameError(f"CIFAR split must be 'train' or 'test', got {split!r}")
    folder = find_folder(root, "cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    if classes == 10:
        files = sorted(folder.glob("data_batch_*")) if split == "train" else [folder / "test_batch"]
        label_key = "labels"
    else:
        files = [folder / split]
        label_key = "fine_labels"
    if not files or not all(f.is_file() for f in files):
        expected = "data_batch_1 .. data_batch_5" if classes == 10 and split == "train" else files[0].name
        raise MissingDataError(f"no CIFAR-{classes} {split} images in {str(folder)!r} (expected {expected})")
    parts = [_pixels(f, _unpickle(f), label_key, 32) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"CIFAR-{classes} labels in {str(folder)!r} run {labels.min()}..{labels.max()}, expected 0..{classes - 1}")
    mean, std = CIFAR10_STATS if classes == 10 else CIFAR100_STATS
    return ImageSet(f"cifar{classes}", images, labels, classes, mean, std, 32, str(folder))


def load_imagenet16(root: str | os.PathLike, classes: int = 120, split: str = "train") -> ImageSet:
    """ImageNet16 in the pickle layout NAS-Bench-201 uses, keeping labels 1..``classes``."""
    if split not in ("train", "val"):
        raise UnknownNameError(f"ImageNet16 split must be 'train' or 'val', got {split!r}")
    folder = find_folder(root, "ImageNet16")
    files = [folder / f"train_data_batch_{i}" for i in range(1, 11)] if split == "train" else [folder / "val_data"]
    present = [f for f in files if f.is_file()]
    if not present:
        raise MissingDataError(f"no ImageNet16 {split} files in {str(folder)!r} (expected {files[0].name}"
                               f"{' .. ' + files[-1].name if len(files) > 1 else ''})")
    parts = [_pixels(f, _unpickle(f), "labels", 16) for f in present]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    keep = (labels >= 1) & (labels <= classes)
    return ImageSet(f"imagenet16-{classes}", images[keep], labels[keep] - 1, classes,
                    *IMAGENET16_STATS, size=16, pad=2, source=str(folder))


def load_image_folder(root: str | os.PathLike, num_classes: int = 1000, size: int = 224,
                      resize: int | None = 256, name: str = "imagenet", box: int | None = None) -> ImageSet:
    """JPEGs in an ImageFolder layout, or a flat folder described by ``labels.csv``.

    With ``box`` every image is decoded now and box-filter downsampled, whole
    (aspect ratio not kept), to ``box`` x ``box`` pixels, the way the downsampled
    ImageNet variants (ImageNet16, Chrabaszcz et al. 2017) were made; the set is
    then array-backed with ``size = box`` (``size`` and ``resize`` are ignored).
    """
    folder = Path(root)
    if not folder.is_dir():
        raise MissingDataError(f"image folder {str(folder)!r} does not exist")
    table = folder / "labels.csv"
    if table.is_file():
        files, labels = [], []
        with open(table, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "class_index"} <= set(reader.fieldnames):
                raise DataError(f"{str(table)!r} needs the columns 'file' and 'class_index'")
            for row in reader:
                files.append(folder / row["file"])
                labels.append(int(row["class_index"]))
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise MissingDataError(f"{str(table)!r} names {len(missing)} missing image(s), e.g. {str(missing[0])!r}")
    else:
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
        files, labels = [], []
        for idx, cls in enumerate(classes):
            for f in sorted((folder / cls).iterdir()):
                if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                    files.append(f)
                    labels.append(idx)
    if not files:
        raise MissingDataError(f"no images in {str(folder)!r} (expected <class>/<image>.JPEG or labels.csv)")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.max() >= num_classes:
        raise DataError(f"labels in {str(folder)!r} go up to {labels_arr.max()}, beyond {num_classes} classes")
    if box:
        pixels = np.stack([decode_image(f, None, box=box) for f in files])
        return ImageSet(name, pixels, labels_arr, num_classes, *IMAGENET_STATS, size=box, pad=0, source=str(folder))
    return ImageSet(name, files, labels_arr, num_classes, *IMAGENET_STATS, size=size, pad=0,
                    resize=resize, source=str(folder))


def decode_image(path: Path, resize: int | None, box: int | None = None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if box:
                img = img.resize((box, box), Image.BOX)
            elif resize:
                w, h = img.size
                scale = resize / min(w, h)
                img = img.resize((max(resize, round(w * scale)), max(resize, round(h * scale))), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"cannot decode image {str(path)!r}: {exc}") from exc
