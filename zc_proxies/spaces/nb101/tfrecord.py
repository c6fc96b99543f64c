"""The official NAS-Bench-101 record file, read without TensorFlow.

Three layers, each checked:

1. **TFRecord framing.** A file is a sequence of records, each
   ``uint64 length | uint32 masked CRC32C of the 8 length bytes | data |
   uint32 masked CRC32C of the data`` (all little-endian). The mask is
   ``((crc >> 15) | (crc << 17)) + 0xA282EAD8`` modulo 2**32, as TensorFlow
   writes it. A checksum mismatch or a record cut short raises
   :class:`~zc_proxies.errors.DataError` naming the byte offset where the
   record starts.
2. **The JSON row.** Each record's data is UTF-8 JSON: ``[module_hash,
   epochs, raw_adjacency, raw_operations, raw_metrics]`` where
   ``raw_adjacency`` is the flattened 0/1 matrix, ``raw_operations`` the
   comma-separated op names and ``raw_metrics`` a base64 ``ModelMetrics``
   protobuf. There is one record per (cell, epoch budget, repeat).
3. **The metrics protobuf** (``nasbench/lib/model_metrics.proto``, proto2),
   decoded by a minimal wire-format reader:

   ``ModelMetrics``: 1 ``evaluation_data`` (repeated message), 2
   ``trainable_parameters`` (int32), 3 ``total_time`` (double).
   ``EvaluationData``: 1 ``current_epoch``, 2 ``training_time``, 3
   ``train_accuracy``, 4 ``validation_accuracy``, 5 ``test_accuracy`` (all
   double), 6 ``checkpoint_path`` (string). The official API reads
   ``evaluation_data[1]`` as the halfway and ``[2]`` as the final evaluation
   (``[0]`` is at initialisation).

CRC32C needs no compiled package: data checksums are computed for thousands of
records at once with numpy (:func:`crc32c_batch`); if the optional package
``crc32c`` or ``google-crc32c`` is installed, it is used instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...errors import DataError, MissingDataError

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def _crc_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # Castagnoli polynomial, bit-reversed
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, table-driven, in pure Python."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _accelerated() -> Callable[[bytes], int] | None:
    try:
        import crc32c as _c  # type: ignore[import-not-found]

        return lambda data: _c.crc32c(data)
    except ImportError:
        pass
    try:
        import google_crc32c as _g  # type: ignore[import-not-found]

        return lambda data: _g.value(bytes(data))
    except ImportError:
        return None


crc32c: Callable[[bytes], int] = _accelerated() or crc32c_python


def masked_crc32c(data: bytes) -> int:
    """The CRC as TFRecord stores it (rotated right by 15 bits plus a constant)."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# Vectorised CRC32C for many short records at once. CRC is linear over GF(2):
# crc_raw(state, data) = crc_raw(state, zeros(len)) ^ crc_raw(0, data), and leading zero
# bytes leave a zero register at zero, so records of different lengths can be right-aligned
# in one zero-padded matrix and run through the table column by column.
_NP_TABLE = np.array(_TABLE, dtype=np.uint32)
_BATCH_RECORDS = 4096
_BATCH_BYTES = 4 << 20
_BATCH_MAX_RECORD = 1 << 16  # longer records are checked one by one
_zero_run: dict[int, int] = {}


def _crc_of_zeros(length: int) -> int:
    """crc_raw(0xFFFFFFFF, length zero bytes), cached by length."""
    value = _zero_run.get(length)
    if value is None:
        crc = 0xFFFFFFFF
        for _ in range(length):
            crc = _TABLE[crc & 0xFF] ^ (crc >> 8)
        value = _zero_run[length] = crc
    return value


def crc32c_batch(chunks: Sequence[bytes]) -> np.ndarray:
    """CRC-32C of each of ``chunks`` (uint32 array), vectorised across chunks with numpy."""
    out = np.zeros(len(chunks), dtype=np.uint32)
    short = [i for i, c in enumerate(chunks) if len(c) <= _BATCH_MAX_RECORD]
    for i in set(range(len(chunks))) - set(short):
        out[i] = crc32c(chunks[i])
    if crc32c is not crc32c_python:  # a compiled CRC is faster one by one
        for i in short:
            out[i] = crc32c(chunks[i])
        return out
    if not short:
        return out
    width = max(len(chunks[i]) for i in short)
    grid = np.zeros((width, len(short)), dtype=np.uint8)  # one column per chunk, right-aligned
    for col, i in enumerate(short):
        n = len(chunks[i])
        if n:
            grid[width - n:, col] = np.frombuffer(chunks[i], dtype=np.uint8)
    reg = np.zeros(len(short), dtype=np.uint32)
    for row in grid:
        reg = _NP_TABLE[(reg ^ row) & 0xFF] ^ (reg >> 8)
    zeros = np.array([_crc_of_zeros(len(chunks[i])) for i in short], dtype=np.uint32)
    out[short] = reg ^ zeros ^ np.uint32(0xFFFFFFFF)
    return out


def masked_crc32c_batch(chunks: Sequence[bytes]) -> np.ndarray:
    """:func:`masked_crc32c` of each chunk (uint32 array)."""
    crc = crc32c_batch(chunks).astype(np.uint64)
    rotated = ((crc >> np.uint64(15)) | (crc << np.uint64(17))) & np.uint64(0xFFFFFFFF)
    return ((rotated + np.uint64(_MASK_DELTA)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


# -- layer 1: framing --------------------------------------------------------------------------------------------


def iter_tfrecords(path: str | Path, *, verify: bool = True) -> Iterator[tuple[int, bytes]]:
    """Yield ``(byte offset of the record, record data)`` for every record of a TFRecord file.

    Raises
    ------
    MissingDataError
        The file does not exist.
    DataError
        A length or data checksum does not match (with ``verify``), or the
        file ends inside a record; the message names the record's offset.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"TFRecord file {str(path)!r} does not exist")
    with open(path, "rb") as fh:
        yield from _iter_stream(fh, str(path), verify)


def _iter_stream(fh: BinaryIO, name: str, verify: bool) -> Iterator[tuple[int, bytes]]:
    """Frame records one by one; data checksums are verified a batch at a time (see :func:`crc32c_batch`)."""
    pending: list[tuple[int, bytes, int]] = []  # (offset, data, stored masked crc)
    pending_bytes = 0
    offset = 0
    try:
        while True:
            header = fh.read(_HEADER.size)
            if not header:
                break
            if len(header) < _HEADER.size:
                raise DataError(f"{name}: truncated record at byte offset {offset}: the file ends after "
                                f"{len(header)} of the {_HEADER.size} header bytes")
            length, length_crc = _HEADER.unpack(header)
            # The length is trusted only after its own checksum passes.
            if verify and masked_crc32c(header[:8]) != length_crc:
                raise DataError(f"{name}: corrupt record at byte offset {offset}: the CRC32C of the length "
                                f"field does not match (the file is damaged or not a TFRecord file)")
            data = fh.read(length)
            if len(data) < length:
                raise DataError(f"{name}: truncated record at byte offset {offset}: its header announces "
                                f"{length} data bytes but the file ends after {len(data)}")
            footer = fh.read(_FOOTER.size)
            if len(footer) < _FOOTER.size:
                raise DataError(f"{name}: truncated record at byte offset {offset}: the file ends inside "
                                f"the data checksum")
            if not verify:
                yield offset, data
            else:
                pending.append((offset, data, _FOOTER.unpack(footer)[0]))
                pending_bytes += length
                if len(pending) >= _BATCH_RECORDS or pending_bytes >= _BATCH_BYTES:
                    yield from _verified(pending, name)
                    pending, pending_bytes = [], 0
            offset += _HEADER.size + length + _FOOTER.size
    except DataError:
        # Records framed before a framing error are checked and handed out first, in order.
        yield from _verified(pending, name)
        raise
    yield from _verified(pending, name)


def _verified(batch: list[tuple[int, bytes, int]], name: str) -> Iterator[tuple[int, bytes]]:
    crcs = masked_crc32c_batch([data for _, data, _ in batch])
    for (offset, data, stored), crc in zip(batch, crcs):
        if int(crc) != stored:
            raise DataError(f"{name}: corrupt record at byte offset {offset}: the CRC32C of its "
                            f"{len(data)} data bytes does not match")
        yield offset, data


# -- layer 3: protobuf wire format ----------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("a varint runs past the end of the message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint is longer than 10 bytes")


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)`` of a protobuf message.

    Varints come back as unsigned ints, fixed64/fixed32 as the raw 8/4 bytes,
    length-delimited fields as bytes. Groups (wire types 3, 4) are refused.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key = buf[pos]
        if key < 0x80:  # one-byte key: every field of the NB101 messages
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0 is invalid")
        if wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size = buf[pos] if pos < end else 0x80
            if size < 0x80:
                pos += 1
            else:
                size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        if pos > end:
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, wire, value


_DOUBLE = struct.Struct("<d")


def _double(number: int, wire: int, value: int | bytes) -> float:
    if wire != 1:
        raise ValueError(f"field {number} should be a double (wire type 1), got wire type {wire}")
    return _DOUBLE.unpack(value)[0]  # type: ignore[arg-type]


@dataclass
class EvaluationData:
    """One evaluation during training (``EvaluationData`` in ``model_metrics.proto``)."""

    current_epoch: float = 0.0
    training_time: float = 0.0
    train_accuracy: float = 0.0
    validation_accuracy: float = 0.0
    test_accuracy: float = 0.0
    checkpoint_path: str = ""


_EVAL_DOUBLES = {1: "current_epoch", 2: "training_time", 3: "train_accuracy",
                 4: "validation_accuracy", 5: "test_accuracy"}


@dataclass
class ModelMetrics:
    """The metrics of one training run (``ModelMetrics`` in ``model_metrics.proto``)."""

    evaluation_data: list[EvaluationData] = field(default_factory=list)
    trainable_parameters: int = 0
    total_time: float = 0.0


def decode_evaluation(buf: bytes) -> EvaluationData:
    """Decode an ``EvaluationData`` message (unknown fields are skipped)."""
    out = EvaluationData()
    for number, wire, value in iter_fields(buf):
        if number in _EVAL_DOUBLES:
            setattr(out, _EVAL_DOUBLES[number], _double(number, wire, value))
        elif number == 6:
            if wire != 2:
                raise ValueError(f"checkpoint_path should be a string (wire type 2), got wire type {wire}")
            out.checkpoint_path = bytes(value).decode("utf-8", errors="replace")  # type: ignore[arg-type]
    return out


def decode_metrics(buf: bytes) -> ModelMetrics:
    """Decode a ``ModelMetrics`` message (unknown fields are skipped)."""
    out = ModelMetrics()
    for number, wire, value in iter_fields(buf):
        if number == 1:
            if wire != 2:
                raise ValueError(f"evaluation_data should be a message (wire type 2), got wire type {wire}")
            out.evaluation_data.append(decode_evaluation(value))  # type: ignore[arg-type]
        elif number == 2:
            if wire != 0:
                raise ValueError(f"trainable_parameters should be a varint, got wire type {wire}")
            v = int(value)  # type: ignore[arg-type]
            out.trainable_parameters = v - (1 << 64) if v >= 1 << 63 else v  # int32 negatives are sign-extended
        elif number == 3:
            out.total_time = _double(number, wire, value)
    return out


# -- layer 2: the NAS-Bench-101 row -------------------------------------------------------------------------------


@dataclass
class NB101Record:
    """One official row: one training run of one cell at one epoch budget."""

    offset: int
    module_hash: str
    epochs: int
    raw_adjacency: str
    raw_operations: str
    metrics: ModelMetrics

    @property
    def final(self) -> EvaluationData:
        """The evaluation at the end of training (the official API's ``evaluation_data[2]``)."""
        return self.metrics.evaluation_data[-1]

    @property
    def halfway(self) -> EvaluationData | None:
        """The evaluation at half the epochs (``evaluation_data[1]``), if recorded."""
        data = self.metrics.evaluation_data
        return data[1] if len(data) >= 3 else None


def parse_record(data: bytes, offset: int = 0, name: str = "record") -> NB101Record:
    """Decode one record's data (JSON row with its base64 protobuf)."""
    where = f"{name}: record at byte offset {offset}"
    try:
        row = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where} is not UTF-8 JSON ({exc}); is this the NAS-Bench-101 record file?") from None
    if not isinstance(row, list) or len(row) != 5:
        raise DataError(f"{where}: expected a JSON list [module_hash, epochs, raw_adjacency, raw_operations, "
                        f"raw_metrics], got {str(row)[:80]!r}")
    module_hash, epochs, adjacency, operations, raw_metrics = row
    if not (isinstance(module_hash, str) and isinstance(epochs, int) and isinstance(adjacency, str)
            and isinstance(operations, str) and isinstance(raw_metrics, str)):
        raise DataError(f"{where}: a field has the wrong type (expected str, int, str, str, str)")
    try:
        metrics = decode_metrics(base64.b64decode(raw_metrics, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise DataError(f"{where}: the metrics are not a valid base64 ModelMetrics protobuf ({exc})") from None
    if not metrics.evaluation_data:
        raise DataError(f"{where}: the metrics hold no evaluation_data")
    return NB101Record(offset, module_hash, epochs, adjacency, operations, metrics)


def iter_nb101_records(path: str | Path, *, verify: bool = True) -> Iterator[NB101Record]:
    """Every row of an official NAS-Bench-101 ``.tfrecord`` file, decoded and checked."""
    name = str(path)
    for offset, data in iter_tfrecords(path, verify=verify):
        yield parse_record(data, offset, name)
