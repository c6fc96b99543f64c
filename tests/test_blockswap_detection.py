"""BlockSwap on COCO: the COCO reader, the Mask R-CNN backbone, its Fisher potential and the search."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from model_state import assert_same, snapshot
from PIL import Image
from torch import nn

from zc_proxies import BlockProbe, score
from zc_proxies.blockswap import Configuration
from zc_proxies.blockswap.detection import (
    LOSS_KEYS,
    DetectionBatch,
    ResNetBody,
    body_params,
    build_backbone,
    build_detector,
    detection_fisher_potential,
    fpn_params,
    score_detection_configuration,
)
from zc_proxies.blockswap.networks import count_parameters, get_net
from zc_proxies.cli import main
from zc_proxies.data.coco import CocoDataset, load_coco, polygon_mask
from zc_proxies.errors import ArchError, BatchError, DataError, MissingDataError, ModelError
from zc_proxies.runs.batchnorm import ExactBatchNorm2d
from zc_proxies.runs.layout import network_in_layout

SMALL = {"min_size": 128, "max_size": 160}
FAST_HEADS = {"rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 100, "box_batch_size_per_image": 32}


# -- a tiny COCO file written here -------------------------------------------------------------
def _write_coco(tmp_path, annotations=None, images=None, categories=None, make_images=True):
    imgs = images if images is not None else [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "b.png", "width": 20, "height": 20},  # no annotations
    ]
    cats = categories if categories is not None else [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    anns = annotations if annotations is not None else [
        # a 20 x 10 rectangle: area 200, box [5, 5, 25, 15]
        {"id": 10, "image_id": 1, "category_id": 90, "bbox": [5, 5, 20, 10], "area": 200.0, "iscrowd": 0,
         "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]},
        # a right triangle with legs 12 and 9: area 54; its box runs over the right edge and is clipped
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [30, 18, 12, 9], "area": 54.0, "iscrowd": 0,
         "segmentation": [[30, 18, 42, 18, 30, 27]]},
        # a crowd region as uncompressed RLE (column-major): columns 2 and 3, rows 1..3
        {"id": 12, "image_id": 1, "category_id": 1, "bbox": [2, 1, 2, 3], "area": 6.0, "iscrowd": 1,
         "segmentation": {"size": [30, 40], "counts": [2 * 30 + 1, 3, 27, 3, 30 * 36 + 26]}},
    ]
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    if make_images:
        for im in imgs:
            Image.new("RGB", (im["width"], im["height"]), (200, 100, 50)).save(folder / im["file_name"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    return path, folder


def test_reader_converts_boxes_masks_and_labels(tmp_path):
    path, folder = _write_coco(tmp_path)
    ds = CocoDataset(path, folder)
    assert len(ds) == 2 and ds.num_instances == 3 and ds.categories[90] == "toothbrush"
    image, target = ds.load(0)
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert torch.allclose(image[:, 0, 0], torch.tensor([200, 100, 50]) / 255)
    # xywh -> xyxy, clipped to the 40-pixel-wide image; the crowd is left out
    assert target["boxes"].tolist() == [[5, 5, 25, 15], [30, 18, 40, 27]]
    assert target["labels"].tolist() == [90, 1]  # category ids as labels (torchvision's 91-class convention)
    assert target["masks"].shape == (2, 30, 40) and target["masks"].dtype == torch.uint8
    rect = target["masks"][0].numpy().astype(bool)
    expected = np.zeros((30, 40), dtype=bool)
    expected[5:15, 5:25] = True
    assert (rect == expected).all()
    # the triangle loses the corner beyond x = 40 (legs 2 and 1.5): 54 - 1.5 = 52.5 pixels inside the image
    assert abs(int(target["masks"][1].sum()) - 52.5) <= 0.05 * 52.5
    assert target["iscrowd"].tolist() == [0, 0] and int(target["image_id"]) == 1
    # the crowd's RLE decodes column-major
    crowd = ds.masks(0, include_crowd=True)[2]
    want = np.zeros((30, 40), dtype=bool)
    want[1:4, 2:4] = True
    assert (crowd == want).all()
    # the image without annotations: empty targets of the right shapes, and not in the training pool
    image, target = ds.load(1)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, 20, 20)
    assert ds.annotated() == [0]


def test_polygon_mask_area_matches_geometry():
    # a regular 12-gon of radius 9 centred off the pixel grid: area 3 r^2 = 243
    t = np.arange(12) * 2 * np.pi / 12
    poly = np.stack([20.3 + 9 * np.cos(t), 15.7 + 9 * np.sin(t)], axis=1).ravel().tolist()
    mask = polygon_mask([poly], 40, 30)
    assert abs(mask.sum() - 243) <= 0.03 * 243
    two = polygon_mask([[0, 0, 4, 0, 4, 4, 0, 4], [10, 10, 14, 10, 14, 14, 10, 14]], 20, 20)
    assert two.sum() == 32


@pytest.mark.parametrize("change, error, words", [
    ("missing", MissingDataError, "does not exist"),
    ("not json", DataError, "not valid JSON"),
    ("no images key", DataError, "missing the list 'images'"),
    ("orphan", DataError, "points at image 7, which is not in 'images'"),
    ("category", DataError, "category_id 5, which is not in 'categories'"),
    ("degenerate", DataError, "degenerate box"),
    ("negative", DataError, "negative width or height"),
    ("polygon", DataError, "a polygon must be an even number"),
])
def test_reader_errors_name_the_file_and_the_problem(tmp_path, change, error, words):
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
            "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}
    bad = {
        "orphan": {**good, "image_id": 7},
        "category": {**good, "category_id": 5},
        "degenerate": {**good, "bbox": [3, 3, 0, 5]},
        "negative": {**good, "bbox": [3, 3, -2, 5]},
        "polygon": {**good, "segmentation": [[1, 1, 6, 1, 6]]},
    }
    path, folder = _write_coco(tmp_path, annotations=[bad.get(change, good)])
    if change == "missing":
        path = tmp_path / "nope.json"
    elif change == "not json":
        path.write_text('{"images": [')
    elif change == "no images key":
        path.write_text('{"annotations": [], "categories": []}')
    with pytest.raises(error) as info:
        CocoDataset(path, folder)
    assert words in str(info.value) and str(path) in str(info.value)


def test_degenerate_boxes_can_be_skipped_and_missing_images_are_named(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 5], "area": 0, "iscrowd": 0,
             "segmentation": [[3, 3, 3, 8, 3, 3]]}]
    path, folder = _write_coco(tmp_path, annotations=anns, make_images=False)
    ds = CocoDataset(path, folder, skip_degenerate=True)
    assert ds.skipped == 1 and ds.num_instances == 0
    with pytest.raises(MissingDataError, match="a.png.*does not exist"):
        ds.load(0)
    with pytest.raises(DataError, match="fewer than the batch of 1"):
        ds.minibatch(1, seed=0)


def test_load_coco_reads_the_official_layout(tmp_path):
    root = tmp_path / "root"
    (root / "coco" / "annotations").mkdir(parents=True)
    path, folder = _write_coco(tmp_path)
    path.rename(root / "coco" / "annotations" / "instances_val2017.json")
    folder.rename(root / "coco" / "val2017")
    ds = load_coco(root, "val2017")
    assert ds.name == "coco/val2017" and len(ds) == 2 and ds.load(0)[1]["boxes"].shape == (2, 4)
    with pytest.raises(MissingDataError, match="no COCO data.*instances_train2017.json"):
        load_coco(root)  # no train2017 annotations and no coco-sample/


def test_load_coco_drops_boxes_without_area_with_a_warning(tmp_path):
    root = tmp_path / "root"
    (root / "coco" / "annotations").mkdir(parents=True)
    flat = {"id": 9, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 5], "area": 0, "iscrowd": 0,
            "segmentation": [[3, 3, 3, 8, 3, 3]]}
    good = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0,
            "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}
    path, folder = _write_coco(tmp_path, annotations=[good, flat])
    path.rename(root / "coco" / "annotations" / "instances_train2017.json")
    folder.rename(root / "coco" / "train2017")
    with pytest.warns(UserWarning, match="dropped 1 non-crowd annotations whose boxes have no area"):
        ds = load_coco(root)
    assert ds.num_instances == 1 and ds.skipped == 1
    with pytest.raises(DataError, match="degenerate box"):
        load_coco(root, skip_degenerate=False)


def test_coco_sample_loads(data_root):
    ds = load_coco(data_root)
    assert ds.name == "coco-sample"
    assert len(ds) == 6 and ds.num_instances == 36 and len(ds.categories) == 80
    assert sum(a.iscrowd for v in ds.instances.values() for a in v) == 1
    assert len(ds.annotated()) == 5  # 000000000089 has no annotations
    raw = json.loads((data_root / "images" / "coco-sample" / "annotations.json").read_text())
    areas = {a["id"]: a["area"] for a in raw["annotations"]}
    errors = []
    for i in range(len(ds)):
        image, target = ds.load(i)
        img = ds.images[i]
        assert image.shape == (3, img.height, img.width)
        assert bool((target["boxes"][:, 2:] > target["boxes"][:, :2]).all())
        polys = [a for a in ds.instances[img.id] if not a.iscrowd]
        errors += [m.sum() / areas[a.id] - 1 for a, m in zip(polys, target["masks"].numpy())]
    assert len(errors) == 35
    assert abs(np.mean(errors)) < 0.02 and np.max(np.abs(errors)) < 0.1
    crowd = next(a for v in ds.instances.values() for a in v if a.iscrowd)
    k = [a.id for a in ds.instances[crowd.image_id]].index(crowd.id)
    assert ds.masks(ds.index_of(crowd.image_id), include_crowd=True)[k].sum() == sum(
        crowd.segmentation["counts"][1::2])


# -- the backbone -------------------------------------------------------------------------------------
def test_all_standard_backbone_matches_torchvision_resnet34_counts():
    from torchvision.models import resnet34
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    spec = get_net("resnet-34")
    config = Configuration.create(spec, spec.standard(), 91)
    backbone = build_backbone(config)
    tv = resnet34()
    tv_body = count_parameters(tv) - count_parameters(tv.fc)
    ours = count_parameters(backbone.body)
    assert ours == body_params(config) == 21_281_984
    # post- vs pre-activation BN: 3 cout more BN weights/biases in each width-doubling block
    assert tv_body - ours == 3 * sum(s.out_channels for s in spec.slots if s.in_channels != s.out_channels) == 2_688
    tv_fpn = resnet_fpn_backbone(backbone_name="resnet34", weights=None, trainable_layers=5,
                                 norm_layer=nn.BatchNorm2d)
    assert count_parameters(tv_fpn) - count_parameters(backbone) == 2_688
    assert count_parameters(backbone.fpn) == count_parameters(tv_fpn.fpn) == fpn_params([64, 128, 256, 512])


def test_mixed_backbone_counts_and_stage_outputs():
    spec = get_net("resnet-34")
    blocks = ["B(4)", "G(N)", "BG(2,M)", "S"] * 4
    config = Configuration.create(spec, blocks, 91)
    backbone = build_backbone(config, torch.Generator().manual_seed(0))
    assert count_parameters(backbone.body) == body_params(config) == spec.params(blocks, 7) - (512 * 7 + 7)
    assert sum(isinstance(m, BlockProbe) for m in backbone.modules()) == 16
    # the body runs the same modules as the classification network, stage by stage
    net = spec.build(blocks, num_classes=3, generator=torch.Generator().manual_seed(1)).eval()
    body = ResNetBody(net).eval()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = body(x)
        assert torch.equal(feats["3"], net.blocks(net.stem(x)))
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(64, 16, 24), (128, 8, 12), (256, 4, 6), (512, 2, 3)]
    with pytest.raises(ArchError, match="four-stage ResNet"):
        ResNetBody(get_net("wrn-16-1").build())


# -- the detector and its Fisher potential -------------------------------------------------------------
@pytest.fixture(scope="module")
def coco_batch(data_root):
    return load_coco(data_root).minibatch(2, seed=0)


@pytest.fixture(scope="module")
def tiny_detector():
    config = Configuration.create("resnet-34", ["BG(2,M)"] * 16, 91)
    return build_detector(config, seed=3, **SMALL, **FAST_HEADS)


def test_mask_rcnn_trains_on_coco_images(coco_batch):
    images, targets = coco_batch
    config = Configuration.create("resnet-34", ["S"] * 16, 91)
    detector = build_detector(config, seed=0, **SMALL, **FAST_HEADS)
    assert detector.roi_heads.box_predictor.cls_score.out_features == 91
    detector.train()
    losses = detector(images, targets)
    assert set(losses) == set(LOSS_KEYS)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    loss = sum(losses.values())
    loss.backward()
    assert detector.backbone.body.layer1[0].conv1.weight.grad.abs().sum() > 0


def _fisher_by_hand(detector, images, targets, seed):
    """0.5 / N * sum over probes and channels of (sum over positions of a * dL/da)^2, with plain hooks."""
    model = copy.deepcopy(detector).train()
    acts = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        acts.append(output)

    for m in model.modules():
        if isinstance(m, BlockProbe):
            m.register_forward_hook(keep)
    torch.manual_seed(seed)
    sum(model(images, targets).values()).backward()
    assert len(acts) == 16
    n = len(images)
    return sum(float(((a.detach() * a.grad).sum(dim=(2, 3)).double() ** 2).sum()) * 0.5 / n for a in acts)


def test_fisher_potential_of_the_detection_loss(tiny_detector, coco_batch):
    images, targets = coco_batch
    detector = tiny_detector.eval()
    before = snapshot(detector)
    value = detection_fisher_potential(detector, images, targets, seed=5)
    assert_same(before, snapshot(detector))  # the caller's detector is untouched (mode included)
    assert value > 0
    assert value == pytest.approx(_fisher_by_hand(detector, images, targets, seed=5), rel=1e-5)
    assert detection_fisher_potential(detector, images, targets, seed=5) == value  # deterministic for a seed


def test_bad_detection_batches_are_refused(tiny_detector, coco_batch):
    images, targets = coco_batch
    with pytest.raises(BatchError, match="one target dict per image"):
        detection_fisher_potential(tiny_detector, images, targets[:1])
    bad = [dict(t) for t in targets]
    bad[0]["labels"] = bad[0]["labels"].clone()
    bad[0]["labels"][0] = 91
    with pytest.raises(BatchError, match="labels must lie in 1..90"):
        detection_fisher_potential(tiny_detector, images, bad)
    flat = [dict(t) for t in targets]
    flat[1]["boxes"] = flat[1]["boxes"].clone()
    flat[1]["boxes"][0, 2] = flat[1]["boxes"][0, 0]
    with pytest.raises(BatchError, match="box without area"):
        detection_fisher_potential(tiny_detector, images, flat)


def test_detection_batch_scores_through_score(tiny_detector, coco_batch):
    images, targets = coco_batch
    before = snapshot(tiny_detector)
    value = score(tiny_detector, DetectionBatch(images, targets), "fisher_potential", seed=5)
    assert_same(before, snapshot(tiny_detector))
    assert value == detection_fisher_potential(tiny_detector, images, targets, seed=5)
    # fisher probes every conv and linear layer of the detector, through the same loss
    assert score(tiny_detector, DetectionBatch(images, targets), "fisher", seed=5) > 0


def test_detection_batch_is_refused_where_it_cannot_work(tiny_detector, coco_batch):
    images, targets = coco_batch
    before = snapshot(tiny_detector)
    with pytest.raises(BatchError, match="snip reads the inputs as one tensor"):
        score(tiny_detector, DetectionBatch(images, targets), "snip")
    with pytest.raises(BatchError, match="target 0 must be a dict"):
        score(tiny_detector, DetectionBatch(images, [[1], [2]]), "fisher_potential")
    with pytest.raises(BatchError, match=r"image 0 must be a float tensor \(3, H, W\)"):
        score(tiny_detector, DetectionBatch([(im * 255).byte() for im in images], targets), "fisher_potential")
    assert_same(before, snapshot(tiny_detector))
    classifier = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 91))
    with pytest.raises(ModelError, match=r"calls model\(images, targets\)"):
        score(classifier, DetectionBatch(images, targets), "fisher")


def test_detector_scores_alike_in_both_layouts(coco_batch):
    """NHWC puts the whole detector in channels-last with exact BatchNorm; it scores the same detector."""
    images, targets = coco_batch
    config = Configuration.create("resnet-34", ["S", "BG(2,M)", "B(2)", "G(4)"] * 4, 91)
    nchw, counts = score_detection_configuration(config, images, targets, 7, **SMALL)
    nhwc, counts_nhwc = score_detection_configuration(config, images, targets, 7, **SMALL, layout="nhwc")
    assert counts == counts_nhwc and counts["params"] == body_params(config)
    assert nhwc != nchw and nhwc == pytest.approx(nchw, rel=1e-2)  # float32 rounding apart, ~1e-3 measured
    detector = network_in_layout(build_detector(config, seed=7, **SMALL), "nhwc")
    assert all(type(m) is ExactBatchNorm2d for m in detector.modules() if isinstance(m, nn.BatchNorm2d))
    assert detector.backbone.body.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert detector.roi_heads.mask_head[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert score(detector, DetectionBatch(images, targets), "fisher_potential", seed=7) == nhwc


# -- the search --------------------------------------------------------------------------------------------
def test_coco_search_end_to_end(data_root, tmp_path, capsys):
    out, store = tmp_path / "best.json", tmp_path / "cands.jsonl"
    argv = ["blockswap", "search", "--net", "resnet-34", "--dataset", "coco", "--budget", "6M", "--samples", "2",
            "--seed", "4", "--min-size", "128", "--max-size", "160", "--data", str(data_root), "--out", str(out),
            "--store", str(store), "--no-progress"]
    assert main(argv) == 0
    best = json.loads(out.read_text())
    rows = [json.loads(line) for line in store.read_text().splitlines()[1:]]  # after the settings header
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert best["score"] == max(r["score"] for r in rows) and best["task"] == "coco-mask-rcnn"
    assert all(5_850_000 <= r["params"] <= 6_150_000 for r in rows)
    config = Configuration.load(out)  # the winner file is a configuration file
    assert body_params(config) == best["params"] and config.num_classes == 91
    assert best["backbone_params"] == best["params"] + fpn_params([64, 128, 256, 512])
    assert "best of 2 Mask R-CNN backbones on coco-sample" in capsys.readouterr().out
    # the stored score is the candidate's seeded network on its seeded minibatch
    row = rows[1]
    images, targets = load_coco(data_root).minibatch(2, row["seed"])
    assert [int(t["image_id"]) for t in targets] == row["image_ids"]
    assert {r["layout"] for r in rows} == {"nhwc"}  # --layout auto on the CPU
    again, _ = score_detection_configuration(Configuration("resnet-34", tuple(row["blocks"]), 91), images, targets,
                                             row["seed"], **SMALL, layout="nhwc")
    assert again == row["score"]
    assert main(argv) == 0  # rerun: everything comes from the store
    assert len(store.read_text().splitlines()) == 3


def test_coco_search_refuses_wrn_and_impossible_budgets(data_root, tmp_path, capsys):
    base = ["blockswap", "search", "--dataset", "coco", "--data", str(data_root), "--out", str(tmp_path / "b.json")]
    assert main([*base, "--net", "wrn-16-1", "--budget", "100k"]) == 2
    assert "needs a ResNet skeleton" in capsys.readouterr().err
    assert main([*base, "--net", "resnet-34", "--budget", "500k"]) == 2
    err = capsys.readouterr().err
    assert "1,383,936" in err and "21,281,984" in err and "backbone body" in err
    assert not (tmp_path / "b.json").exists()
