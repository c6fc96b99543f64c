"""The result store: round trip, torn last line, settings refusal, keys, one writer, disk full, merging."""

from __future__ import annotations

import json
import warnings

import pytest

from zc_proxies.errors import ConfigError, DataError, MissingDataError, RunError, StoreLockedError
from zc_proxies.runs.merge import MissingShardWarning, merge_stores
from zc_proxies.runs.store import ResultStore, TornLineWarning, read_store, row_key, settings_difference


def ScoreStore(path, settings, versions=None, **kw):  # noqa: N802 - reads like the class it opens
    return ResultStore(path, settings, proxy_versions=versions, **kw)

SETTINGS = {"space": "fake", "dataset": "cifar10", "batch_size": 8, "data_source": "cifar10-train",
            "stand_in_for": None, "num_classes": 10, "augment": True}


def make_row(index: int, proxy: str = "fisher", seed: int = 0, score: float | None = 1.5, status: str = "ok",
             version: str = "1") -> dict:
    return {"space": "fake", "dataset": "cifar10", "index": index, "arch": f"a{index}", "proxy": proxy,
            "proxy_version": version, "seed": seed, "arch_seed": 1000 + index, "batch_size": 8,
            "data_source": "cifar10-train", "stand_in_for": None, "score": score, "seconds": 0.25,
            "status": status, "message": None if status == "ok" else "boom"}


def test_round_trip(tmp_path):
    path = tmp_path / "s.jsonl"
    store = ScoreStore(path, SETTINGS, {"fisher": "1"}, info={"host": "x"})
    rows = [make_row(1), make_row(2, score=0.1 + 0.2), make_row(3, score=None, status="nan")]
    store.append(rows[:2])
    store.append(rows[2:])
    header, back = read_store(path)
    assert header["settings"] == SETTINGS and header["info"] == {"host": "x"}
    assert back == rows  # floats survive exactly (repr round trip)
    assert back[1]["score"] == 0.1 + 0.2
    store.close()
    again = ScoreStore(path, SETTINGS, {"fisher": "1"})
    assert len(again) == 3 and (2, "fisher", 0) in again and (2, "fisher", 1) not in again
    assert sorted(again.rows(), key=row_key) == rows
    # every line is one complete JSON object ending in a newline
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])


def test_append_refuses_stored_keys_and_bad_rows(tmp_path):
    store = ScoreStore(tmp_path / "s.jsonl", SETTINGS)
    store.append([make_row(1)])
    with pytest.raises(DataError, match=r"already holds a row for \{'index': 1, 'proxy': 'fisher', 'seed': 0\}"):
        store.append([make_row(1)])
    with pytest.raises(ValueError, match="status"):
        store.append([make_row(2, status="weird")])
    with pytest.raises(ValueError):  # NaN is never written as a bare token
        store.append([make_row(3, score=float("nan"))])


def test_torn_last_line_is_cut_away_with_a_warning(tmp_path):
    path = tmp_path / "s.jsonl"
    store = ScoreStore(path, SETTINGS)
    store.append([make_row(1), make_row(2)])
    good = path.read_bytes()
    torn = json.dumps(make_row(3)).encode()[:37]  # a killed write: partial JSON, no newline
    path.write_bytes(good + torn)
    store.close()
    with pytest.warns(TornLineWarning, match="torn"):
        header, rows = read_store(path)  # reading leaves the file alone
    assert [r["index"] for r in rows] == [1, 2] and path.read_bytes() == good + torn
    with pytest.warns(TornLineWarning, match="cut away"):
        store = ScoreStore(path, SETTINGS)
    assert path.read_bytes() == good and len(store) == 2
    store.append([make_row(3)])
    assert [r["index"] for r in read_store(path)[1]] == [1, 2, 3]


def test_torn_header_starts_afresh(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"format": "zcbench-sc')
    with pytest.warns(TornLineWarning):
        store = ScoreStore(path, SETTINGS)
    assert len(store) == 0
    assert read_store(path)[0]["settings"] == SETTINGS


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "s.jsonl"
    ScoreStore(path, SETTINGS).append([make_row(1)])
    path.write_bytes(path.read_bytes() + b"{not json}\n" + json.dumps(make_row(2)).encode() + b"\n")
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        ScoreStore(path, SETTINGS)


def test_not_a_store(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match="not a zcbench result store"):
        ScoreStore(path, SETTINGS)
    with pytest.raises(MissingDataError, match="no result store"):
        read_store(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("key,value", [("batch_size", 64), ("dataset", "cifar100"),
                                       ("data_source", "imagenet-sample-box16"), ("stand_in_for", "cifar100-train")])
def test_other_settings_are_refused_naming_the_setting(tmp_path, key, value):
    path = tmp_path / "s.jsonl"
    ScoreStore(path, SETTINGS).append([make_row(1)])
    other = {**SETTINGS, key: value}
    with pytest.raises(DataError, match=rf"other settings \({key}: stored .*now {value!r}"):
        ScoreStore(path, other)
    assert settings_difference(SETTINGS, other) == [f"{key}: stored {SETTINGS[key]!r}, now {value!r}"]


def test_a_later_setting_missing_from_an_old_store_reads_as_its_default(tmp_path):
    path = tmp_path / "s.jsonl"
    ScoreStore(path, SETTINGS).append([make_row(1)])  # written before "sampling" existed
    assert len(ScoreStore(path, {**SETTINGS, "sampling": "uniform"}).rows()) == 1
    with pytest.raises(DataError, match=r"sampling: stored 'uniform', now 'balanced'"):
        ScoreStore(path, {**SETTINGS, "sampling": "balanced"})


def test_other_proxy_version_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    ScoreStore(path, SETTINGS).append([make_row(1, version="1"), make_row(1, proxy="snip", version="3")])
    ScoreStore(path, SETTINGS, {"fisher": "1", "snip": "3"})  # fine
    with pytest.raises(DataError, match="'fisher' scores of proxy version '1'.*installed 'fisher' is version '2'"):
        ScoreStore(path, SETTINGS, {"fisher": "2"})


def test_merge_dedupes_and_refuses_conflicts(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ScoreStore(a, SETTINGS).append([make_row(1), make_row(2)])
    ScoreStore(b, SETTINGS).append([make_row(2), make_row(3), make_row(3, seed=1)])
    merged = merge_stores([a, b], tmp_path / "m.jsonl")
    assert merged.settings == SETTINGS and (len(merged.rows), merged.duplicates) == (4, 1)
    _, rows = read_store(tmp_path / "m.jsonl")
    assert [row_key(r) for r in rows] == [(1, "fisher", 0), (2, "fisher", 0), (3, "fisher", 0), (3, "fisher", 1)]
    with pytest.raises(DataError, match="exists already"):
        merge_stores([a, b], tmp_path / "m.jsonl")

    c = tmp_path / "c.jsonl"
    ScoreStore(c, SETTINGS).append([make_row(2, score=9.0)])
    with pytest.raises(DataError, match=r"\{'index': 2, 'proxy': 'fisher', 'seed': 0\} has two different results"):
        merge_stores([a, c], tmp_path / "m2.jsonl")
    d = tmp_path / "d.jsonl"
    ScoreStore(d, {**SETTINGS, "batch_size": 16}).append([make_row(5)])
    with pytest.raises(DataError, match=r"different settings \(batch_size: stored 8, now 16\)"):
        merge_stores([a, d], tmp_path / "m3.jsonl")
    e = tmp_path / "e.jsonl"
    ScoreStore(e, SETTINGS).append([make_row(7, version="2")])
    with pytest.raises(DataError, match="proxy 'fisher' is version '1'.*but '2'"):
        merge_stores([a, e], tmp_path / "m4.jsonl")


def test_reading_a_store_being_written_tolerates_only_a_torn_tail(tmp_path):
    path = tmp_path / "s.jsonl"
    ScoreStore(path, SETTINGS).append([make_row(1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_store(path)  # no warning for a clean file


# -- one writer, one row per key ---------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    import os
    import platform

    path = tmp_path / "s.jsonl"
    first = ScoreStore(path, SETTINGS)
    with pytest.raises(StoreLockedError, match=rf"another process \(pid {os.getpid()} on host "
                                               rf"{platform.node()}, since .*--wait"):
        ScoreStore(path, SETTINGS)
    first.close()
    ScoreStore(path, SETTINGS).close()  # free again
    with pytest.raises(RunError, match="was closed"):
        first.append([make_row(1)])


def test_a_waiting_writer_goes_on_when_the_holder_finishes(tmp_path):
    import threading

    path = tmp_path / "s.jsonl"
    first = ScoreStore(path, SETTINGS)
    said = []
    threading.Timer(0.3, first.close).start()
    second = ScoreStore(path, SETTINGS, wait=True, on_wait=said.append)
    assert said and "waiting for the other writer" in said[0]
    second.append([make_row(1)])
    second.close()


def test_a_key_stored_twice_identically_reads_once_differently_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    with ScoreStore(path, SETTINGS) as store:
        store.append([make_row(1), make_row(2)])
    line = json.dumps(make_row(2)).encode() + b"\n"
    path.write_bytes(path.read_bytes() + line)  # a hand-concatenation
    assert [row_key(r) for r in read_store(path)[1]] == [(1, "fisher", 0), (2, "fisher", 0)]
    path.write_bytes(path.read_bytes() + json.dumps(make_row(1, score=7.0)).encode() + b"\n")
    with pytest.raises(DataError, match=r"two different results for \{'index': 1.*line 5"):
        ScoreStore(path, SETTINGS)


def test_discard_rewrites_the_store_without_those_rows(tmp_path):
    path = tmp_path / "s.jsonl"
    with ScoreStore(path, SETTINGS) as store:
        store.append([make_row(1), make_row(2, score=None, status="error"), make_row(3)])
        assert store.discard([(2, "fisher", 0), (9, "fisher", 0)]) == 1
        store.append([make_row(2)])
    assert [(row_key(r), r["status"]) for r in read_store(path)[1]] == [
        ((1, "fisher", 0), "ok"), ((3, "fisher", 0), "ok"), ((2, "fisher", 0), "ok")]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_append_is_cut_back_and_named(tmp_path, monkeypatch):
    import errno
    import os

    from zc_proxies.runs import store as store_module

    path = tmp_path / "s.jsonl"
    store = ScoreStore(path, SETTINGS)
    store.append([make_row(1)])
    good = path.read_bytes()
    real_write = os.write

    def disk_full(fd, data):
        real_write(fd, bytes(data[:20]))  # part of the line reaches the disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "write", disk_full)
    with pytest.raises(RunError, match=r"failed \(No space left on device\); the 1 results stored before are kept"):
        store.append([make_row(2)])
    monkeypatch.undo()
    assert path.read_bytes() == good and len(store) == 1
    store.append([make_row(2)])
    assert len(read_store(path)[1]) == 2


def test_store_paths_that_cannot_be_stores_are_refused_up_front(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(ConfigError, match="is a folder where the result store file should be"):
        ScoreStore(tmp_path / "dir.jsonl", SETTINGS)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        ScoreStore(tmp_path / "file" / "s.jsonl", SETTINGS)


def test_an_in_memory_store_keeps_rows_without_a_file(tmp_path):
    store = ResultStore(None, SETTINGS, key=("index",))
    store.append([{"index": 0, "status": "ok", "score": 1.0}])
    with pytest.raises(DataError, match=r"already holds a row for \{'index': 0\}"):
        store.append([{"index": 0, "status": "ok", "score": 2.0}])
    assert store.rows() == [{"index": 0, "status": "ok", "score": 1.0}] and not list(tmp_path.iterdir())


def test_a_store_of_another_key_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    ResultStore(path, SETTINGS, key=("index",)).close()
    with pytest.raises(DataError, match="keyed by index, not by index, proxy, seed"):
        ScoreStore(path, SETTINGS)


def test_merging_some_shards_warns_naming_the_missing_ones(tmp_path):
    for i in (0, 2):
        with ScoreStore(tmp_path / f"scores.shard-{i:03d}-of-004.jsonl", SETTINGS) as store:
            store.append([make_row(i)])
    with pytest.warns(MissingShardWarning, match="shard 1 of 4, shard 3 of 4 are missing"):
        merged = merge_stores([tmp_path], tmp_path / "out" / "scores.jsonl")
    assert len(merged.rows) == 2 and merged.missing == ["shard 1 of 4", "shard 3 of 4"]
