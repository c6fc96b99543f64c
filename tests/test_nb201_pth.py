"""Reading the official NAS-Bench-201 ``.pth`` layout, checked against ``nas_201_api`` itself.

The test writes a tiny benchmark file in the official layout (built with the
API's own ``ArchResults`` / ``ResultsCount`` classes): all 15,625 arch strings
in a shuffled order, three of them evaluated with 1, 2 and 3 seeds, 'less'
(hp=12) and 'full' (hp=200) results that differ, per-epoch accuracies that
differ, and numpy-scalar parameter counts as the original file stores them.
"""

from __future__ import annotations

import io
import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch
from nas_201_api import ArchResults, NASBench201API, ResultsCount

import zc_proxies
from zc_proxies.errors import DataError, MissingDataError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EVAL_SETS = {
    "cifar10-valid": ("x-valid", "ori-test"),
    "cifar10": ("ori-test",),
    "cifar100": ("x-valid", "x-test", "ori-test"),
    "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
}
CLASSES = {"cifar10-valid": 10, "cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
EVALUATED = {11: (777,), 4242: (777, 888), 15000: (777, 888, 999)}   # index -> seeds
ODD_PARAMS = {15000: 888}                                              # seed whose record has other params
OURS = {"cifar10-valid": "cifar10-valid", "cifar10": "cifar10", "cifar100": "cifar100",
        "ImageNet16-120": "imagenet16-120"}


def _trial(rng, arch, dataset, seed, epochs, odd):
    params = np.float64(round(rng.uniform(0.1, 1.5), 6) + (0.081013 if odd else 0.0))
    result = ResultsCount(dataset, None, {e: rng.uniform(10, 99) for e in range(epochs)},
                          {e: rng.uniform(0, 3) for e in range(epochs)}, params, float(rng.uniform(5, 200)),
                          {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": CLASSES[dataset]},
                          seed, epochs, [0.01])
    keys = [f"{name}@{e}" for name in EVAL_SETS[dataset] for e in range(epochs)]
    result.update_eval({k: rng.uniform(10, 99) for k in keys}, {k: rng.uniform(0, 3) for k in keys},
                       {k: 1.0 for k in keys})
    return result


def _arch_results(rng, index, arch, seeds, epochs):
    results = ArchResults(index, arch)
    for dataset in EVAL_SETS:
        for seed in seeds:
            odd = epochs == 200 and ODD_PARAMS.get(index) == seed
            results.update(dataset, seed, _trial(rng, arch, dataset, seed, epochs, odd))
    return results.state_dict()


def official_dict() -> dict:
    """A benchmark dict in the layout of NAS-Bench-201-v1_0-e61699.pth."""
    rng = random.Random(7)
    archs = [f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"
             for o in itertools.product(OPS, repeat=6)]
    rng.shuffle(archs)
    infos = {i: {"less": _arch_results(rng, i, archs[i], seeds, 12),
                 "full": _arch_results(rng, i, archs[i], seeds, 200)} for i, seeds in EVALUATED.items()}
    return {"meta_archs": archs, "arch2infos": infos, "evaluated_indexes": sorted(EVALUATED)}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    data = official_dict()
    path = tmp_path_factory.mktemp("nb201") / "NAS-Bench-201-v1_0-e61699.pth"
    torch.save(data, path, _use_new_zipfile_serialization=False)   # the 2020 file predates the zip format
    return data, path


@pytest.fixture(scope="module")
def api(bench):
    return NASBench201API(bench[0], verbose=False)


@pytest.fixture(scope="module")
def space(bench):
    return zc_proxies.get_space("nb201", None, source=bench[1])


def test_index_order_is_the_files(space, bench):
    assert len(space) == 15_625
    assert [space[i] for i in (0, 11, 15624)] == [bench[0]["meta_archs"][i] for i in (0, 11, 15624)]
    assert space.index_of(bench[0]["meta_archs"][4242]) == 4242


@pytest.mark.parametrize("index", sorted(EVALUATED))
@pytest.mark.parametrize("dataset", list(EVAL_SETS))
def test_accuracies_match_api(space, api, index, dataset):
    info = api.get_more_info(index, dataset, iepoch=None, hp="200", is_random=False)
    ours = OURS[dataset]
    if dataset != "cifar10":
        assert space.accuracy(index, ours, "val") == pytest.approx(info["valid-accuracy"], abs=1e-12)
    if dataset != "cifar10-valid":
        assert space.accuracy(index, ours, "test") == pytest.approx(info["test-accuracy"], abs=1e-12)


@pytest.mark.parametrize("index", sorted(EVALUATED))
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "ImageNet16-120"])
def test_costs_match_api(space, api, index, dataset):
    cost = api.get_cost_info(index, dataset, hp="200")
    assert space.params(index, OURS[dataset]) == round(cost["params"] * 1e6)
    assert space.flops(index, OURS[dataset]) == pytest.approx(cost["flops"], abs=1e-12)


def test_final_epoch_seed_mean_by_hand(space, bench):
    """Independent of the API: the 'full' x-test accuracy at epoch 199, averaged over the 3 seeds."""
    full = bench[0]["arch2infos"][15000]["full"]["all_results"]
    values = [full[("cifar100", s)]["eval_acc1es"]["x-test@199"] for s in (777, 888, 999)]
    assert math.isclose(space.accuracy(15000, "cifar100", "test"), sum(values) / 3, rel_tol=1e-12)
    less = bench[0]["arch2infos"][15000]["less"]["all_results"]
    hp12 = sum(less[("cifar100", s)]["eval_acc1es"]["x-test@11"] for s in (777, 888, 999)) / 3
    assert not math.isclose(space.accuracy(15000, "cifar100", "test"), hp12)


def test_unevaluated_arch_has_no_results(space):
    with pytest.raises(DataError, match="holds no cifar10 test accuracy for arch 0"):
        space.accuracy(0, "cifar10", "test")
    assert space.build(0, 10).arch == space[0]  # an unevaluated arch still builds


def test_zip_format_also_reads(tmp_path, bench):
    path = tmp_path / "b.pth"
    torch.save(bench[0], path)
    other = zc_proxies.get_space("nb201", source=path)
    assert other.accuracy(4242, "imagenet16-120", "val") == zc_proxies.get_space(
        "nb201", source=bench[1]).accuracy(4242, "imagenet16-120", "val")


def test_missing_and_corrupt_files(tmp_path, bench):
    with pytest.raises(MissingDataError, match="NAS-Bench-201-v1_0-e61699.pth"):
        zc_proxies.get_space("nb201", source=tmp_path / "absent.pth")
    bad = tmp_path / "cut.pth"
    bad.write_bytes(bench[1].read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        zc_proxies.get_space("nb201", source=bad)
    assert str(bad) in str(err.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"meta_archs": []}, wrong)
    with pytest.raises(DataError, match="lacks the key.*arch2infos, evaluated_indexes"):
        zc_proxies.get_space("nb201", source=wrong)


def test_foreign_objects_need_trust(tmp_path, bench):
    data = dict(bench[0], extra=Fraction(1, 3))
    path = tmp_path / "odd.pth"
    buffer = io.BytesIO()
    torch.save(data, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="trust_pickle=True") as err:
        zc_proxies.get_space("nb201", source=path)
    assert "fractions.Fraction" in str(err.value)
    trusted = zc_proxies.get_space("nb201", source=path, trust_pickle=True)
    assert trusted.params(11, "cifar10") > 0
