"""The official NAS-Bench-101 record file without TensorFlow: framing, checksums, protobuf, HDF5.

The tests write small files in the official format with their own encoder
(bit-by-bit CRC32C, hand-rolled protobuf), using real cells from the table.
"""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pandas as pd
import pytest

from zc_proxies import get_space
from zc_proxies.cli import main
from zc_proxies.errors import DataError, MissingDataError
from zc_proxies.spaces.nb101.bench import load_h5_runs
from zc_proxies.spaces.nb101.tfrecord import (
    crc32c_batch,
    crc32c_python,
    decode_metrics,
    iter_nb101_records,
    iter_tfrecords,
    masked_crc32c,
)

# -- an independent encoder ------------------------------------------------------------------------


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C straight from its definition (reflected polynomial 0x82F63B78), one bit at a time."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", mask(crc32c_bitwise(length))) + data
            + struct.pack("<I", mask(crc32c_bitwise(data))))


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def pb_double(number: int, value: float) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<d", value)


def pb_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def evaluation(epoch, time_s, train, val, test, path="") -> bytes:
    msg = (pb_double(1, epoch) + pb_double(2, time_s) + pb_double(3, train) + pb_double(4, val)
           + pb_double(5, test))
    return msg + (pb_bytes(6, path.encode()) if path else b"")


def metrics_message(params: int, evals: list[bytes], total_time: float = 123.0) -> bytes:
    # evaluation_data (1), then trainable_parameters (2, varint), total_time (3), and an unknown field 9
    return (b"".join(pb_bytes(1, e) for e in evals) + varint(2 << 3 | 0) + varint(params)
            + pb_double(3, total_time) + varint(9 << 3 | 0) + varint(7))


def row(module_hash, epochs, matrix, ops, params, final, halfway=(0.5, 0.5, 0.5, 50.0)) -> bytes:
    evals = [evaluation(0, 0, 0.1, 0.1, 0.1), evaluation(epochs / 2, halfway[3], *halfway[:3]),
             evaluation(epochs, final[3], *final[:3], path=f"/ckpt/{module_hash}/model.ckpt-1")]
    blob = base64.b64encode(metrics_message(params, evals)).decode()
    return json.dumps([module_hash, epochs, matrix, ops, blob]).encode()


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cells(data_root):
    """Five real cells (hash, flat matrix, ops, params) from the table."""
    t = pd.read_csv(data_root / "nb101" / "nb101_all.csv.gz", dtype={"matrix": str, "hash": str}, nrows=4000)
    pick = t.iloc[[3999, 17, 0, 2500, 640]]
    return list(zip(pick.hash, pick.matrix, pick.ops, pick.params))


def _accs(k: int, r: int) -> tuple[float, float, float, float]:
    """Distinct (train, val, test, time) for cell k, repeat r."""
    return 0.99 - 0.001 * r, 0.90 + 0.01 * k + 0.001 * r, 0.89 + 0.01 * k + 0.002 * r, 1000.0 + 10 * k + r


@pytest.fixture()
def record_file(tmp_path, cells):
    """3 repeats of 5 cells at 108 epochs, plus one 36-epoch run of the first cell; returns (path, offsets)."""
    rows = []
    for r in range(3):
        for k, (h, m, o, p) in enumerate(cells):
            rows.append(row(h, 108, m, o, int(p), _accs(k, r)))
    h, m, o, p = cells[0]
    rows.append(row(h, 36, m, o, int(p), (0.8, 0.7, 0.6, 300.0)))
    return write_records(tmp_path, rows)


def write_records(tmp_path, rows: list[bytes]):
    """The framed records as ``nasbench_tiny.tfrecord``; returns (path, byte offset of each record)."""
    path = tmp_path / "nasbench_tiny.tfrecord"
    offsets, blob = [], b""
    for data in rows:
        offsets.append(len(blob))
        blob += frame(data)
    path.write_bytes(blob)
    return path, offsets


# -- checksums ------------------------------------------------------------------------------------------


def test_crc32c_known_values():
    assert crc32c_bitwise(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c_python(b"123456789") == 0xE3069283
    assert crc32c_python(b"") == 0
    assert masked_crc32c(b"123456789") == mask(0xE3069283)


def test_batched_crc_matches_bitwise_on_mixed_lengths():
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, size=int(n), dtype=np.uint8).tobytes() for n in rng.integers(0, 300, 60)]
    chunks += [b"", b"\x00" * 17, bytes(70_000)]  # empty, zeros, and one longer than the batch limit
    assert crc32c_batch(chunks).tolist() == [crc32c_bitwise(c) for c in chunks]


# -- reading ----------------------------------------------------------------------------------------------


def test_reads_every_record_with_offsets(record_file, cells):
    path, offsets = record_file
    records = list(iter_nb101_records(path))
    assert [r.offset for r in records] == offsets
    first = records[0]
    assert (first.module_hash, first.epochs, first.raw_adjacency, first.raw_operations) == (
        cells[0][0], 108, cells[0][1], cells[0][2])
    m = first.metrics
    assert m.trainable_parameters == cells[0][3] and m.total_time == 123.0
    assert len(m.evaluation_data) == 3
    assert first.final.test_accuracy == _accs(0, 0)[2] and first.final.validation_accuracy == _accs(0, 0)[1]
    assert first.final.training_time == _accs(0, 0)[3] and first.final.current_epoch == 108
    assert first.final.checkpoint_path == f"/ckpt/{cells[0][0]}/model.ckpt-1"
    assert first.halfway.current_epoch == 54


def test_decode_metrics_rejects_a_wrong_wire_type():
    bad = varint(1 << 3 | 0) + varint(5)  # evaluation_data as a varint
    with pytest.raises(ValueError, match="wire type"):
        decode_metrics(bad)


def _flip(path, position):
    blob = bytearray(path.read_bytes())
    blob[position] ^= 0x01
    path.write_bytes(bytes(blob))


def _read_until_error(path):
    got = []
    with pytest.raises(DataError) as info:
        for offset, _ in iter_tfrecords(path):
            got.append(offset)
    return got, str(info.value)


def test_bad_length_checksum_names_the_offset(record_file):
    path, offsets = record_file
    _flip(path, offsets[4] + 9)  # inside the length's CRC of record 4
    got, message = _read_until_error(path)
    assert got == offsets[:4]
    assert f"byte offset {offsets[4]}" in message and "length" in message


def test_bad_length_field_names_the_offset(record_file):
    path, offsets = record_file
    _flip(path, offsets[2] + 1)  # the length itself: it must not be trusted
    got, message = _read_until_error(path)
    assert got == offsets[:2] and f"byte offset {offsets[2]}" in message


def test_bad_data_checksum_names_the_offset(record_file):
    path, offsets = record_file
    _flip(path, offsets[7] + 12 + 5)  # a data byte of record 7
    got, message = _read_until_error(path)
    assert got == offsets[:7]
    assert f"byte offset {offsets[7]}" in message and "data" in message


def test_unverified_reading_skips_the_checksums(record_file):
    path, offsets = record_file
    _flip(path, offsets[1] + len(path.read_bytes()[offsets[1]:offsets[2]]) - 1)  # record 1's data CRC
    assert [o for o, _ in iter_tfrecords(path, verify=False)] == offsets


@pytest.mark.parametrize("cut, what", [(5, "header"), (12 + 40, "data bytes"), (-2, "checksum")])
def test_truncated_record_names_the_offset(record_file, cut, what):
    path, offsets = record_file
    blob = path.read_bytes()
    end = offsets[-1] + cut if cut > 0 else len(blob) + cut
    path.write_bytes(blob[:end])
    got, message = _read_until_error(path)
    assert got == offsets[:-1]
    assert f"truncated record at byte offset {offsets[-1]}" in message and what in message


def test_not_json_is_a_data_error(tmp_path):
    path = tmp_path / "x.tfrecord"
    path.write_bytes(frame(b"\x00\x01 not json"))
    with pytest.raises(DataError, match="byte offset 0 is not UTF-8 JSON"):
        list(iter_nb101_records(path))


def test_missing_file(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        list(iter_tfrecords(tmp_path / "none.tfrecord"))


# -- the space from records, and the HDF5 round trip -------------------------------------------------------


def _expected_means(k):
    reps = [_accs(k, r) for r in range(3)]
    return 100 * np.mean([a[2] for a in reps]), 100 * np.mean([a[1] for a in reps])


def _check_space(space, cells):
    assert len(space) == 5
    order = sorted(range(5), key=lambda k: cells[k][0])  # index = rank of the hash
    for i, k in enumerate(order):
        h, m, o, p = cells[k]
        assert space.hash_of(i) == h and space.hash_of(space[i]) == h  # the stored spec hashes to its key
        assert space.index_of(space[i]) == i and space.index_of(h) == i
        assert "".join(str(x) for r in space[i]["matrix"] for x in r) == m and ",".join(space[i]["ops"]) == o
        test, val = _expected_means(k)
        assert space.accuracy(i, "cifar10", "test") == pytest.approx(test, abs=1e-12)
        assert space.accuracy(i, "cifar10", "val") == pytest.approx(val, abs=1e-12)
        assert space.params(i, "cifar10") == p
    assert space.indices_with("cifar10", "val") == range(5)


def test_space_from_the_record_file(record_file, cells):
    path, _ = record_file
    _check_space(get_space("nb101", source=path), cells)
    short = get_space("nb101", source=path, epochs=36)
    i = short.index_of(cells[0][0])
    assert short.accuracy(i, "cifar10", "test") == pytest.approx(60.0)
    assert np.isnan(short.results.test_acc).sum() == 4  # only one cell was run for 36 epochs
    with pytest.raises(DataError, match="no stored 'test' accuracy"):
        short.accuracy((i + 1) % 5, "cifar10", "test")
    with pytest.raises(DataError, match="no runs of 12 epochs"):
        get_space("nb101", source=path, epochs=12)


def test_convert_round_trip_through_the_cli(record_file, cells, tmp_path, capsys):
    path, _ = record_file
    target = tmp_path / "nb101.h5"
    assert main(["convert", "nb101", "--from", str(path), "--to", str(target), "--quiet"]) == 0
    assert "5 cells, 16 runs" in capsys.readouterr().out
    _check_space(get_space("nb101", source=target), cells)
    runs = load_h5_runs(target)
    assert sorted(runs.metrics) == [36, 108]
    k0 = int(np.searchsorted(runs.cells.hashes, cells[0][0]))
    assert runs.metrics[108]["final_training_time"][k0].tolist() == [1000.0, 1001.0, 1002.0]
    assert runs.metrics[108]["halfway_test_accuracy"][k0].tolist() == [0.5, 0.5, 0.5]
    assert np.isnan(runs.metrics[36]["final_test_accuracy"][k0, 1:]).all()
    # a second conversion refuses to overwrite unless asked
    assert main(["convert", "nb101", "--from", str(path), "--to", str(target), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", "nb101", "--from", str(path), "--to", str(target), "--quiet", "--overwrite"]) == 0


def test_convert_reports_a_corrupt_record(record_file, tmp_path, capsys):
    path, offsets = record_file
    _flip(path, offsets[3] + 20)
    assert main(["convert", "nb101", "--from", str(path), "--to", str(tmp_path / "x.h5"), "--quiet"]) == 2
    assert f"byte offset {offsets[3]}" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


def test_h5_that_is_not_ours_is_refused(tmp_path):
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(DataError, match="not a zcbench NAS-Bench-101 file"):
        get_space("nb101", source=path)
