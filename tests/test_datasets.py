"""Real-data loaders in their official layouts, and seeded minibatches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from zc_proxies.data import (
    ImageSet,
    balanced_indices,
    data_root,
    load_cifar,
    load_image_folder,
    load_imagenet16,
    minibatch,
)
from zc_proxies.data.images import CIFAR10_STATS
from zc_proxies.errors import DataError, MissingDataError


def test_real_cifar10_train(data_root):
    data = load_cifar(data_root, 10, "train")
    assert data.images.shape == (10_000, 32, 32, 3) and data.images.dtype == np.uint8
    # Official first pixels of data_batch_1 (red plane of image 0), per the data's PROVENANCE.
    assert list(data.images[0, 0, :4, 0]) == [59, 43, 50, 68]
    assert np.bincount(data.labels).tolist() == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]


def test_real_cifar100_test(data_root):
    data = load_cifar(data_root, 100, "test")
    assert data.num_classes == 100 and data.labels[:5].tolist() == [49, 33, 72, 51, 71]


def test_minibatch_is_seeded_and_normalised(data_root):
    data = load_cifar(data_root, 10, "train")
    x1, y1 = minibatch(data, 64, seed=5)
    x2, y2 = minibatch(data, 64, seed=5)
    x3, _ = minibatch(data, 64, seed=6)
    assert x1.shape == (64, 3, 32, 32) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    plain, labels = minibatch(data, 64, seed=5, augment=False)
    assert torch.equal(labels, y1)
    idx = np.sort(np.random.default_rng(5).choice(len(data), 64, replace=False))
    want = (data.images[idx[0]].astype(np.float32) / 255 - np.array(CIFAR10_STATS[0])) / np.array(CIFAR10_STATS[1])
    assert np.allclose(plain[0].permute(1, 2, 0).numpy(), want, atol=1e-6)


def test_balanced_minibatch_has_equal_class_counts(data_root):
    data = load_cifar(data_root, 10, "train")
    counts = []
    for seed in range(5):
        x, y = minibatch(data, 64, seed=seed, sampling="balanced")
        c = np.bincount(y.numpy(), minlength=10)
        assert sorted(c) == [6] * 6 + [7] * 4  # 64 = 10 x 6 + 4 classes with one more
        counts.append(tuple(c))
        assert x.shape == (64, 3, 32, 32)
        again, labels = minibatch(data, 64, seed=seed, sampling="balanced")
        assert torch.equal(again, x) and torch.equal(labels, y)
    assert len(set(counts)) > 1  # which classes get the extra image is drawn, not fixed
    _, y = minibatch(data, 20, seed=0, sampling="balanced")
    assert np.bincount(y.numpy(), minlength=10).tolist() == [2] * 10
    # Uniform draws vary the class mix; the balanced draw does not.
    pairs = {int((np.bincount(minibatch(data, 64, seed=s)[1].numpy(), minlength=10) ** 2).sum()) for s in range(5)}
    assert len(pairs) > 1


def test_balanced_indices_are_distinct_and_errors_name_the_short_class():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 5 + [1] * 5 + [2] * 2)
    for seed in range(10):  # the extra image never goes to class 2, which has none to spare
        idx = balanced_indices(labels, 8, np.random.default_rng(seed))
        assert len(set(idx.tolist())) == 8 and sorted(np.bincount(labels[idx]).tolist()) == [2, 3, 3]
    idx = balanced_indices(labels, 7, rng)
    assert len(set(idx.tolist())) == 7 and np.bincount(labels[idx])[2] == 2
    with pytest.raises(DataError, match="class 2 has 2 < 3"):
        balanced_indices(labels, 9, np.random.default_rng(0))
    with pytest.raises(DataError, match="only 2 classes have more than 2 images, 3 must"):
        balanced_indices(np.array([0] * 3 + [1] * 3 + [2] * 2 + [3] * 2), 11, np.random.default_rng(0))
    data = ImageSet("tiny", np.zeros((12, 8, 8, 3), np.uint8), labels, 3, (0.5,) * 3, (0.5,) * 3, 8, "mem")
    with pytest.raises(ValueError, match="unknown minibatch sampling 'stratified'"):
        minibatch(data, 4, seed=0, sampling="stratified")


def test_data_root_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ZCBENCH_DATA", raising=False)
    with pytest.raises(MissingDataError, match="ZCBENCH_DATA"):
        data_root()
    with pytest.raises(MissingDataError, match="not a folder"):
        data_root(tmp_path / "nope")
    assert data_root(tmp_path) == tmp_path


def test_missing_and_malformed_cifar_files(tmp_path):
    with pytest.raises(MissingDataError, match="cifar-10-batches-py"):
        load_cifar(tmp_path, 10)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with pytest.raises(MissingDataError, match="data_batch_1"):
        load_cifar(tmp_path, 10)
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1.*not a readable pickle"):
        load_cifar(tmp_path, 10)
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DataError, match=r"expected uint8 \(N, 3072\)"):
        load_cifar(tmp_path, 10)
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, fh)
    with pytest.raises(DataError, match="lacks the key 'labels'"):
        load_cifar(tmp_path, 10)


def test_imagenet16_pickle_layout(tmp_path):
    folder = tmp_path / "ImageNet16"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(6, 768), dtype=np.uint8)
    labels = [1, 120, 121, 5, 1000, 2]  # 1-based; 121 and 1000 fall outside ImageNet16-120
    with open(folder / "train_data_batch_1", "wb") as fh:
        pickle.dump({"data": data, "labels": labels, "mean": np.zeros(768)}, fh)
    with open(folder / "val_data", "wb") as fh:
        pickle.dump({"data": data[:2], "labels": labels[:2]}, fh)
    train = load_imagenet16(tmp_path, 120, "train")
    assert train.labels.tolist() == [0, 119, 4, 1]
    assert train.images.shape == (4, 16, 16, 3)
    assert np.array_equal(train.images[1], data[1].reshape(3, 16, 16).transpose(1, 2, 0))
    assert len(load_imagenet16(tmp_path, 120, "val")) == 2
    x, y = minibatch(train, 3, seed=0)
    assert x.shape == (3, 3, 16, 16) and int(y.max()) < 120


def test_image_folder_layouts(tmp_path, data_root):
    from PIL import Image

    for cls in ("n001", "n002"):
        (tmp_path / cls).mkdir()
        for k in range(2):
            Image.new("RGB", (40, 30), color=(k * 100, 50, 200)).save(tmp_path / cls / f"{k}.JPEG")
    data = load_image_folder(tmp_path, num_classes=2, size=24, resize=28)
    assert data.labels.tolist() == [0, 0, 1, 1]
    x, y = minibatch(data, 4, seed=1)
    assert x.shape == (4, 3, 24, 24)
    sample = load_image_folder(data_root / "images" / "imagenet-sample")
    assert len(sample) == 250 and sample.labels[:3].tolist() == [0, 4, 8]
    x, _ = minibatch(sample, 2, seed=0)
    assert x.shape == (2, 3, 224, 224)


def test_corrupt_image_is_named(tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    data = load_image_folder(tmp_path, num_classes=1, size=8, resize=8)
    with pytest.raises(DataError, match="bad.jpg"):
        minibatch(data, 1, seed=0)


def test_batch_larger_than_dataset(data_root):
    data = load_cifar(data_root, 100, "test")
    with pytest.raises(DataError, match="20 images, fewer than batch size 64"):
        minibatch(data, 64, seed=0)
