"""BlockSwap on ImageNet: the Section 6 recipe, the JPEG pipeline, AT over ResNet-34's four stages, resuming.

Everything runs on the 250-image ImageNet sample at 32-64 pixels (``--image-size``), a handful
of images at a time, so the whole file takes well under a minute on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from model_state import assert_same, snapshot
from PIL import Image

from zc_proxies.blockswap import Configuration
from zc_proxies.blockswap.attention import StageTaps, attention_map, distillation_loss
from zc_proxies.blockswap.checkpoint import load_network, read_record
from zc_proxies.blockswap.networks import get_net
from zc_proxies.blockswap.train import (
    CIFAR_RECIPE,
    IMAGENET_RECIPE,
    TrainSettings,
    distill,
    measure,
    recipe,
    train,
)
from zc_proxies.cli import main
from zc_proxies.data.imagenet_train import epoch_plan, find_imagenet, resized_crop_box
from zc_proxies.data.training import eval_batches, load_training_data, subset, train_batches
from zc_proxies.errors import ConfigError, DataError, MissingDataError, UnknownNameError
from zc_proxies.runs.seeding import derive_seed

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
#: A cheap mixed ResNet-34 student (3.0M parameters), so that checkpoints stay small.
STUDENT = ["G(N)", "B(4)", "G(16)", "B(2)"] * 4


def _sample(data_root, size: int, resize: int, **kw):
    return load_training_data("imagenet", data_root, image_size=size, resize=resize, **kw)


@pytest.fixture(scope="module")
def sample32(data_root):
    train, evals, notes = _sample(data_root, 32, 36, test=False)
    return train


@pytest.fixture(scope="module")
def teacher():
    """A (random) ResNet-34 teacher in eval mode, as distillation runs it; no test may change it."""
    return get_net("resnet-34").build(generator=torch.Generator().manual_seed(1)).eval()


def _np_map(a: np.ndarray) -> np.ndarray:
    q = (a.astype(np.float64) ** 2).mean(axis=1).reshape(a.shape[0], -1)
    return q / np.sqrt((q ** 2).sum(axis=1, keepdims=True))


# -- the recipe ---------------------------------------------------------------------------------------
def test_imagenet_recipe_is_section_6_and_the_cifar_fingerprint_is_unchanged():
    r = IMAGENET_RECIPE  # Section 6, "Implementation Details"
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.nesterov, r.weight_decay) == (100, 256, 0.1, 0.9, False, 1e-4)
    assert (r.schedule, r.step_size, r.gamma, r.cutout, r.beta, r.amp) == ("step", 30, 0.1, 0, 1000.0, True)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        assert r.lr_at(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()
    assert [r.lr_at(e) for e in (0, 29, 30, 60, 99)] == pytest.approx([0.1, 0.1, 0.01, 1e-3, 1e-4], rel=1e-12)

    # A CIFAR run's fingerprint has exactly the keys it had before the ImageNet recipe existed,
    # so checkpoints written then still resume.
    old = {"batch_size", "lr", "momentum", "nesterov", "weight_decay", "eta_min", "cutout", "seed"}
    assert set(CIFAR_RECIPE.fingerprint(False)) == old and set(CIFAR_RECIPE.fingerprint(True)) == old | {"beta"}
    assert CIFAR_RECIPE == TrainSettings() and recipe("cifar100") == CIFAR_RECIPE
    assert {"schedule", "step_size", "gamma", "amp"} <= set(r.fingerprint(True)) and "eta_min" not in r.fingerprint(True)

    assert recipe("imagenet", epochs=3, lr=None) == dataclasses.replace(IMAGENET_RECIPE, epochs=3)
    with pytest.raises(UnknownNameError, match="no training recipe for dataset 'mnist'"):
        recipe("mnist")
    with pytest.raises(ConfigError, match="unknown training setting"):
        recipe("imagenet", warmup=5)
    with pytest.raises(ConfigError, match="schedule must be one of cosine, step"):
        recipe("imagenet", schedule="poly")


# -- the JPEG pipeline ----------------------------------------------------------------------------------
def test_resized_crop_box_is_the_inception_crop():
    gen = np.random.default_rng(0)
    for width, height in [(500, 375), (40, 30), (64, 64)]:
        for _ in range(200):
            left, top, w, h = resized_crop_box(width, height, gen)
            assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
            if (w, h) != (width, height):  # a drawn crop: area and aspect in range, up to rounding
                assert 0.08 * width * height * 0.8 <= w * h <= width * height
                assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
    # No crop of 8%..100% of a 1000x10 strip fits with an aspect in [3/4, 4/3]: the fallback is the
    # centred strip cut down to aspect 4/3.
    assert resized_crop_box(1000, 10, np.random.default_rng(1)) == ((1000 - 13) // 2, 0, 13, 10)
    assert resized_crop_box(10, 1000, np.random.default_rng(1)) == (0, (1000 - 13) // 2, 10, 13)


def test_epochs_are_seeded_and_do_not_depend_on_workers(sample32):
    data = subset(sample32, np.arange(10))
    plan = epoch_plan(10, 4, seed=5, epoch=2)
    assert [len(b) for b in plan] == [4, 4, 2]
    assert sorted(i for b in plan for i, _ in b) == list(range(10))  # every image once
    assert plan == epoch_plan(10, 4, seed=5, epoch=2) and plan != epoch_plan(10, 4, seed=5, epoch=3)

    a = list(train_batches(data, 4, seed=5, epoch=2))
    b = list(train_batches(data, 4, seed=5, epoch=2, workers=2))
    c = list(train_batches(data, 4, seed=5, epoch=3))
    assert [x.shape for x, _ in a] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(data.labels.tolist())
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    before = torch.get_rng_state()
    list(train_batches(data, 4, seed=5, epoch=2, workers=1))
    assert torch.equal(before, torch.get_rng_state())  # the DataLoader draws nothing from torch's global state

    cut = list(train_batches(data, 4, seed=5, epoch=2, cutout=8))  # Cutout changes only a square, crops stay
    for (xa, _), (xc, _) in zip(a, cut):
        differ = (xa != xc).any(1)
        assert (xc.permute(0, 2, 3, 1)[differ] == 0).all()
        for mask in differ:
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            if len(rows):
                assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8


def test_evaluation_is_resize_then_centre_crop(sample32):
    data = subset(sample32, np.arange(3))
    x, y = next(iter(eval_batches(data, 3)))
    assert x.shape == (3, 3, 32, 32) and y.tolist() == data.labels.tolist()
    for i, path in enumerate(data.images):
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            scale = 36 / min(w, h)  # shorter side to --resize 36, bilinear
            img = img.resize((max(36, round(w * scale)), max(36, round(h * scale))), Image.BILINEAR)
            a = np.asarray(img, dtype=np.float64) / 255.0
        top, left = (a.shape[0] - 32) // 2, (a.shape[1] - 32) // 2
        want = ((a[top:top + 32, left:left + 32] - MEAN) / STD).transpose(2, 0, 1)
        np.testing.assert_allclose(x[i].numpy(), want, rtol=0, atol=1e-5)


def _write_png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_imagenet_layouts_train_val_tree_and_errors(tmp_path):
    root = tmp_path / "data"
    for k, wnid in enumerate(["n01", "n02", "n03"]):
        for j in range(2):
            _write_png(root / "imagenet" / "train" / wnid / f"{j}.png", 10 * k + j)
    for k, wnid in enumerate(["n02", "n03"]):  # the validation tree lacks a class: indices by name
        _write_png(root / "imagenet" / "val" / wnid / "v.png", 100 + k)
    train_set, evals, notes = load_training_data("imagenet", root, holdout=2, seed=0, image_size=24, resize=28,
                                                 num_classes=3)
    assert find_imagenet(root)[2] == "imagenet" and notes == []
    assert len(train_set) == 4 and len(evals["holdout"]) == 2 and evals["val"].labels.tolist() == [1, 2]
    assert (train_set.size, train_set.resize, train_set.num_classes) == (24, 28, 3)
    x, _ = next(iter(eval_batches(evals["val"], 2)))
    assert x.shape == (2, 3, 24, 24)

    _write_png(root / "imagenet" / "val" / "n09" / "v.png", 7)
    with pytest.raises(DataError, match="class folders that .*train lacks: n09"):
        load_training_data("imagenet", root, num_classes=3)
    _, evals, notes = load_training_data("imagenet", root, num_classes=3, test=False)
    assert "val" not in evals

    flat = tmp_path / "flat"
    _write_png(flat / "imagenet" / "n05" / "a.png", 1)  # one tree: training images only
    _, evals, notes = load_training_data("imagenet", flat)
    assert evals == {} and "no validation set evaluated" in notes[0]

    with pytest.raises(MissingDataError, match="no ImageNet images under"):
        load_training_data("imagenet", tmp_path / "flat" / "imagenet" / "n05")
    with pytest.raises(ConfigError, match=r"evaluation resize \(200\) must be at least the image size \(224\)"):
        load_training_data("imagenet", flat, resize=200)
    with pytest.raises(ConfigError, match="apply to ImageNet only"):
        load_training_data("cifar10", root, image_size=24)


# -- attention transfer over ResNet-34's four stages ---------------------------------------------------------
def test_resnet34_at_loss_equals_the_formula(data_root, teacher):
    data, _, _ = _sample(data_root, 64, 72, test=False)
    x, y = next(iter(eval_batches(subset(data, np.arange(2)), 2)))
    student = Configuration.create("resnet-34", STUDENT, 1000).build(torch.Generator().manual_seed(2))
    with torch.no_grad(), StageTaps(student) as s_taps, StageTaps(teacher) as t_taps:
        _, t_acts = t_taps.capture(x)
        logits, s_acts = s_taps.capture(x)
        parts = distillation_loss(logits, y, s_acts, t_acts, beta=1000.0)
    # The outputs of the four sections (Section 6); at 64 pixels 16, 8, 4, 2 pixels a side.
    assert [tuple(a.shape) for a in t_acts] == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 256, 4, 4), (2, 512, 2, 2)]
    assert parts.weight == 750.0  # Section 6: "beta is set to 750" = the code's beta 1000 x 3 / 4 sections

    # Independently, in float64: per stage, f(A) = mean over channels of A^2 per pixel, divided by its
    # L2 norm per image; AT = mean over the N x H*W entries of the squared difference of student and
    # teacher maps (the authors' at_loss). It is eq. (1)'s norm squared, averaged over the batch and
    # divided by H*W: mean_n ||f_s/|f_s| - f_t/|f_t|||^2 / (H*W).
    z = logits.double().numpy()
    ce = float(np.mean(np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(2), y.numpy()]))
    ats = []
    for s, t in zip(s_acts, t_acts):
        d = _np_map(s.numpy()) - _np_map(t.numpy())
        ats.append(float((d ** 2).mean()))
        per_image = np.linalg.norm(d, axis=1) ** 2
        assert ats[-1] == pytest.approx(per_image.mean() / d.shape[1], rel=1e-12)
    assert all(a > 1e-5 for a in ats)  # the two networks' maps differ at every stage: the check is not vacuous
    assert parts.ce.item() == pytest.approx(ce, rel=1e-5)
    assert [a.item() for a in parts.at] == pytest.approx(ats, rel=1e-4)
    assert parts.total.item() == pytest.approx(ce + 750.0 * sum(ats), rel=1e-5)

    # Mixed precision: float16 activations give float32 maps, equal to the float32 maps of the same values.
    half = s_acts[1].half()
    assert attention_map(half).dtype == torch.float32
    assert torch.allclose(attention_map(half), attention_map(half.float()), rtol=0, atol=0)


# -- training and distillation ---------------------------------------------------------------------------------
def test_imagenet_distillation_resumes_bit_identically_and_freezes_the_teacher(data_root, teacher, tmp_path):
    data, evals, _ = _sample(data_root, 32, 36, holdout=4, limit=8, seed=0, test=False)
    config = Configuration.create("resnet-34", STUDENT, 1000)
    settings = recipe("imagenet", epochs=2, batch_size=4, step_size=1, seed=3)  # lr 0.1, then 0.01
    before = snapshot(teacher)

    straight = distill(config, teacher, data, settings, tmp_path / "straight", eval_sets=evals, progress=False)
    assert_same(before, snapshot(teacher))  # weights, buffers, grads, modes, hooks: bit for bit
    first = distill(config, teacher, data, dataclasses.replace(settings, epochs=1), tmp_path / "steps",
                    eval_sets=evals, progress=False)
    assert len(first.history) == 1
    resumed = distill(config, teacher, data, settings, tmp_path / "steps", eval_sets=evals, progress=False,
                      workers=2)  # another worker count: the same batches
    assert resumed.resumed_from == 1 and len(resumed.history) == 2
    assert_same(before, snapshot(teacher))

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keep = ("epoch", "lr", "train_loss", "train_acc", "train_ce", "train_at", "holdout_loss", "holdout_acc",
            "holdout_top5")
    assert [{k: r[k] for k in keep} for r in straight.history] == [{k: r[k] for k in keep} for r in resumed.history]
    assert [r["lr"] for r in resumed.history] == pytest.approx([0.1, 0.01])
    assert all(0 <= r["holdout_acc"] <= r["holdout_top5"] <= 100 for r in resumed.history)
    fp = read_record(tmp_path / "steps" / "checkpoint.pt", "checkpoint")["fingerprint"]
    assert fp["data"]["transform"]["size"] == 32 and fp["settings"]["schedule"] == "step"
    assert fp["teacher"]["net"] == "resnet-34"

    other, _, _ = _sample(data_root, 40, 44, holdout=4, limit=8, seed=0, test=False)
    with pytest.raises(DataError, match=r"belongs to a different run \(data.transform.resize: stored 36, now 44"):
        distill(config, teacher, other, settings, tmp_path / "steps", eval_sets=evals, progress=False)


def test_distillation_loss_falls_when_overfitting_a_handful_of_images(data_root, teacher, tmp_path):
    data, _, _ = _sample(data_root, 64, 64, limit=4, seed=0, test=False)
    config = Configuration.create("resnet-34", STUDENT, 1000)
    # The recipe's lr 0.1 is for 256 images a batch; scaled linearly to 4 images.
    settings = recipe("imagenet", epochs=8, batch_size=4, lr=0.1 * 4 / 256, seed=3)
    x, y = next(iter(eval_batches(data, 4)))

    def loss_on_the_images(model):  # train-mode BatchNorm, as in training, on the unaugmented images
        model.train()
        with torch.no_grad(), StageTaps(model) as s_taps, StageTaps(teacher) as t_taps:
            _, t_acts = t_taps.capture(x)
            logits, s_acts = s_taps.capture(x)
            return distillation_loss(logits, y, s_acts, t_acts)

    start = loss_on_the_images(config.build(torch.Generator().manual_seed(derive_seed(3, "weights"))))
    result = distill(config, teacher, data, settings, tmp_path / "s", progress=False)
    end = loss_on_the_images(result.model)
    # The total (CE + 750 x the four stages' AT) on the four images falls, and so do both its parts. Each
    # epoch's training loss is on other random crops, so it is noisy; its cross-entropy still falls clearly.
    assert end.total.item() < 0.75 * start.total.item()
    assert end.ce.item() < 0.5 * start.ce.item()
    assert sum(a.item() for a in end.at) < sum(a.item() for a in start.at)
    assert result.history[-1]["train_ce"] < 0.6 * result.history[0]["train_ce"]


def test_mixed_precision_is_used_on_cuda_only(sample32, tmp_path):
    data = subset(sample32, np.arange(4))
    config = Configuration.create("wrn-10-1", ["S"] * 3, 1000)
    base = recipe("imagenet", epochs=1, batch_size=4, seed=0)
    on = train(config, data, base, tmp_path / "amp", progress=False)  # amp asked for, but on the CPU
    off = train(config, data, dataclasses.replace(base, amp=False), tmp_path / "fp32", progress=False)
    a, b = on.model.state_dict(), off.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_record(tmp_path / "amp" / "checkpoint.pt", "checkpoint")["scaler"] == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_distillation_on_cuda(data_root, teacher, tmp_path):
    data, evals, _ = _sample(data_root, 64, 72, holdout=8, limit=32, seed=0, test=False)
    config = Configuration.create("resnet-34", STUDENT, 1000)
    settings = recipe("imagenet", epochs=2, batch_size=8, seed=1)
    result = distill(config, teacher, data, settings, tmp_path / "s", eval_sets=evals, device="cuda",
                     progress=False, workers=2)
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["holdout_loss"]) for r in result.history)
    assert read_record(tmp_path / "s" / "checkpoint.pt", "checkpoint")["scaler"]["scale"] > 0
    assert next(teacher.parameters()).device.type == "cpu"  # a copy went to the GPU
    m = measure(result.model, evals["holdout"], 8, "cuda", amp=True)
    assert set(m) == {"loss", "acc", "top5"}


# -- the command line ------------------------------------------------------------------------------------------
def test_cli_imagenet_train_then_distill(data_root, tmp_path, capsys):
    teacher_dir, student_dir, cfg = tmp_path / "teacher", tmp_path / "student", tmp_path / "best.json"
    Configuration.create("resnet-34", STUDENT, 1000).save(cfg, params=0, score=1.0)
    cheap = tmp_path / "teacher.json"  # a cheap ResNet-34 stands in for the teacher: small files to write
    Configuration.create("resnet-34", ["B(4)"] * 16, 1000).save(cheap)
    common = ["--dataset", "imagenet", "--epochs", "1", "--batch-size", "4", "--train-images", "8", "--holdout", "4",
              "--image-size", "32", "--resize", "36", "--workers", "0", "--seed", "2", "--data", str(data_root),
              "--no-progress"]
    assert main(["blockswap", "train", "--net", "resnet-34", "--config", str(cheap), *common,
                 "--out", str(teacher_dir)]) == 0
    out = capsys.readouterr().out
    assert "note: no validation set evaluated" in out
    assert "training on 8 imagenet-sample images; evaluated after each epoch: holdout 4" in out
    assert "training resnet-34 (1,998,056 parameters) for 1 epochs" in out
    assert ("recipe: SGD momentum 0.9, lr step: 0.1 x 0.1 every 30 epochs, batch 4, weight decay 0.0001, cutout 0, "
            "mixed precision off") in out
    assert "| holdout loss" in out and "top-5" in out and "training done: 1 epochs" in out

    argv = ["blockswap", "distill", "--config", str(cfg), "--teacher", str(teacher_dir), *common,
            "--out", str(student_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "from a resnet-34 teacher" in out and "beta 1000 (750 per stage over 4)" in out
    header = (student_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:6] == ["epoch", "lr", "train_loss", "train_acc", "train_ce", "train_at"]
    assert {"holdout_acc", "holdout_top5"} <= set(header)
    _, record = load_network(student_dir, net="resnet-34")
    assert record["kind"] == "distill" and record["fingerprint"]["settings"]["weight_decay"] == 1e-4
    assert json.loads((student_dir / "history.json").read_text())[0]["lr"] == 0.1

    assert main(["blockswap", "train", "--net", "wrn-10-1", "--image-size", "32", "--data", str(data_root),
                 "--out", str(tmp_path / "c")]) == 2
    assert "--image-size and --resize apply to --dataset imagenet only" in capsys.readouterr().err
