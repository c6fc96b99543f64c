"""The NDS files as registered spaces: names, datasets, rerun sets, missing files, and an eval end to end."""

from __future__ import annotations

import json

import pytest
import torch

from zc_proxies import get_space, score
from zc_proxies.cli import main
from zc_proxies.errors import MissingDataError
from zc_proxies.runs.layout import apply_layout, resolve_layout
from zc_proxies.spaces import list_specs
from zc_proxies.spaces.spec import open_spec

RECORDS = {"nds-darts-imagenet": 121, "nds-enas-imagenet": 117, "nds-nasnet-imagenet": 122,
           "nds-pnas-imagenet": 119, "nds-amoeba-imagenet": 124, "nds-darts-fix-w-d-imagenet": 499,
           "nds-darts-lr-wd-imagenet": 515, "nds-resnext-a-imagenet": 130, "nds-resnext-b-imagenet": 164,
           "nds-resnet-lr-wd-imagenet": 494, "nds-vanilla-lr-wd-imagenet": 500, "nds-resnet-cifar10": 2,
           "nds-vanilla-cifar10": 2}


def test_every_listed_space_value_is_accepted(data_root):
    names = list_specs()
    assert set(RECORDS) <= set(names) and "nb201-cifar100" in names and "nds-darts" in names
    for text in names:
        try:
            space, spec = open_spec(text, data_root)
        except MissingDataError:  # only the CIFAR-10 cell files are not in the shared data
            assert text.removesuffix("-cifar10") in {"nds-darts", "nds-enas", "nds-nasnet", "nds-pnas", "nds-amoeba"}
            continue
        assert spec.space == space.name and spec.dataset in space.datasets, text
    assert list_specs("nds-*-imagenet") == sorted(n for n in RECORDS if n.endswith("-imagenet"))


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_each_file_is_a_space_of_its_dataset(data_root, name):
    space = get_space(name, data_root)
    dataset = "imagenet" if name.endswith("imagenet") else "cifar10"
    assert len(space) == RECORDS[name] and space.datasets == (dataset,)
    assert space.num_classes(dataset) == (1000 if dataset == "imagenet" else 10)
    assert not space.verify_params()
    assert space.index_of(space[len(space) - 1]) == len(space) - 1
    assert 0 < space.accuracy(0, dataset, "test") < 100
    assert "100 - test_ep_top1[-1]" in space.target_note("test", dataset)


def test_a_rerun_set_is_two_networks_with_the_mean_of_their_reruns(data_root):
    space = get_space("nds-resnet-cifar10", data_root)
    raw = json.loads((data_root / "nds" / "ResNet_reruns.json").read_text())
    for i, part in enumerate(("top", "mid")):
        finals = [100 - r["test_ep_top1"][-1] for r in raw[part]]
        assert space.reruns(i) == pytest.approx(finals) and len(finals) == 100
        assert space.accuracy(i, "cifar10", "test") == pytest.approx(sum(finals) / 100)
    assert "trained 100 times each" in space.target_note("test", "cifar10")


def test_a_missing_cifar_cell_file_names_the_sweeps_that_are_here(data_root):
    with pytest.raises(MissingDataError, match="needs the NDS file DARTS.json.*the files present give "
                                               "nds-darts-imagenet, nds-darts-fix-w-d-imagenet, "
                                               "nds-darts-lr-wd-imagenet instead"):
        get_space("nds-darts", data_root)


def test_eval_on_an_imagenet_sweep_records_the_transform(tmp_path, data_root, capsys):
    out = tmp_path / "nds"
    assert main(["eval", "--proxy", "fisher,fisher_potential", "--space", "nds-resnext-a-imagenet", "--sample",
                 "2", "--batch-size", "4", "--out", str(out), "--data", str(data_root), "--no-plot",
                 "--bootstrap", "20", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "imagenet top-1 accuracy after the last of 50 training epochs" in captured.out
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()[1:]]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(r["data_source"] == "imagenet-sample" and "224x224 crop" in r["transform"] for r in rows)


@pytest.mark.parametrize("name", ["nds-enas-imagenet", "nds-resnet-cifar10"])
def test_nds_networks_are_scored_in_nhwc_on_the_cpu_unless_jacob_cov_is_asked_for(data_root, name):
    space = get_space(name, data_root)
    assert resolve_layout("auto", space, "cpu") == "nhwc"
    assert resolve_layout("auto", space, "cuda") == "nchw"
    assert resolve_layout("auto", space, "cpu", ["fisher", "jacob_cov"]) == "nchw"  # measured to rank apart
    assert resolve_layout("nhwc", space, "cpu", ["jacob_cov"]) == "nhwc"  # asked for
    generator = torch.Generator().manual_seed(3)
    side = 32 if name.endswith("cifar10") else 64  # a small ImageNet input keeps the test cheap
    x = torch.randn(16, 3, side, side, generator=generator)  # BatchNorm over fewer values amplifies rounding
    y = torch.randint(0, space.num_classes(space.datasets[0]), (16,), generator=generator)
    proxies = ["fisher", "grad_norm", "synflow", "jacob_cov", "naswot"]
    scores = {}
    for layout in ("nchw", "nhwc"):
        torch.manual_seed(11)
        model, inputs = apply_layout(space.build(space[0]), x, layout)
        assert inputs.is_contiguous(memory_format=torch.channels_last) == (layout == "nhwc")
        scores[layout] = score(model, (inputs, y), proxy=proxies, seed=5)
    for proxy in proxies:  # float32 sums in another order: last digits only (synflow runs in float64)
        tolerance = 1e-9 if proxy == "synflow" else 3e-3
        assert scores["nhwc"][proxy] == pytest.approx(scores["nchw"][proxy], rel=tolerance), proxy
