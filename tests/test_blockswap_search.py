"""BlockSwap search: budgets, the sampling window, feasibility errors, scoring, the resumable store."""

from __future__ import annotations

import json

import pytest
import torch

from zc_proxies import score
from zc_proxies.blockswap import (
    PAPER_POOL,
    Configuration,
    SearchSettings,
    count_parameters,
    feasible_range,
    get_net,
    parse_budget,
    search,
)
from zc_proxies.blockswap.search import Sampler, window
from zc_proxies.data import load_cifar, minibatch
from zc_proxies.errors import ArchError, ConfigError, DataError
from zc_proxies.runs.layout import apply_layout
from zc_proxies.runs.merge import merge_stores
from zc_proxies.runs.runner import Runner
from zc_proxies.runs.seeding import derive_seed
from zc_proxies.runs.store import TornLineWarning


def candidate_seed(seed: int, i: int) -> int:
    return derive_seed(seed, "candidate", i)


@pytest.fixture(scope="module")
def cifar(data_root):
    return load_cifar(data_root, 10, "train")


def _settings(**kw) -> SearchSettings:
    base = dict(net="wrn-16-1", budget=100_000, samples=3, seed=7, batch_size=8)
    base.update(kw)
    return SearchSettings(**base)


@pytest.mark.parametrize("text, want", [
    ("800k", 800_000), ("800K", 800_000), ("1.5M", 1_500_000), ("800000", 800_000), ("2.2e6", 2_200_000),
    (" 150k ", 150_000), (0.5e6, 500_000),
])
def test_parse_budget(text, want):
    assert parse_budget(text) == want


@pytest.mark.parametrize("text", ["", "k", "800q", "-5k", "1.5 G", "0"])
def test_parse_budget_refuses_nonsense(text):
    with pytest.raises(ValueError, match="budget"):
        parse_budget(text)


def test_window_is_plus_minus_two_and_a_half_percent():
    assert window(800_000, 0.025) == (780_000, 820_000)
    assert window(1001, 0.025) == (976, 1026)  # 975.975 .. 1026.025


def test_every_sampled_candidate_lies_in_its_window_and_is_counted_exactly():
    spec = get_net("wrn-40-2")
    sampler = Sampler(spec, PAPER_POOL, 10, 800_000, 0.025)
    lo, hi = 780_000, 820_000
    seen = set()
    for i in range(40):
        types, params, draws = sampler.sample(candidate_seed(0, i))
        assert lo <= params <= hi and draws >= 1
        assert params == spec.params(types, 10)
        seen.add(tuple(t.name for t in types))
        if i < 3:  # the built module agrees with the analytic count
            assert count_parameters(spec.build(types)) == params
    assert len(seen) == 40  # distinct random mixes
    assert len({t for cfg in seen for t in cfg}) >= 15  # most of the pool is used


def test_candidates_do_not_depend_on_order():
    sampler = Sampler(get_net("wrn-40-2"), PAPER_POOL, 10, 800_000, 0.025)
    forward = [sampler.sample(candidate_seed(3, i))[0] for i in range(5)]
    backward = [sampler.sample(candidate_seed(3, i))[0] for i in reversed(range(5))][::-1]
    assert forward == backward
    assert candidate_seed(3, 4) != candidate_seed(4, 3)


def test_feasible_range_equals_the_cheapest_and_largest_networks():
    for net in ("wrn-40-2", "wrn-16-1"):
        spec = get_net(net)
        options = spec.options(PAPER_POOL)
        cheapest = [min(o, key=lambda t, s=s: t.params(s.in_channels, s.out_channels, s.stride))
                    for o, s in zip(options, spec.slots)]
        largest = [max(o, key=lambda t, s=s: t.params(s.in_channels, s.out_channels, s.stride))
                   for o, s in zip(options, spec.slots)]
        lo, hi = feasible_range(net)
        assert lo == count_parameters(spec.build(cheapest))
        assert hi == count_parameters(spec.build(largest))
    assert feasible_range("wrn-40-2") == (146_538, 2_243_546)


@pytest.mark.parametrize("budget", [10_000, 5_000_000])
def test_an_impossible_budget_states_the_feasible_range(budget):
    with pytest.raises(ArchError, match=r"feasible range is 146,538 .* to 2,243,546"):
        Sampler(get_net("wrn-40-2"), PAPER_POOL, 10, budget, 0.025)


def test_a_budget_random_mixes_never_hit_is_refused():
    # 150k is inside the range (146,538..) but only the very cheapest mixes get there
    with pytest.raises(ArchError, match="none of 5,000 random"):
        Sampler(get_net("wrn-40-2"), PAPER_POOL, 10, 150_000, 0.0, max_draws=5000).sample(0)


def test_search_scores_fisher_potential_and_keeps_the_best(cifar, data_root, tmp_path):
    settings = _settings()
    result = search(settings, data_dir=data_root, store=tmp_path / "c.jsonl", progress=False)
    assert [r["index"] for r in result.rows] == [0, 1, 2]
    lo, hi = window(100_000, 0.025)
    for row in result.rows:
        assert row["status"] == "ok" and lo <= row["params"] <= hi
        # the stored score is fisher_potential of that network, built from its seed, on its minibatch
        cfg = Configuration("wrn-16-1", tuple(row["blocks"]), 10)
        model = cfg.build(generator=torch.Generator().manual_seed(row["seed"]))
        x, y = minibatch(cifar, 8, row["batch_seed"])
        assert row["layout"] == "nhwc"  # WRNs on the CPU: NHWC with exact BatchNorm statistics
        model, x = apply_layout(model, x, row["layout"])
        assert row["score"] == pytest.approx(score(model, (x, y), "fisher_potential"), rel=1e-6)
    assert result.best["score"] == max(r["score"] for r in result.rows)
    assert result.scored == 3


def test_search_resumes_from_its_store_and_results_do_not_depend_on_order(data_root, tmp_path):
    store = tmp_path / "c.jsonl"
    first = search(_settings(samples=2), data_dir=data_root, store=store, progress=False)
    scored = []
    second = search(_settings(samples=4), data_dir=data_root, store=store, progress=False,
                    on_candidate=lambda r: scored.append(r["index"]))
    assert scored == [2, 3] and second.scored == 2
    assert second.rows[:2] == first.rows
    lines = store.read_text().splitlines()
    assert [json.loads(x).get("index") for x in lines] == [None, 0, 1, 2, 3]  # the settings header, then rows

    # a torn last line (a write cut short) is dropped and rewritten; nothing else changes
    with open(store, "a") as fh:
        fh.write('{"index": 4, "seed": 12')
    with pytest.warns(TornLineWarning, match="cut away"):
        third = search(_settings(samples=5), data_dir=data_root, store=store, progress=False)
    assert third.scored == 1
    rows = [json.loads(x) for x in store.read_text().splitlines()[1:]]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4] and store.read_text().endswith("\n")

    # a fresh search of candidates 3 and 4 alone agrees with them (same configs, same scores)
    fresh = search(_settings(samples=5), data_dir=data_root, store=tmp_path / "other.jsonl", progress=False)
    for a, b in zip(fresh.rows, third.rows):
        assert a["blocks"] == b["blocks"] and a["params"] == b["params"]
        assert a["score"] == pytest.approx(b["score"], rel=1e-6)


def test_a_store_of_another_search_or_a_corrupt_store_is_refused(data_root, tmp_path):
    store = tmp_path / "c.jsonl"
    search(_settings(samples=1), data_dir=data_root, store=store, progress=False)
    with pytest.raises(DataError, match="other settings .*budget: stored 100000, now 90000"):
        search(_settings(samples=1, budget=90_000), data_dir=data_root, store=store, progress=False)
    lines = store.read_text().splitlines(keepends=True)
    store.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        search(_settings(samples=1), data_dir=data_root, store=store, progress=False)


def test_shared_batch_scores_everyone_on_one_minibatch(data_root):
    result = search(_settings(samples=2, shared_batch=True), data_dir=data_root, progress=False)
    assert {r["batch_seed"] for r in result.rows} == {derive_seed(7, "batch")}


def test_nhwc_scores_the_same_networks_as_nchw_to_float32_precision(data_root):
    plain = search(_settings(samples=3), data_dir=data_root, layout="nchw", progress=False)
    fast = search(_settings(samples=3), data_dir=data_root, layout="nhwc", progress=False)
    assert plain.settings == fast.settings  # the layout is an execution detail, not a setting
    for a, b in zip(plain.rows, fast.rows):
        assert (a["layout"], b["layout"]) == ("nchw", "nhwc")
        assert a["blocks"] == b["blocks"]
        assert b["score"] == pytest.approx(a["score"], rel=2e-3)


def test_auto_layout_is_nhwc_on_the_cpu_for_both_skeletons(data_root):
    assert get_net("wrn-40-2").cpu_layout == get_net("resnet-34").cpu_layout == "nhwc"
    assert (get_net("wrn-16-2").default_dataset, get_net("resnet-34").default_dataset) == ("cifar10", "imagenet")
    rows = search(_settings(samples=1), data_dir=data_root, progress=False).rows
    assert rows[0]["layout"] == "nhwc"
    with pytest.raises(ConfigError, match="layout"):
        search(_settings(samples=1), data_dir=data_root, layout="nwhc", progress=False)


def _without_times(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_workers_and_shards_give_the_rows_of_one_worker(data_root, tmp_path):
    settings = _settings(samples=4)
    one = search(settings, data_dir=data_root, store=tmp_path / "one.jsonl", threads=1, progress=False)
    two = search(settings, data_dir=data_root, store=tmp_path / "two.jsonl", threads=1, runner=Runner(2),
                 progress=False)
    assert _without_times(two.rows) == _without_times(one.rows)  # bit-identical scores
    parts = [search(settings, data_dir=data_root, store=tmp_path / "sharded.jsonl", shard=(i, 2), threads=1,
                    progress=False) for i in range(2)]
    assert [[r["index"] for r in p.rows] for p in parts] == [[0, 2], [1, 3]]
    assert not any(p.complete for p in parts)
    merged = merge_stores([p.path for p in parts], tmp_path / "merged.jsonl")
    assert merged.missing == []
    final = search(settings, data_dir=data_root, store=tmp_path / "merged.jsonl", progress=False)
    assert final.complete and final.scored == 0 and _without_times(final.rows) == _without_times(one.rows)
    assert _without_times([final.best]) == _without_times([one.best])
