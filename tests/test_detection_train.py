"""Training the Mask R-CNN backbone: the paper's (torchvision's) schedule and its scaling, seeded batches, resume = straight,
the train-detector / eval-detector commands and their refusals of bad input."""

from __future__ import annotations

import json

import pytest
import torch

from zc_proxies.blockswap import Configuration
from zc_proxies.blockswap.checkpoint import save_network
from zc_proxies.blockswap.detection_train import (
    DetectionTrainSettings,
    batch_plan,
    flip_horizontally,
    load_detector,
    read_detector_record,
    train_detector,
)
from zc_proxies.cli import main
from zc_proxies.data.coco import load_coco
from zc_proxies.errors import ConfigError, DataError

CHEAP = ["BG(2,M)"] * 16
FAST_HEADS = {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 50, "rpn_pre_nms_top_n_test": 100,
              "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 16}
TINY = {"min_size": 96, "max_size": 128, "detector_options": FAST_HEADS}


# -- the schedule -----------------------------------------------------------------------------------
def test_defaults_are_the_papers_schedule_and_scale_linearly():
    # torchvision's Mask R-CNN defaults on train2017's 117,266 annotated images: 7,330 iterations an epoch at batch 16
    s = DetectionTrainSettings()
    assert (s.iterations, s.batch_size, s.lr, s.steps, s.warmup_iters) == (26 * 7330, 16, 0.02,
                                                                          (16 * 7330, 22 * 7330), 1000)
    assert (s.momentum, s.weight_decay, s.gamma, s.warmup_factor) == (0.9, 1e-4, 0.1, 1e-3)
    assert (s.bias_lr_factor, s.bias_weight_decay) == (1.0, 1e-4)  # every parameter alike
    assert DetectionTrainSettings.scaled(16) == s
    eight = DetectionTrainSettings.scaled(8)  # lr 0.01, twice the iterations: the same 26 epochs
    assert (eight.iterations, eight.lr, eight.steps, eight.warmup_iters) == (26 * 14659, 0.01,
                                                                            (16 * 14659, 22 * 14659), 1000)
    tiny = DetectionTrainSettings.scaled(2, num_images=6)  # the sample: 3 iterations an epoch, warm-up 2
    assert (tiny.iterations, tiny.steps, tiny.warmup_iters) == (78, (48, 66), 2)
    short = DetectionTrainSettings.scaled(2, iterations=260, num_images=6)
    assert (short.lr, short.steps, short.warmup_iters) == (0.0025, (160, 220), 2)
    assert DetectionTrainSettings.scaled(2, iterations=900, lr=0.01, steps=(100,)).steps == (100,)
    # warm-up from lr / 1000, then x0.1 after each step
    assert s.lr_at(0) == pytest.approx(0.02 / 1000)
    assert s.lr_at(500) == pytest.approx(0.02 * (0.001 + 0.999 * 0.5))
    assert s.lr_at(1000) == s.lr_at(16 * 7330 - 1) == 0.02
    assert s.lr_at(16 * 7330) == pytest.approx(0.002) and s.lr_at(22 * 7330) == pytest.approx(0.0002)


@pytest.mark.parametrize("change, words", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"steps": (80_000, 60_000)}, "steps must be increasing"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"flip": 2.0}, "flip is a probability"),
    ({"min_size": 1400}, "min_size 1400 exceeds max_size 1333"),
    ({"detector_options": {"box_batch": 3}}, "unknown detector option 'box_batch'"),
    ({"detector_options": {"box_batch_size_per_image": "many"}}, "must be a finite number"),
    ({"seed": -1}, "seed -1 is out of range"),
])
def test_bad_settings_are_refused(change, words):
    with pytest.raises(ConfigError, match=words):
        DetectionTrainSettings(**change)


def test_batches_are_seeded_epochs_of_the_pool():
    s = DetectionTrainSettings(batch_size=2, seed=3)
    picks = [batch_plan(s, 5, i) for i in range(10)]  # 20 images: four epochs of a pool of 5
    positions = [p for batch, _ in picks for p, _ in batch]
    for e in range(4):
        assert sorted(positions[5 * e:5 * e + 5]) == list(range(5))
    assert positions[:5] != positions[5:10]  # a fresh order each epoch
    assert batch_plan(s, 5, 7) == picks[7]  # a function of (seed, iteration) alone
    assert len({seed for _, seed in picks}) == 10
    assert batch_plan(DetectionTrainSettings(batch_size=2, seed=4), 5, 7) != picks[7]
    assert not any(f for batch, _ in (batch_plan(DetectionTrainSettings(flip=0.0), 5, i) for i in range(3))
                   for _, f in batch)


def test_flip_mirrors_boxes_and_masks():
    image = torch.rand(3, 20, 30)
    masks = torch.zeros(1, 20, 30, dtype=torch.uint8)
    masks[0, 2:8, 3:13] = 1
    target = {"boxes": torch.tensor([[3.0, 2.0, 13.0, 8.0]]), "labels": torch.tensor([1]), "masks": masks}
    flipped, t = flip_horizontally(image, target)
    assert torch.equal(flipped[:, :, 0], image[:, :, -1])
    assert t["boxes"].tolist() == [[17.0, 2.0, 27.0, 8.0]]
    cols = t["masks"][0].any(0).nonzero().flatten()
    assert (int(cols.min()), int(cols.max()) + 1) == (17, 27)
    assert target["boxes"].tolist() == [[3.0, 2.0, 13.0, 8.0]]  # the original is untouched


# -- training ----------------------------------------------------------------------------------------------
class _Killed(Exception):
    pass


def test_resumed_run_is_bit_identical_to_a_straight_one(data_root, tmp_path):
    data = load_coco(data_root)
    config = Configuration.create("resnet-34", CHEAP, 91)
    settings = DetectionTrainSettings(iterations=3, batch_size=1, lr=0.005, steps=(2,), warmup_iters=1, **TINY)
    straight = train_detector(config, data, settings, tmp_path / "a", checkpoint_every=2, log_every=1,
                              progress=False)

    def kill_at_3(row):
        if row["iteration"] == 3:
            raise _Killed  # dies after the checkpoint of iteration 2, mid-way through the next interval

    with pytest.raises(_Killed):
        train_detector(config, data, settings, tmp_path / "b", checkpoint_every=2, log_every=1, progress=False,
                       on_log=kill_at_3)
    assert not (tmp_path / "b" / "model.pt").exists()
    assert len(json.loads((tmp_path / "b" / "history.json").read_text())) == 2
    resumed = train_detector(config, data, settings, tmp_path / "b", checkpoint_every=2, log_every=1,
                             progress=False)
    assert resumed.resumed_from == 2 and straight.resumed_from == 0
    a, b = straight.detector.state_dict(), resumed.detector.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def rows(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert rows(straight.history) == rows(resumed.history) and len(straight.history) == 3
    assert [r["lr"] for r in straight.history] == pytest.approx([0.005 / 1000, 0.005, 0.0005])
    assert all(r["loss"] > 0 for r in straight.history)
    # the model file reloads to the same detector, in eval mode
    detector, record = load_detector(tmp_path / "b")
    assert not detector.training and record["iterations"] == 3 and record["blocks"] == CHEAP
    assert all(torch.equal(detector.state_dict()[k], b[k]) for k in b)
    # a finished run reruns without training; a different run in the same folder is refused
    again = train_detector(config, data, settings, tmp_path / "b", progress=False)
    assert again.resumed_from == 3 and all(torch.equal(again.detector.state_dict()[k], b[k]) for k in b)
    with pytest.raises(DataError, match="belongs to a different run.*settings.lr"):
        train_detector(config, data, DetectionTrainSettings(iterations=3, batch_size=1, lr=0.01, steps=(2,),
                                                            warmup_iters=1, **TINY), tmp_path / "b", progress=False)


# -- the commands ------------------------------------------------------------------------------------------
def _config_file(tmp_path, blocks=CHEAP, net="resnet-34", classes=91):
    path = tmp_path / "best.json"
    Configuration.create(net, blocks, classes).save(path, task="coco-mask-rcnn")
    return path


def test_train_and_eval_detector_commands(data_root, tmp_path, capsys):
    config = _config_file(tmp_path)
    out = tmp_path / "run"
    argv = ["blockswap", "train-detector", "--config", str(config), "--out", str(out), "--data", str(data_root),
            "--iterations", "2", "--batch-size", "1", "--min-size", "96", "--max-size", "128", "--log-every", "1",
            "--eval-split", "val2017", "--eval-limit", "1", "--no-progress",
            *(f"--detector-option={k}={v}" for k, v in FAST_HEADS.items())]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 iterations of 1 images, lr 0.00125 (warm-up 1)" in printed  # 0.02 x 1/16, scaled schedule
    assert "| bbox |" in printed and "| segm |" in printed
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "model.pt", "history.json", "history.csv", "eval"}
    summary = json.loads((out / "eval" / "metrics.json").read_text())
    assert summary["images"] == 1 and set(summary["metrics"]) == {"bbox", "segm"}
    record = read_detector_record(out / "model.pt")
    assert record["min_size"] == 96 and record["detector_options"] == FAST_HEADS

    ev = tmp_path / "ev"
    assert main(["blockswap", "eval-detector", "--model", str(out), "--out", str(ev), "--data", str(data_root),
                 "--limit", "2", "--save-detections", "--no-progress"]) == 0
    assert "coco-sample: 2 images" in capsys.readouterr().out
    assert {p.name for p in ev.iterdir()} == {"metrics.json", "metrics.csv", "metrics.md", "detections.json"}
    summary = json.loads((ev / "metrics.json").read_text())
    assert summary["images"] == 2 and summary["iterations"] == 2 and summary["min_size"] == 96
    assert all(v is None or 0.0 <= v <= 1.0 for m in summary["metrics"].values() for v in m.values())


def test_bad_input_is_a_clear_error(data_root, tmp_path, capsys):
    good = _config_file(tmp_path)
    base = ["blockswap", "train-detector", "--out", str(tmp_path / "o"), "--data", str(data_root), "--no-progress"]

    def error(argv):
        assert main(argv) == 2
        return capsys.readouterr().err

    assert "configuration file" in error([*base, "--config", str(tmp_path / "nope.json")])
    assert "COCO annotation file" in error([*base, "--config", str(good), "--annotations",
                                            str(tmp_path / "missing.json"), "--images", str(tmp_path)])
    assert "give both an annotation file and its image folder" in error(
        [*base, "--config", str(good), "--annotations", str(tmp_path / "x.json")])
    wrn = tmp_path / "wrn"
    wrn.mkdir()
    cfg = Configuration.create("wrn-16-1", ["S"] * 6, 10)
    cfg.save(wrn / "best.json")
    assert "needs a ResNet configuration" in error([*base, "--config", str(wrn / "best.json")])
    small = tmp_path / "small"
    small.mkdir()
    assert "category ids up to 90, but the configuration's head has 10 classes" in error(
        [*base, "--config", str(_config_file(small, classes=10))])
    assert "unknown detector option 'heads'" in error([*base, "--config", str(good), "--detector-option", "heads=2"])
    assert "expected NAME=NUMBER" in error([*base, "--config", str(good), "--detector-option", "heads"])
    assert "--device cuda" in error([*base, "--config", str(good), "--device", "cuda"]) or torch.cuda.is_available()
    assert not (tmp_path / "o").exists()  # nothing was written

    ev = ["blockswap", "eval-detector", "--out", str(tmp_path / "e"), "--data", str(data_root)]
    assert "network file" in error([*ev, "--model", str(tmp_path / "none.pt")])
    classifier = tmp_path / "net.pt"
    save_network(classifier, cfg.build())
    assert "is a classification network" in error([*ev, "--model", str(classifier)])


@pytest.mark.slow
def test_training_on_the_sample_raises_its_box_ap(data_root, tmp_path):
    """200 steps of 2 images (lr 0.0025: 0.02 scaled to batch 2) take the sample's box AP from 0.

    The measured run below used a 50-step warm-up from lr / 3, biases at twice the rate and without
    weight decay (maskrcnn-benchmark's solver), pinned here so that the figures stay the run's.

    Measured on 2 busy shared CPU cores (1 thread, ~3.7 s a step, 12.5 minutes of training):
    untrained, no detection clears the 0.05 score threshold (bbox AP 0.0); after 100 steps bbox AP
    0.021 (AP50 0.115); after 200 bbox AP 0.069 (AP50 0.185, APl 0.192) and segm AP 0.031 (AP50
    0.154). ``min_size`` 192 and smaller RPN / box-head samples keep it affordable; at lr 0.01 or
    0.02 (4x and 8x the scaled rate) this from-scratch detector diverges within 100 steps.
    """
    from zc_proxies.blockswap.coco_eval import evaluate_detector
    from zc_proxies.blockswap.detection import build_detector
    from zc_proxies.runs.seeding import derive_seed

    data = load_coco(data_root)
    config = Configuration.create("resnet-34", CHEAP, 91)
    heads = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "box_batch_size_per_image": 64}
    settings = DetectionTrainSettings(iterations=200, batch_size=2, lr=0.0025, steps=(150, 180), warmup_iters=50,
                                      warmup_factor=1 / 3, bias_lr_factor=2.0, bias_weight_decay=0.0,
                                      min_size=192, max_size=256, detector_options=heads)
    untrained = build_detector(config, seed=derive_seed(0, "weights"), min_size=192, max_size=256, **heads)
    before = evaluate_detector(untrained, data).metrics["bbox"]
    result = train_detector(config, data, settings, tmp_path / "run", checkpoint_every=100, progress=False)
    after = evaluate_detector(result.detector, data).metrics["bbox"]
    assert before["AP"] == 0.0
    assert after["AP"] > 0.02 and after["AP50"] > 0.1
