"""COCO instance annotations (boxes and masks), read and checked by our own reader.

A COCO ``instances_*.json`` holds ``images`` (id, file name, width, height),
``categories`` (id, name) and ``annotations`` (id, image id, category id, box
``[x, y, w, h]`` in pixels, ``area``, ``iscrowd``, and a ``segmentation`` that
is a list of polygons ``[x1, y1, x2, y2, ...]`` or, for crowds, a run-length
encoding). :class:`CocoDataset` checks the whole file when it is opened, so a
malformed file fails at once with the file and the problem named, and turns
an image into what torchvision's detection models train on:

* the image as a float tensor (3, H, W) in [0, 1];
* ``boxes`` (K, 4) float32 in ``[x1, y1, x2, y2]``, from ``[x, y, w, h]``,
  clipped to the image;
* ``labels`` (K,) int64: the COCO category ids themselves. torchvision's
  COCO-trained detectors use this convention, ``num_classes = 91`` (background
  plus the 90 ids of COCO's original list, of which 80 are used; the gaps only
  cost a few unused classifier rows), and so does its reference training
  script; keeping the ids means no remapping table to get wrong;
* ``masks`` (K, H, W) uint8, polygons rasterised with PIL (see
  :func:`polygon_mask`); run-length encodings decoded by :func:`rle_mask`.
  pycocotools rasterises polygons a little differently (on the COCO sample
  the two masks of an instance have an IoU of 0.96 on average, 0.87 at
  worst, on a 100-pixel object); the evaluation
  (:mod:`zc_proxies.blockswap.coco_eval`) reads the ground truth with
  pycocotools, as the official one does. Boxes and labels are the same.

As in torchvision's reference training, crowd annotations (``iscrowd = 1``)
are kept out of the targets, and minibatches are drawn from images with at
least one other annotation. A non-crowd box of zero width or height is an
error when a :class:`CocoDataset` is opened directly; :func:`load_coco` (what
the search uses) drops such boxes, as the reference training does (the
official train2017 file has a few), and warns how many it dropped.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, MissingDataError
from .images import data_root, find_folder

COCO_NUM_CLASSES = 91
"""torchvision's COCO head size: background (0) plus category ids 1..90."""

SUPERSAMPLE = 4
"""Sub-pixels per pixel side when rasterising polygons."""


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images``."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoInstance:
    """One annotation; ``box`` is ``[x1, y1, x2, y2]`` clipped to the image."""

    id: int
    image_id: int
    category_id: int
    box: tuple[float, float, float, float]
    area: float
    iscrowd: bool
    segmentation: Any


# -- masks ----------------------------------------------------------------------------------
def polygon_mask(polygons: Sequence[Sequence[float]], width: int, height: int,
                 supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The union of COCO ``polygons`` as a boolean (height, width) mask, drawn with PIL.

    COCO polygon coordinates are continuous: pixel ``(i, j)`` covers
    ``[j, j + 1) x [i, i + 1)``. PIL fills every sub-pixel whose centre lies
    inside the polygon *or on its outline*, which makes masks about half a
    pixel too wide all round (12% too much area on the small objects of the
    COCO sample). So each polygon is drawn on a ``supersample``-times finer grid
    with its interior weighted 1 and its outline 1/2, and a pixel is set when
    at least half of it is covered. On the 35 polygon annotations of the COCO
    sample this gives areas within 0.8% of the annotations' ``area`` on average
    (6.5% at worst, on a 121-pixel object).
    """
    from PIL import Image, ImageDraw

    s = supersample
    out = np.zeros((height, width), dtype=bool)
    for poly in polygons:
        xs, ys = np.asarray(poly[0::2], dtype=np.float64), np.asarray(poly[1::2], dtype=np.float64)
        x0, y0 = max(int(math.floor(xs.min())) - 1, 0), max(int(math.floor(ys.min())) - 1, 0)
        x1, y1 = min(int(math.ceil(xs.max())) + 1, width), min(int(math.ceil(ys.max())) + 1, height)
        if x1 <= x0 or y1 <= y0:
            continue  # entirely outside the image
        canvas = Image.new("L", ((x1 - x0) * s, (y1 - y0) * s), 0)
        # sub-pixel k of the crop has its centre at image coordinate x0 + (k + 0.5) / s; PIL samples at k
        points = [((x - x0) * s - 0.5, (y - y0) * s - 0.5) for x, y in zip(xs, ys)]
        ImageDraw.Draw(canvas).polygon(points, fill=2, outline=1)
        cover = np.asarray(canvas, dtype=np.float32).reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3)) / 2
        out[y0:y1, x0:x1] |= cover >= 0.5
    return out


def rle_mask(rle: dict[str, Any], width: int, height: int, where: str = "annotation") -> np.ndarray:
    """Decode a COCO run-length encoding to a boolean mask.

    Runs alternate background and foreground, starting with background, over
    the pixels in column-major order. ``counts`` is a list of run lengths
    (the uncompressed form, decoded here) or a string (the compressed form,
    decoded by ``pycocotools.mask``).
    """
    counts, size = rle.get("counts"), rle.get("size")
    if size != [height, width]:
        raise DataError(f"{where}: an RLE mask needs 'size' [{height}, {width}] (the image's), got {size!r}")
    if isinstance(counts, str):
        from pycocotools import mask as mask_util

        try:
            with warnings.catch_warnings():  # pycocotools' arrays predate numpy 2's copy keyword
                warnings.simplefilter("ignore", DeprecationWarning)
                return mask_util.decode({"size": size, "counts": counts.encode("ascii")}).astype(bool)
        except (ValueError, TypeError, UnicodeEncodeError) as exc:
            raise DataError(f"{where}: the compressed RLE 'counts' cannot be decoded ({exc})") from exc
    if not isinstance(counts, list):
        raise DataError(f"{where}: an RLE mask needs 'counts' (a list of run lengths or a compressed string), "
                        f"got {type(counts).__name__}")
    runs = np.asarray(counts, dtype=np.int64)
    if runs.size and (runs.min() < 0 or runs.sum() != height * width):
        raise DataError(f"{where}: RLE runs must be non-negative and cover {height * width} pixels, "
                        f"they cover {int(runs.sum())}")
    values = np.arange(runs.size) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()


# -- the file -----------------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CocoDataset:
    """The images and instance annotations of one COCO json, checked when opened.

    Parameters
    ----------
    annotations
        The ``instances_*.json`` file.
    images
        The folder holding the images named by ``file_name``.
    name
        A short name for messages and search fingerprints (default: the json's stem).
    skip_degenerate
        Drop non-crowd boxes of zero width or height (after clipping to the image)
        instead of raising :class:`DataError`.
    """

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike, *, name: str | None = None,
                 skip_degenerate: bool = False) -> None:
        self.path = Path(annotations)
        self.image_dir = Path(images)
        self.name = name or self.path.stem
        self.skipped = 0  # degenerate boxes dropped (skip_degenerate only)
        if not self.path.is_file():
            raise MissingDataError(f"COCO annotation file {str(self.path)!r} does not exist")
        if not self.image_dir.is_dir():
            raise MissingDataError(f"COCO image folder {str(self.image_dir)!r} does not exist")
        obj = self._read_json()
        self.categories = self._parse_categories(obj)
        self.images = self._parse_images(obj)
        self._index = {img.id: i for i, img in enumerate(self.images)}
        per_image: dict[int, list[CocoInstance]] = {img.id: [] for img in self.images}
        for inst in self._parse_annotations(obj, skip_degenerate):
            per_image[inst.image_id].append(inst)
        self.instances = {k: tuple(v) for k, v in per_image.items()}

    # -- reading and checking -------------------------------------------------------------
    def _fail(self, problem: str) -> DataError:
        return DataError(f"COCO annotation file {str(self.path)!r}: {problem}")

    def _read_json(self) -> dict[str, Any]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                obj = json.load(fh)
        except json.JSONDecodeError as exc:
            raise self._fail(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise self._fail(f"not a UTF-8 text file ({exc.reason})") from exc
        if not isinstance(obj, dict):
            raise self._fail(f"expected a JSON object, got {type(obj).__name__}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(obj.get(key), list):
                raise self._fail(f"missing the list {key!r} (a COCO instances file has 'images', "
                                 "'annotations' and 'categories')")
        return obj

    def _parse_categories(self, obj: dict[str, Any]) -> dict[int, str]:
        out: dict[int, str] = {}
        for c in obj["categories"]:
            if not isinstance(c, dict) or not _int(c.get("id")) or c["id"] < 1 or not isinstance(c.get("name"), str):
                raise self._fail(f"a category needs a positive integer 'id' and a 'name', got {str(c)[:120]}")
            if c["id"] in out:
                raise self._fail(f"category id {c['id']} appears twice")
            out[c["id"]] = c["name"]
        return out

    def _parse_images(self, obj: dict[str, Any]) -> tuple[CocoImage, ...]:
        out, seen = [], set()
        for im in obj["images"]:
            ok = (isinstance(im, dict) and _int(im.get("id")) and isinstance(im.get("file_name"), str)
                  and _int(im.get("width")) and _int(im.get("height")) and im["width"] > 0 and im["height"] > 0)
            if not ok:
                raise self._fail("an image needs an integer 'id', a 'file_name' and positive integer 'width' and "
                                 f"'height', got {str(im)[:160]}")
            if im["id"] in seen:
                raise self._fail(f"image id {im['id']} appears twice")
            seen.add(im["id"])
            out.append(CocoImage(im["id"], im["file_name"], im["width"], im["height"]))
        return tuple(out)

    def _parse_annotations(self, obj: dict[str, Any], skip_degenerate: bool) -> list[CocoInstance]:
        images = {img.id: img for img in self.images}
        out = []
        for a in obj["annotations"]:
            if not isinstance(a, dict) or not _int(a.get("id")):
                raise self._fail(f"an annotation needs an integer 'id', got {str(a)[:120]}")
            where = f"annotation {a['id']}"
            image_id, category_id = a.get("image_id"), a.get("category_id")
            img = images.get(image_id) if _int(image_id) else None  # type: ignore[arg-type]
            if img is None:
                raise self._fail(f"{where} points at image {image_id!r}, which is not in 'images'")
            if not _int(category_id) or category_id not in self.categories:
                raise self._fail(f"{where} has category_id {a.get('category_id')!r}, which is not in 'categories'")
            bbox = a.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
                raise self._fail(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
            if bbox[2] < 0 or bbox[3] < 0:
                raise self._fail(f"{where}: 'bbox' {bbox} has a negative width or height")
            crowd = a.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, bool):
                raise self._fail(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
            area = a.get("area", bbox[2] * bbox[3])
            if not _number(area) or area < 0:
                raise self._fail(f"{where}: 'area' must be a non-negative number, got {area!r}")
            self._check_segmentation(a.get("segmentation"), where)
            x, y, w, h = bbox
            box = (min(max(x, 0.0), img.width), min(max(y, 0.0), img.height),
                   min(max(x + w, 0.0), img.width), min(max(y + h, 0.0), img.height))
            if not crowd and (box[2] <= box[0] or box[3] <= box[1]):
                if skip_degenerate:
                    self.skipped += 1
                    continue
                raise self._fail(f"{where} (image {img.file_name!r}) has a degenerate box: bbox {bbox} is "
                                 f"{box[2] - box[0]:g} x {box[3] - box[1]:g} pixels inside the "
                                 f"{img.width} x {img.height} image; detectors refuse boxes without area "
                                 "(pass skip_degenerate=True to drop such annotations)")
            out.append(CocoInstance(a["id"], img.id, a["category_id"], tuple(float(v) for v in box), float(area),
                                    bool(crowd), a.get("segmentation")))
        return out

    def _check_segmentation(self, seg: Any, where: str) -> None:
        if isinstance(seg, dict):
            if "counts" not in seg or "size" not in seg:
                raise self._fail(f"{where}: an RLE 'segmentation' needs 'counts' and 'size'")
            return
        if not isinstance(seg, list) or not seg:
            raise self._fail(f"{where}: 'segmentation' must be a non-empty list of polygons or an RLE object")
        for poly in seg:
            if not (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
                    and all(_number(v) for v in poly)):
                raise self._fail(f"{where}: a polygon must be an even number (>= 6) of finite coordinates "
                                 f"[x1, y1, x2, y2, ...], got {str(poly)[:80]}")

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"CocoDataset({self.name!r}: {len(self.images)} images, {self.num_instances} instances, "
                f"{len(self.categories)} categories)")

    @property
    def num_instances(self) -> int:
        """Annotations kept (crowds included)."""
        return sum(len(v) for v in self.instances.values())

    def index_of(self, image_id: int) -> int:
        """Position of the image with COCO id ``image_id``."""
        if image_id not in self._index:
            raise DataError(f"{self.name}: no image with id {image_id}")
        return self._index[image_id]

    def annotated(self) -> list[int]:
        """Positions of the images with at least one non-crowd instance (the training pool)."""
        return [i for i, img in enumerate(self.images) if any(not a.iscrowd for a in self.instances[img.id])]

    def masks(self, index: int, include_crowd: bool = False) -> np.ndarray:
        """The instance masks of image ``index`` as a (K, H, W) boolean array."""
        img = self.images[index]
        insts = [a for a in self.instances[img.id] if include_crowd or not a.iscrowd]
        out = np.zeros((len(insts), img.height, img.width), dtype=bool)
        for k, a in enumerate(insts):
            where = f"COCO annotation file {str(self.path)!r}, annotation {a.id}"
            if isinstance(a.segmentation, dict):
                out[k] = rle_mask(a.segmentation, img.width, img.height, where)
            else:
                out[k] = polygon_mask(a.segmentation, img.width, img.height)
        return out

    def load(self, index: int, include_crowd: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Image ``index`` as a float tensor (3, H, W) in [0, 1] and its torchvision detection target.

        The target holds ``boxes``, ``labels``, ``masks``, ``image_id``, ``area``
        and ``iscrowd`` (see the module docstring); crowds are left out unless
        ``include_crowd``.
        """
        from PIL import Image, UnidentifiedImageError

        img = self.images[index]
        file = self.image_dir / img.file_name
        if not file.is_file():
            raise MissingDataError(f"{self.name}: image {img.id} is {str(file)!r}, which does not exist")
        try:
            with Image.open(file) as pil:
                rgb = np.array(pil.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{self.name}: cannot decode image {str(file)!r}: {exc}") from exc
        if rgb.shape[:2] != (img.height, img.width):
            raise DataError(f"{self.name}: image {str(file)!r} is {rgb.shape[1]} x {rgb.shape[0]} pixels, but the "
                            f"annotations say {img.width} x {img.height}")
        image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
        insts = [a for a in self.instances[img.id] if include_crowd or not a.iscrowd]
        target = {
            "boxes": torch.tensor([a.box for a in insts], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([a.category_id for a in insts], dtype=torch.int64),
            "masks": torch.from_numpy(self.masks(index, include_crowd).astype(np.uint8)),
            "image_id": torch.tensor(img.id, dtype=torch.int64),
            "area": torch.tensor([a.area for a in insts], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.iscrowd) for a in insts], dtype=torch.int64),
        }
        return image, target

    def minibatch(self, batch_size: int, seed: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """``batch_size`` distinct annotated images drawn with ``seed``: (images, targets)."""
        pool = self.annotated()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > len(pool):
            raise DataError(f"{self.name} has {len(pool)} images with non-crowd annotations, fewer than the "
                            f"batch of {batch_size}")
        picks = np.random.default_rng(seed).choice(len(pool), size=batch_size, replace=False)
        images, targets = zip(*(self.load(pool[int(i)]) for i in picks))
        return list(images), list(targets)


class CocoWarning(UserWarning):
    """Annotations were dropped while reading COCO (boxes without area)."""


def load_coco(root: str | os.PathLike | None = None, split: str = "train2017", *,
              skip_degenerate: bool = True) -> CocoDataset:
    """COCO under the data root (``root`` or ``$ZCBENCH_DATA``).

    Looks for the official layout first, ``coco/annotations/instances_<split>.json``
    with images in ``coco/<split>/`` (``coco/`` directly under the root or under
    ``images/``), then for the small sample ``coco-sample/annotations.json`` with
    ``coco-sample/images/``. Boxes without area are dropped with a warning
    (``skip_degenerate=False``: an error instead).
    """
    data = _find_coco(root, split, skip_degenerate)
    if data.skipped:
        warnings.warn(f"{data.name}: dropped {data.skipped} non-crowd annotations whose boxes have no area "
                      "inside their image", CocoWarning, stacklevel=2)
    return data


def _find_coco(root: str | os.PathLike | None, split: str, skip_degenerate: bool) -> CocoDataset:
    base = data_root(root)
    tried = []
    try:
        coco: Path | None = find_folder(base, "coco")
    except MissingDataError as exc:
        coco = None
        tried.append(str(exc))
    if coco is not None:
        ann = coco / "annotations" / f"instances_{split}.json"
        if ann.is_file():
            return CocoDataset(ann, coco / split, name=f"coco/{split}", skip_degenerate=skip_degenerate)
        tried.append(f"no {str(ann)!r}")
    try:
        sample = find_folder(base, "coco-sample")
    except MissingDataError as exc:
        raise MissingDataError(f"no COCO data under {str(base)!r}: " + "; ".join([*tried, str(exc)])) from None
    return CocoDataset(sample / "annotations.json", sample / "images", name="coco-sample",
                       skip_degenerate=skip_degenerate)
