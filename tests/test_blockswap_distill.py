"""BlockSwap's last step: attention maps and AT loss, teacher training and distillation, resuming, the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from model_state import assert_same, snapshot

from zc_proxies.blockswap import Configuration, wrn
from zc_proxies.blockswap.attention import StageTaps, at_loss, at_weight, attention_map, distillation_loss, stage_ends
from zc_proxies.blockswap.checkpoint import load_network, read_record, save_network
from zc_proxies.blockswap.train import TrainSettings, distill, train
from zc_proxies.cli import main
from zc_proxies.data import load_cifar
from zc_proxies.data.training import split_holdout, subset, train_batches
from zc_proxies.errors import ArchError, DataError, MissingDataError, ModelError

STUDENT = ["G(N/2)", "B(2)", "BG(2,M/4)"]  # a mixed wrn-10-1 configuration


def _np_map(a: np.ndarray) -> np.ndarray:
    q = (a ** 2).mean(axis=1).reshape(a.shape[0], -1)
    return q / np.sqrt((q ** 2).sum(axis=1, keepdims=True))


def _np_at(s: np.ndarray, t: np.ndarray) -> float:
    return float(((_np_map(s) - _np_map(t)) ** 2).mean())


@pytest.fixture(scope="module")
def cifar(data_root):
    return load_cifar(data_root, 10, "train")


@pytest.fixture(scope="module")
def images64(cifar):
    return subset(cifar, np.arange(64))


# -- attention maps and the loss --------------------------------------------------------------
def test_attention_map_and_at_loss_by_hand():
    # one sample, 2 channels, 1x2 pixels: squares (1, 4) and (9, 0), channel mean (5, 2), norm sqrt(29)
    s = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[0.0, -1.0]]]], dtype=torch.float64)  # one channel: map (0, 1)
    r29 = math.sqrt(29)
    assert torch.allclose(attention_map(s), torch.tensor([[5 / r29, 2 / r29]], dtype=torch.float64), rtol=0, atol=1e-15)
    expected = ((5 / r29) ** 2 + (2 / r29 - 1) ** 2) / 2
    assert at_loss(s, t).item() == pytest.approx(expected, rel=1e-14)

    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 4, 6, generator=g, dtype=torch.float64)
    t = torch.randn(3, 7, 4, 6, generator=g, dtype=torch.float64)  # channel counts may differ
    np.testing.assert_allclose(attention_map(s).numpy(), _np_map(s.numpy()), rtol=1e-13)
    assert at_loss(s, t).item() == pytest.approx(_np_at(s.numpy(), t.numpy()), rel=1e-12)
    assert at_loss(s, s).item() == 0.0


def test_total_loss_is_ce_plus_weighted_at():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 10, generator=g, dtype=torch.float64)
    y = torch.tensor([3, 0, 9, 3])
    shapes = [(4, 2, 8, 8), (4, 3, 4, 4), (4, 5, 2, 2)]
    s = [torch.randn(*sh, generator=g, dtype=torch.float64) for sh in shapes]
    t = [torch.randn(sh[0], sh[1] + 2, *sh[2:], generator=g, dtype=torch.float64) for sh in shapes]
    z = logits.numpy()
    ce = float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(4), y.numpy()]))
    ats = [_np_at(a.numpy(), b.numpy()) for a, b in zip(s, t)]
    parts = distillation_loss(logits, y, s, t, beta=1000.0)
    assert parts.weight == 1000.0  # three stages: beta itself, as in BlockSwap's and the AT code
    assert parts.ce.item() == pytest.approx(ce, rel=1e-12)
    assert [a.item() for a in parts.at] == pytest.approx(ats, rel=1e-12)
    assert parts.total.item() == pytest.approx(ce + 1000.0 * sum(ats), rel=1e-12)
    four = distillation_loss(logits, y, s + s[:1], t + t[:1], beta=1000.0)  # BlockSwap rescales to 3 groups
    assert four.total.item() == pytest.approx(ce + 750.0 * (sum(ats) + ats[0]), rel=1e-12)
    assert at_weight(1000.0, 4) == 750.0


def test_mismatched_activations_are_named_errors():
    with pytest.raises(ModelError, match=r"stage 1: student activation \(2, 4, 8, 8\) and teacher activation "
                                         r"\(2, 4, 4, 4\)"):
        at_loss(torch.ones(2, 4, 8, 8), torch.ones(2, 4, 4, 4), stage=1)
    with pytest.raises(ModelError, match="student has 2 stages but the teacher has 3"):
        distillation_loss(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long), [torch.ones(2, 1, 2, 2)] * 2,
                          [torch.ones(2, 1, 2, 2)] * 3)


# -- hooks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, ends", [(10, [0, 1, 2]), (16, [1, 3, 5])])
def test_taps_catch_the_last_block_of_each_stage(depth, ends):
    net = wrn(depth, 1).build(generator=torch.Generator().manual_seed(0)).eval()
    assert stage_ends(net) == [net.blocks[i] for i in ends]
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        h, outs = net.stem(x), []
        for block in net.blocks:
            h = block(h)
            outs.append(h)
        before = snapshot(net)
        with StageTaps(net) as taps:
            logits, acts = taps.capture(x)
        assert_same(before, snapshot(net))  # hooks gone, nothing changed
    assert [tuple(a.shape) for a in acts] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    for a, i in zip(acts, ends):
        assert torch.equal(a, outs[i])
    assert torch.equal(logits, net(x))


def test_at_gradients_reach_the_student_only():
    student = Configuration.create("wrn-10-1", STUDENT).build(torch.Generator().manual_seed(0))
    teacher = wrn(10, 1).build(generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    with StageTaps(student) as s_taps, StageTaps(teacher) as t_taps:
        t_logits, t_acts = t_taps.capture(x)  # with autograd on: the loss itself must cut the teacher off
        logits, s_acts = s_taps.capture(x)
    parts = distillation_loss(logits, y, s_acts, t_acts)
    (parts.weight * torch.stack(parts.at).sum()).backward()  # the AT term alone
    assert all(p.grad is None for p in teacher.parameters())
    assert student.blocks[0].conv1.grouped.weight.grad.abs().sum() > 0
    assert student.blocks[2].conv1.expand.weight.grad.abs().sum() > 0
    assert student.fc.weight.grad is None  # the head does not shape the attention maps


# -- training and distillation ---------------------------------------------------------------
def test_cosine_schedule_equals_blockswaps_scheduler():
    s = TrainSettings(epochs=7)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 7, eta_min=1e-10)  # BlockSwap's train.py
    for epoch in range(7):
        assert s.lr_at(epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()


def test_holdout_is_disjoint_and_seeded(cifar):
    train_a, held_a = split_holdout(cifar, 100, seed=3, limit=500)
    train_b, held_b = split_holdout(cifar, 100, seed=3, limit=500)
    _, held_c = split_holdout(cifar, 100, seed=4)
    assert len(train_a) == 500 and len(held_a) == 100
    assert np.array_equal(held_a.images, held_b.images) and np.array_equal(train_a.labels, train_b.labels)
    assert not np.array_equal(held_a.images, held_c.images)
    rows = {r.tobytes() for r in cifar.images.reshape(len(cifar), -1)}
    assert len(rows) == len(cifar)  # images are distinct, so disjointness can be checked by content
    train_rows = {r.tobytes() for r in train_a.images.reshape(500, -1)}
    assert train_rows.isdisjoint(r.tobytes() for r in held_a.images.reshape(100, -1))
    with pytest.raises(DataError, match="leaves none to train on"):
        split_holdout(cifar, len(cifar), seed=0)


def test_batches_are_seeded_and_cutout_is_one_square(images64):
    a = list(train_batches(images64, 16, seed=5, epoch=2, cutout=0))
    b = list(train_batches(images64, 16, seed=5, epoch=2, cutout=16))
    c = list(train_batches(images64, 16, seed=5, epoch=3, cutout=0))
    assert [x.shape for x, _ in a] == [(16, 3, 32, 32)] * 4
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(images64.labels.tolist())  # each image once
    assert not torch.equal(a[0][0], c[0][0])
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(ya, yb)
        differ = (xa != xb).any(1)  # pixels cutout changed
        assert (xb.permute(0, 2, 3, 1)[differ] == 0).all()
        for mask in differ:
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            if len(rows):
                assert rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16
    assert sum(int((xa != xb).any()) for (xa, _), (xb, _) in zip(a, b)) == 4


def test_distillation_resumes_bit_identically_and_leaves_the_teacher_alone(images64, tmp_path):
    config = Configuration.create("wrn-10-1", STUDENT)
    teacher = wrn(10, 1).build(generator=torch.Generator().manual_seed(7))
    before = snapshot(teacher)
    settings = TrainSettings(epochs=2, batch_size=32, seed=11)

    straight = distill(config, teacher, images64, settings, tmp_path / "straight", progress=False)
    assert_same(before, snapshot(teacher))  # weights, buffers (BN statistics), grads, modes, hooks
    first = distill(config, teacher, images64, dataclasses.replace(settings, epochs=1), tmp_path / "steps",
                    progress=False)
    assert len(first.history) == 1 and first.resumed_from == 0
    resumed = distill(config, teacher, images64, settings, tmp_path / "steps", progress=False)
    assert resumed.resumed_from == 1 and len(resumed.history) == 2

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    keep = ("epoch", "lr", "train_loss", "train_acc", "train_ce", "train_at")
    assert [{k: r[k] for k in keep} for r in straight.history] == [{k: r[k] for k in keep} for r in resumed.history]
    assert straight.history[1]["lr"] == pytest.approx(0.05)
    assert not torch.equal(a["fc.weight"], config.build(torch.Generator().manual_seed(11)).fc.weight)  # it learned
    assert json.loads((tmp_path / "steps" / "history.json").read_text())[1]["train_loss"] == \
        resumed.history[1]["train_loss"]
    saved, record = load_network(tmp_path / "steps", net="wrn-10-1")
    assert record["blocks"] == list(config.blocks) and all(torch.equal(saved.state_dict()[k], b[k]) for k in b)
    assert_same(before, snapshot(teacher))

    with pytest.raises(DataError, match=r"belongs to a different run \(settings.seed: stored 11, now 12"):
        distill(config, teacher, images64, dataclasses.replace(settings, seed=12), tmp_path / "steps",
                progress=False)


def test_train_writes_a_loadable_teacher(images64, tmp_path):
    settings = TrainSettings(epochs=1, batch_size=32, seed=0, cutout=0)
    result = train(Configuration.create("wrn-10-1", ["S"] * 3), subset(images64, np.arange(32)), settings,
                   tmp_path / "t", eval_sets={"holdout": subset(images64, np.arange(32, 64))}, progress=False)
    row = result.final
    assert row["epoch"] == 1 and 0 <= row["holdout_acc"] <= 100 and math.isfinite(row["train_loss"])
    assert "train_at" not in row
    model, record = load_network(tmp_path / "t" / "model.pt")
    assert record["net"] == "wrn-10-1" and record["num_classes"] == 10
    m = result.model.state_dict()
    assert all(torch.equal(model.state_dict()[k], m[k]) for k in m)


# -- errors ------------------------------------------------------------------------------------
def test_teacher_with_other_spatial_sizes_or_stage_count_is_refused(images64, tmp_path):
    config = Configuration.create("wrn-10-1", STUDENT)
    spec = wrn(10, 1)
    flat = dataclasses.replace(spec, name="wrn-10-1-flat", slots=tuple(
        dataclasses.replace(s, stride=1) if s.stage == 1 else s for s in spec.slots))
    with pytest.raises(ModelError, match=r"stage 1: the student's \(wrn-10-1\) output has shape \(1, 32, 16, 16\) "
                                         r"but the teacher's \(wrn-10-1-flat\) has \(1, 32, 32, 32\)"):
        distill(config, flat.build(), images64, TrainSettings(epochs=1), tmp_path / "x", progress=False)
    short = dataclasses.replace(spec, name="wrn-2-stages", slots=spec.slots[:2], head_channels=32)
    with pytest.raises(ModelError, match=r"student \(wrn-10-1\) has 3 stages but the teacher \(wrn-2-stages\) has 2"):
        distill(config, short.build(), images64, TrainSettings(epochs=1), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_teacher_files_missing_of_another_spec_or_corrupt(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(MissingDataError, match="network file '.*none.pt' does not exist"):
        load_network(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="has no model.pt"):
        load_network(tmp_path / "empty")

    path = tmp_path / "t.pt"
    save_network(path, wrn(16, 1).build())
    with pytest.raises(ArchError, match=r"'.*t.pt' holds a wrn-16-1 network, not the wrn-10-1 asked for"):
        load_network(path, net="wrn-10-1")
    load_network(path, net="wrn-16-1")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(DataError, match="'.*garbage.pt' cannot be read as a torch.save file"):
        load_network(garbage)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="'.*cut.pt' cannot be read"):
        load_network(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"net": wrn(10, 1).build().state_dict()}, foreign)
    with pytest.raises(DataError, match="not a zcbench BlockSwap network file"):
        read_record(foreign)
    wrong = tmp_path / "wrong.pt"
    record = torch.load(path, weights_only=True)
    record["blocks"] = ["B(2)"] * 6
    torch.save(record, wrong)
    with pytest.raises(DataError, match="weights do not fit wrn-16-1"):
        load_network(wrong)


# -- the command line --------------------------------------------------------------------------
def test_cli_train_then_distill(data_root, tmp_path, capsys):
    teacher_dir, student_dir, cfg = tmp_path / "teacher", tmp_path / "student", tmp_path / "best.json"
    Configuration.create("wrn-10-1", STUDENT).save(cfg, params=0, score=1.0)
    common = ["--epochs", "1", "--batch-size", "16", "--train-images", "32", "--holdout", "16", "--seed", "2",
              "--data", str(data_root), "--no-progress"]
    assert main(["blockswap", "train", "--net", "wrn-10-1", *common, "--out", str(teacher_dir)]) == 0
    out = capsys.readouterr().out
    assert "training on 32 cifar10 images; evaluated after each epoch: holdout 16, test 1,000" in out
    assert "epoch 1  lr 0.1  loss" in out and "| holdout loss" in out and "training done: 1 epochs" in out

    argv = ["blockswap", "distill", "--config", str(cfg), "--teacher", str(teacher_dir), *common,
            "--out", str(student_dir)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "from a wrn-10-1 teacher" in out and "beta 1000" in out and "(ce " in out
    rows = (student_dir / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss,train_acc,train_ce,train_at,") and len(rows) == 2
    assert {"holdout_acc", "test_acc"} <= set(rows[0].split(","))
    model, record = load_network(student_dir, net="wrn-10-1")
    assert record["blocks"] == list(Configuration.load(cfg).blocks) and record["kind"] == "distill"

    assert main(argv) == 0  # rerun: everything is in the checkpoint
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert len((student_dir / "history.csv").read_text().splitlines()) == 2

    bad = ["blockswap", "distill", "--config", str(cfg), "--teacher", str(tmp_path / "nope"), *common,
           "--out", str(tmp_path / "s2")]
    assert main(bad) == 2
    assert "network file" in capsys.readouterr().err
    other = ["blockswap", "distill", "--config", str(cfg), "--teacher", str(teacher_dir), "--teacher-net",
             "wrn-16-1", *common, "--out", str(tmp_path / "s3")]
    assert main(other) == 2
    assert "holds a wrn-10-1 network, not the wrn-16-1 asked for" in capsys.readouterr().err
