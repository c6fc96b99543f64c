"""The JSONL score store: round trip, torn last line, settings refusal, resume keys, merging."""

from __future__ import annotations

import json
import warnings

import pytest

from zc_proxies.errors import DataError, MissingDataError
from zc_proxies.store import ScoreStore, TornLineWarning, merge_stores, read_store, row_key, settings_difference

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
    again = ScoreStore(path, SETTINGS, {"fisher": "1"})
    assert len(again) == 3 and (2, "fisher", 0) in again and (2, "fisher", 1) not in again
    assert sorted(again.rows(), key=row_key) == rows
    # every line is one complete JSON object ending in a newline
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])


def test_append_refuses_stored_keys_and_bad_rows(tmp_path):
    store = ScoreStore(tmp_path / "s.jsonl", SETTINGS)
    store.append([make_row(1)])
    with pytest.raises(DataError, match=r"already holds a row for \(index, proxy, seed\) = \(1, 'fisher', 0\)"):
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
    with pytest.raises(DataError, match="not a zcbench score store"):
        ScoreStore(path, SETTINGS)
    with pytest.raises(MissingDataError, match="no score store"):
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
    settings, n, dropped = merge_stores([a, b], tmp_path / "m.jsonl")
    assert settings == SETTINGS and (n, dropped) == (4, 1)
    _, rows = read_store(tmp_path / "m.jsonl")
    assert [row_key(r) for r in rows] == [(1, "fisher", 0), (2, "fisher", 0), (3, "fisher", 0), (3, "fisher", 1)]
    with pytest.raises(DataError, match="exists already"):
        merge_stores([a, b], tmp_path / "m.jsonl")

    c = tmp_path / "c.jsonl"
    ScoreStore(c, SETTINGS).append([make_row(2, score=9.0)])
    with pytest.raises(DataError, match=r"\(2, 'fisher', 0\) has two different results"):
        merge_stores([a, c], tmp_path / "m2.jsonl")
    d = tmp_path / "d.jsonl"
    ScoreStore(d, {**SETTINGS, "batch_size": 16}).append([make_row(5)])
    with pytest.raises(DataError, match="other settings.*batch_size: stored 8, now 16"):
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
