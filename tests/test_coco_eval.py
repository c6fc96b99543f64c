"""COCO evaluation with pycocotools: perfect and empty predictions, hand-checkable cases, tables, and the
agreement of our COCO reader with pycocotools on the sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from zc_proxies.blockswap.coco_eval import (
    METRICS,
    DetectorEvaluation,
    detections_to_results,
    encode_masks,
    evaluate_results,
    ground_truth,
    metrics_markdown,
    write_evaluation,
)
from zc_proxies.data.coco import CocoDataset, load_coco
from zc_proxies.errors import DataError, MissingDataError, ModelError


def _perfect_outputs(gt, image_ids):
    """The ground truth (non-crowd) of each image as torchvision eval outputs with score 1."""
    outputs = []
    for image_id in image_ids:
        img = gt.imgs[image_id]
        anns = [a for a in gt.imgToAnns[image_id] if not a["iscrowd"]]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        masks = (np.stack([gt.annToMask(a) for a in anns]) if anns
                 else np.zeros((0, img["height"], img["width"]), np.uint8))
        outputs.append({"boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                        "labels": torch.tensor([a["category_id"] for a in anns], dtype=torch.int64),
                        "scores": torch.ones(len(anns)),
                        "masks": torch.from_numpy(masks).float()[:, None]})  # (N, 1, H, W) probabilities
    return outputs


@pytest.fixture(scope="module")
def sample(data_root):
    data = load_coco(data_root)
    return data, ground_truth(data)


def test_perfect_prediction_scores_one_and_empty_scores_zero(sample):
    data, gt = sample
    ids = [img.id for img in data.images]
    results = detections_to_results(_perfect_outputs(gt, ids), ids)
    assert len(results) == 35 and all("segmentation" in r for r in results)  # 36 instances, one crowd
    perfect = evaluate_results(gt, results)
    empty = evaluate_results(gt, [])
    for iou_type in ("bbox", "segm"):
        assert list(perfect[iou_type]) == list(METRICS)
        for name in METRICS:  # the sample has small, medium and large objects: no NaN
            assert perfect[iou_type][name] == pytest.approx(1.0, abs=1e-9), (iou_type, name)
            assert empty[iou_type][name] == 0.0


def _write_tiny(tmp_path):
    """Two 60 x 40 images: a 20 x 10 and a 10 x 10 rectangle in the first, a crowd in the second."""
    images = [{"id": 1, "file_name": "a.png", "width": 60, "height": 40},
              {"id": 2, "file_name": "b.png", "width": 60, "height": 40}]
    crowd = np.zeros((40, 60), np.uint8, order="F")
    crowd[5:15, 30:50] = 1
    rle = encode_masks(crowd[None].astype(bool))[0]  # a compressed RLE: our reader decodes it too
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0,
             "segmentation": [[10, 5, 30, 5, 30, 15, 10, 15]]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [40, 20, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[40, 20, 50, 20, 50, 30, 40, 30]]},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [30, 5, 20, 10], "area": 200, "iscrowd": 1,
             "segmentation": rle}]
    cats = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    folder = tmp_path / "images"
    folder.mkdir()
    for im in images:
        Image.new("RGB", (im["width"], im["height"])).save(folder / im["file_name"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, folder, crowd


def _box_output(boxes, labels, scores, size=(40, 60)):
    masks = torch.zeros(len(boxes), 1, *size)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, 0, y1:y2, x1:x2] = 0.9
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "scores": torch.tensor(scores, dtype=torch.float32), "masks": masks}


def test_hand_checkable_cases(tmp_path):
    path, folder, crowd = _write_tiny(tmp_path)
    gt = ground_truth(path)
    ids = [1, 2]
    exact = [_box_output([(10, 5, 30, 15), (40, 20, 50, 30)], [3, 7], [0.9, 0.8]), _box_output([], [], [])]
    m = evaluate_results(gt, detections_to_results(exact, ids))
    for t in ("bbox", "segm"):
        assert m[t]["AP"] == pytest.approx(1.0) and m[t]["APs"] == pytest.approx(1.0)
        assert math.isnan(m[t]["APm"]) and math.isnan(m[t]["APl"])  # no object of those sizes
    # the same boxes with the labels swapped find nothing
    swapped = [_box_output([(10, 5, 30, 15), (40, 20, 50, 30)], [7, 3], [0.9, 0.8]), _box_output([], [], [])]
    assert evaluate_results(gt, detections_to_results(swapped, ids))["bbox"]["AP"] == 0.0
    # the 20 x 10 box shifted by 4 pixels: IoU 16/24 = 0.67, a hit at 0.5 and a miss at 0.75; the second object
    # is missed altogether, so each category's AP50 is 1 and 0 (mean 0.5) and AP75 is 0
    shifted = [_box_output([(14, 5, 34, 15)], [3], [0.9]), _box_output([], [], [])]
    m = evaluate_results(gt, detections_to_results(shifted, ids))
    assert m["bbox"]["AP50"] == pytest.approx(0.5) and m["bbox"]["AP75"] == 0.0
    assert m["segm"]["AP50"] == pytest.approx(0.5) and m["segm"]["AP75"] == 0.0
    # a detection on the crowd region is ignored, not counted as a false positive
    on_crowd = [exact[0], _box_output([(30, 5, 50, 15)], [3], [0.95])]
    assert evaluate_results(gt, detections_to_results(on_crowd, ids))["bbox"]["AP"] == pytest.approx(1.0)
    # our reader decodes the compressed crowd RLE as pycocotools does
    ds = CocoDataset(path, folder)
    assert (ds.masks(1, include_crowd=True)[0] == crowd.astype(bool)).all()


def test_tables_and_files(tmp_path):
    path, _, _ = _write_tiny(tmp_path)
    gt = ground_truth(path)
    exact = [_box_output([(10, 5, 30, 15)], [3], [0.9]), _box_output([], [], [])]
    results = detections_to_results(exact, [1, 2])
    metrics = evaluate_results(gt, results)
    md = metrics_markdown(metrics)
    assert md.splitlines()[0] == "| iou type | AP | AP50 | AP75 | APs | APm | APl |"
    assert md.splitlines()[2].startswith("| bbox | 0.500 | 0.500 | 0.500 | 0.500 | n/a | n/a |")
    evaluation = DetectorEvaluation(metrics, results, [1, 2], "tiny", str(path), 0.1)
    written = write_evaluation(evaluation, tmp_path / "eval", detections=True)
    assert [p.name for p in written] == ["metrics.json", "metrics.csv", "metrics.md", "detections.json"]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["metrics"]["segm"]["APl"] is None and summary["metrics"]["bbox"]["AP"] == pytest.approx(0.5)
    assert summary["images"] == 2 and summary["detections"] == 1
    csv_lines = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0] == "iou_type,AP,AP50,AP75,APs,APm,APl" and csv_lines[1].endswith(",,")
    # the saved detections are a valid COCO result file
    saved = json.loads((tmp_path / "eval" / "detections.json").read_text())
    assert evaluate_results(gt, saved) == metrics


def test_bad_input_is_named(tmp_path):
    path, _, _ = _write_tiny(tmp_path)
    gt = ground_truth(path)
    with pytest.raises(MissingDataError, match="does not exist"):
        ground_truth(tmp_path / "nope.json")
    stranger = detections_to_results([_box_output([(1, 1, 5, 5)], [3], [0.5])], [99])
    with pytest.raises(DataError, match=r"images \[99\] that the ground truth does not have"):
        evaluate_results(gt, stranger)
    no_masks = [{k: v for k, v in _box_output([(1, 1, 5, 5)], [3], [0.5]).items() if k != "masks"}]
    boxes_only = detections_to_results(no_masks, [1])
    assert evaluate_results(gt, boxes_only, iou_types=["bbox"])["bbox"]["AP"] == 0.0
    with pytest.raises(ModelError, match="segm evaluation needs masks"):
        evaluate_results(gt, boxes_only)
    with pytest.raises(ModelError, match="lacks scores"):
        detections_to_results([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}], [1])


def test_our_reader_gives_pycocotools_targets_on_the_sample(sample):
    """Boxes and labels identical; masks equal up to the polygon rasterisation at the boundary."""
    data, gt = sample
    ious = []
    for i, img in enumerate(data.images):
        _, target = data.load(i)
        anns = [a for a in gt.imgToAnns[img.id] if not a["iscrowd"]]
        assert [a["id"] for a in anns] == [a.id for a in data.instances[img.id] if not a.iscrowd]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
        assert torch.equal(target["boxes"], boxes.float())
        assert target["labels"].tolist() == [a["category_id"] for a in anns]
        for ours, ann in zip(target["masks"].numpy().astype(bool), anns):
            theirs = gt.annToMask(ann).astype(bool)
            ious.append((ours & theirs).sum() / (ours | theirs).sum())
        crowds = [a for a in gt.imgToAnns[img.id] if a["iscrowd"]]
        if crowds:  # uncompressed RLE: decoded identically
            k = [a.id for a in data.instances[img.id]].index(crowds[0]["id"])
            assert (data.masks(i, include_crowd=True)[k] == gt.annToMask(crowds[0]).astype(bool)).all()
    assert len(ious) == 35
    assert min(ious) > 0.85 and np.mean(ious) > 0.95  # measured: 0.869 (a 100-pixel object) and 0.963
