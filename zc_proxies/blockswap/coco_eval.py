"""COCO evaluation of a trained detector with pycocotools: box and mask AP, AP50, AP75, APs, APm, APl.

The metrics are COCO's own, computed by ``pycocotools.cocoeval.COCOeval``
exactly as for the official leaderboard, so numbers are comparable with
papers (the BlockSwap paper reports its COCO results this way):

* ``AP``: precision averaged over recall 0..1 (101 points), the IoU thresholds
  0.50:0.05:0.95 and the categories, at most 100 detections per image;
* ``AP50`` / ``AP75``: the same at IoU 0.5 / 0.75 only;
* ``APs`` / ``APm`` / ``APl``: ``AP`` over objects of area < 32^2, 32^2..96^2
  and > 96^2 pixels (the annotation's ``area``).

A value is a fraction in 0..1; it is NaN (``null`` in JSON, ``n/a`` in the
tables) where the evaluated images hold no object of that size, as
pycocotools' -1. ``bbox`` compares boxes, ``segm`` masks (IoU of the masks).

The ground truth is read by pycocotools from the annotation file itself
(crowd regions are matched but ignored, as in the official evaluation),
after :class:`~zc_proxies.data.coco.CocoDataset` has checked the file, so a
malformed file fails with a sentence naming the problem. Training reads the
same file with the package's own reader: boxes and labels are identical, and
the polygon masks differ from pycocotools' rasterisation only at the
boundary (on the COCO sample, a mean mask IoU of 0.96; see the tests).

Detections are torchvision's eval-mode outputs (``boxes`` in ``x1, y1, x2,
y2`` pixels of the original image, ``labels`` = COCO category ids, ``scores``,
``masks`` ``(N, 1, H, W)`` probabilities); a mask is its probability
thresholded at 0.5, run-length encoded with ``pycocotools.mask``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.coco import CocoDataset
from ..errors import DataError, ModelError
from ..runs.atomic import atomic_write_text

IOU_TYPES = ("bbox", "segm")
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
"""The first six numbers of ``COCOeval.stats``, in its order."""
MASK_THRESHOLD = 0.5
METRICS_JSON, METRICS_CSV, METRICS_MD, DETECTIONS_JSON = "metrics.json", "metrics.csv", "metrics.md", "detections.json"

Metrics = dict[str, dict[str, float]]
"""``{iou_type: {metric: value}}``, e.g. ``metrics["segm"]["AP50"]``."""


# -- ground truth and results ----------------------------------------------------------------------
def ground_truth(data: CocoDataset | str | os.PathLike) -> Any:
    """The annotations of ``data`` (a checked dataset, or an annotation file) as a ``pycocotools`` ``COCO``.

    The file is checked by :class:`CocoDataset` first (an unchecked path is
    opened as one, without its images); annotations without ``area`` or
    ``iscrowd`` get the reader's defaults (box area, 0), which pycocotools needs.
    """
    from pycocotools.coco import COCO

    path = data.path if isinstance(data, CocoDataset) else Path(data)
    if not isinstance(data, CocoDataset):
        CocoDataset(path, path.parent)  # the checks only; the image folder is not read
    with open(path, encoding="utf-8") as fh:
        obj = json.load(fh)
    for ann in obj["annotations"]:
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    coco = COCO()
    coco.dataset = obj
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Boolean masks ``(N, H, W)`` as COCO compressed RLEs with ``counts`` a str (JSON-ready)."""
    from pycocotools import mask as mask_util

    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if not len(masks):
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def detections_to_results(outputs: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int], *,
                          mask_threshold: float = MASK_THRESHOLD) -> list[dict[str, Any]]:
    """torchvision detections of the images ``image_ids`` as COCO result entries.

    Each entry has ``image_id``, ``category_id`` (the label), ``score``,
    ``bbox`` ``[x, y, w, h]`` and, when the output has masks, ``segmentation``
    (an RLE of the mask thresholded at ``mask_threshold``).
    """
    if len(outputs) != len(image_ids):
        raise ValueError(f"{len(outputs)} outputs for {len(image_ids)} image ids")
    results: list[dict[str, Any]] = []
    for out, image_id in zip(outputs, image_ids):
        missing = [k for k in ("boxes", "labels", "scores") if k not in out]
        if missing:
            raise ModelError(f"a detection output lacks {', '.join(missing)}; is the detector in eval mode?")
        boxes = out["boxes"].detach().cpu().double().numpy().reshape(-1, 4)
        labels = out["labels"].detach().cpu().numpy().reshape(-1)
        scores = out["scores"].detach().cpu().double().numpy().reshape(-1)
        rles: list[dict[str, Any]] | None = None
        if "masks" in out:
            masks = out["masks"].detach().cpu()
            masks = masks[:, 0] if masks.dim() == 4 else masks
            rles = encode_masks((masks >= mask_threshold).numpy() if masks.is_floating_point()
                                else masks.numpy().astype(bool))
        for k in range(len(boxes)):
            x1, y1, x2, y2 = (float(v) for v in boxes[k])
            entry: dict[str, Any] = {"image_id": int(image_id), "category_id": int(labels[k]),
                                     "score": float(scores[k]), "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if rles is not None:
                entry["segmentation"] = rles[k]
            results.append(entry)
    return results


def _load_results(gt: Any, results: list[dict[str, Any]]) -> Any:
    from pycocotools.coco import COCO

    if not results:  # loadRes cannot take an empty list; an empty result set is a valid one
        dt = COCO()
        dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                      "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            dt.createIndex()
        return dt
    known = set(gt.getImgIds())
    strangers = sorted({r["image_id"] for r in results} - known)
    if strangers:
        raise DataError(f"detections name images {strangers[:5]} that the ground truth does not have")
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(results)


def _results_for(results: Sequence[Mapping[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """Copies of the entries with only what ``iou_type`` reads (loadRes picks its mode by the keys present)."""
    if iou_type == "bbox":
        return [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    if any("segmentation" not in r for r in results):
        raise ModelError("segm evaluation needs masks, but some detections have none (is it a Mask R-CNN?)")
    return [{k: v for k, v in r.items() if k != "bbox"} for r in results]


def evaluate_results(gt: Any, results: Sequence[Mapping[str, Any]], *, image_ids: Sequence[int] | None = None,
                     iou_types: Sequence[str] = IOU_TYPES) -> Metrics:
    """COCO AP, AP50, AP75, APs, APm, APl of ``results`` against ``gt`` (a pycocotools ``COCO``), per IoU type.

    ``image_ids`` restricts the evaluation to those images (default: every
    image of the ground truth). An empty ``results`` scores 0.0 wherever there
    are objects; NaN marks sizes the images have no objects of.
    """
    from pycocotools.cocoeval import COCOeval

    unknown = [t for t in iou_types if t not in IOU_TYPES]
    if unknown:
        raise ValueError(f"unknown IoU types {unknown}; use {', '.join(IOU_TYPES)}")
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    out: Metrics = {}
    for iou_type in iou_types:
        dt = _load_results(gt, _results_for(results, iou_type))
        ev = COCOeval(gt, dt, iou_type)
        ev.params.imgIds = ids
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out[iou_type] = {name: (float(v) if v >= 0 else math.nan) for name, v in zip(METRICS, ev.stats[:6])}
    return out


# -- running a detector -----------------------------------------------------------------------------
@dataclass
class DetectorEvaluation:
    """The metrics of one evaluation, the COCO result entries they were computed from, and what was evaluated."""

    metrics: Metrics
    results: list[dict[str, Any]]
    image_ids: list[int]
    dataset: str
    annotations: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON form: metrics (NaN as null) and what they were measured on."""
        metrics = {t: {k: (None if math.isnan(v) else v) for k, v in m.items()} for t, m in self.metrics.items()}
        return {"metrics": metrics, "dataset": self.dataset, "annotations": self.annotations,
                "images": len(self.image_ids), "detections": len(self.results), "seconds": round(self.seconds, 3),
                **self.extra}


@torch.no_grad()
def evaluate_detector(detector: nn.Module, data: CocoDataset, *, device: str | torch.device = "cpu",
                      limit: int | None = None, iou_types: Sequence[str] = IOU_TYPES, progress: bool = False,
                      on_image: Callable[[int], None] | None = None) -> DetectorEvaluation:
    """Run ``detector`` in eval mode over the images of ``data`` and evaluate its detections with pycocotools.

    Every image is evaluated, those without annotations too (as the official
    evaluation does), one at a time; ``limit`` takes the first ``limit`` images
    only (a quick check). The detector's train/eval mode is restored.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of images, got {limit!r}")
    indices = list(range(len(data)))[:limit]
    if not indices:
        raise DataError(f"{data.name} has no images to evaluate")
    gt = ground_truth(data)
    was_training = detector.training
    detector.eval()
    device = torch.device(device)
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(indices), unit="image", leave=False, desc=f"evaluate on {data.name}", dynamic_ncols=True)
    try:
        for i in indices:
            image, _ = data.load(i)
            output = detector([image.to(device)])
            results += detections_to_results(output, [data.images[i].id])
            if bar is not None:
                bar.update(1)
            if on_image is not None:
                on_image(i)
    finally:
        detector.train(was_training)
        if bar is not None:
            bar.close()
    ids = [data.images[i].id for i in indices]
    metrics = evaluate_results(gt, results, image_ids=ids, iou_types=iou_types)
    return DetectorEvaluation(metrics, results, ids, data.name, str(data.path), time.perf_counter() - t0)


# -- tables ----------------------------------------------------------------------------------------------
def _cell(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def metrics_markdown(metrics: Metrics) -> str:
    """A Markdown table: one row per IoU type, one column per metric."""
    lines = ["| iou type | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    lines += [f"| {t} | " + " | ".join(_cell(m[k]) for k in METRICS) + " |" for t, m in metrics.items()]
    return "\n".join(lines) + "\n"


def metrics_csv(metrics: Metrics) -> str:
    """CSV: ``iou_type`` and the six metrics (NaN as an empty cell)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["iou_type", *METRICS])
    for t, m in metrics.items():
        writer.writerow([t, *("" if math.isnan(m[k]) else repr(m[k]) for k in METRICS)])
    return text.getvalue()


def write_evaluation(evaluation: DetectorEvaluation, out: str | os.PathLike, *,
                     detections: bool = False) -> list[Path]:
    """Write ``metrics.json``, ``metrics.csv``, ``metrics.md`` (and ``detections.json``) into folder ``out``, atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(out / METRICS_JSON, json.dumps(evaluation.summary(), indent=2) + "\n"),
               atomic_write_text(out / METRICS_CSV, metrics_csv(evaluation.metrics)),
               atomic_write_text(out / METRICS_MD, metrics_markdown(evaluation.metrics))]
    if detections:
        written.append(atomic_write_text(out / DETECTIONS_JSON, json.dumps(evaluation.results) + "\n"))
    return written
