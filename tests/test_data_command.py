"""``zcbench data list|fetch|verify`` against a real HTTP server on loopback.

The server serves tiny files the tests write in the official layouts (a
CIFAR-10-style tar.gz with the official member names, an NDS-style
``data.zip``, a fake tfrecord); ``$ZCBENCH_MIRROR`` points the downloads at
it, and the catalog's checksums are patched to those of the tiny files (the
real checksums belong to the real files).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import socket
import tarfile
import tempfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from zc_proxies.commands import data as data_command
from zc_proxies.data import catalog, load_cifar
from zc_proxies.data import fetch as fetch_module
from zc_proxies.data.catalog import CACHE_DIR, MIRROR_ENV, Checksum
from zc_proxies.errors import guarded
from zc_proxies.spaces.nds.bench import SWEEPS, read_nds_json

TFRECORD = "nasbench_only108.tfrecord"

# -- a loopback HTTP server with Range support ----------------------------------------------------------


class Server:
    """Files by name; ``log`` records (path, Range header) of every GET; ``cut`` names files whose
    next response stops half-way (the connection closes); ``ranges=False`` ignores Range headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.cut: set[str] = set()
        self.ranges = True
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                state.log.append((self.path, self.headers.get("Range")))
                body = state.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and state.ranges:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if name in state.cut:  # half the bytes, then the connection closes (HTTP/1.0)
                    state.cut.discard(name)
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def gets(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.log if path == f"/{name}"]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- tiny files in the official layouts ------------------------------------------------------------------


def _cifar10_members() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    members = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {"batch_label": f"tiny batch {i}", "labels": [i % 10, (i + 3) % 10],
                 "data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "filenames": ["a.png", "b.png"]}
        members[name] = pickle.dumps(batch, protocol=2)
    members["batches.meta"] = pickle.dumps({"label_names": [f"class{c}" for c in range(10)],
                                            "num_cases_per_batch": 2, "num_vis": 3072}, protocol=2)
    members["readme.html"] = b"<html>tiny</html>\n"
    return members


def _tar_gz(top: str, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        folder = tarfile.TarInfo(top)
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for name, body in members.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(body)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


NDS_JSON = {
    "DARTS_in.json": [{"net": {"width": 16, "depth": 8}, "test_ep_top1": [60.0, 40.5], "params": 1, "flops": 2}],
    "ResNet_reruns.json": {"top": [{"net": {}, "test_ep_top1": [7.0]}], "mid": [{"net": {}, "test_ep_top1": [9.0]}]},
}


def _nds_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("nds_data/", b"")
        for name, records in NDS_JSON.items():
            zf.writestr(f"nds_data/{name}", json.dumps(records))
    return buf.getvalue()


def _md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# -- fixtures ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tiny:
    server: Server
    cifar_members: dict[str, bytes]
    cifar_tar: bytes
    tfrecord: bytes
    nds_zip: bytes


def _replace_item(monkeypatch, name: str, **changes) -> None:
    monkeypatch.setitem(catalog.ITEMS, name, dataclasses.replace(catalog.ITEMS[name], **changes))


def _set_download_checksum(monkeypatch, name: str, checksum: Checksum | None, **more) -> None:
    item = catalog.ITEMS[name]
    _replace_item(monkeypatch, name, download=dataclasses.replace(item.download, checksum=checksum, **more))


@pytest.fixture
def tiny(monkeypatch):
    server = Server()
    members = _cifar10_members()
    cifar_tar = _tar_gz("cifar-10-batches-py", members)
    tfrecord = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    nds_zip = _nds_zip()
    server.files.update({"cifar-10-python.tar.gz": cifar_tar, TFRECORD: tfrecord, "data.zip": nds_zip})
    monkeypatch.setenv(MIRROR_ENV, server.url + "/")
    # The real checksums belong to the real files: these are the tiny files'.
    test = "the test's tiny file"
    cifar = catalog.ITEMS["cifar10"]
    _replace_item(monkeypatch, "cifar10",
                  checks=tuple((name, Checksum("md5", _md5(members[name]), test)) for name, _ in cifar.checks),
                  download=dataclasses.replace(cifar.download, checksum=Checksum("md5", _md5(cifar_tar), test),
                                               size=None))
    sha = Checksum("sha256", _sha256(tfrecord), test)
    _replace_item(monkeypatch, "nb101-tfrecord", checks=((TFRECORD, sha),),
                  download=dataclasses.replace(catalog.ITEMS["nb101-tfrecord"].download, checksum=sha, size=None))
    yield Tiny(server, members, cifar_tar, tfrecord, nds_zip)
    server.close()


def zcbench_data(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``zcbench data ARGV`` as the CLI does (our own parser, dispatched through ``guarded``)."""
    parser = argparse.ArgumentParser(prog="zcbench")
    data_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *argv])
    rc = guarded("zcbench data", lambda: args.func(args))
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("zcbench data: error:")]
    assert len(lines) == 1, err
    return lines[0]


def leftovers(root: Path) -> list[str]:
    """Hidden or temporary files anywhere under the root (staging folders, pooch temporaries, .part files)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith((".", "tmp")) or p.name.endswith(".part"))


# -- fetch ------------------------------------------------------------------------------------------------


def test_fetch_cifar10_unpacks_the_official_layout_and_the_loader_reads_it(tiny, tmp_path, capsys):
    rc, out, err = zcbench_data(capsys, "fetch", "cifar10", "--data", str(tmp_path), "--no-progress")
    assert rc == 0, err
    folder = tmp_path / "images" / "cifar-10-batches-py"
    assert out.startswith(f"cifar10: fetched into {folder}")
    for name, body in tiny.cifar_members.items():
        assert (folder / name).read_bytes() == body
    train = load_cifar(tmp_path, 10, "train")
    assert len(train) == 10 and train.images.shape == (10, 32, 32, 3)
    assert list(train.labels) == [0, 3, 1, 4, 2, 5, 3, 6, 4, 7]
    assert len(load_cifar(tmp_path, 10, "test")) == 2
    assert leftovers(tmp_path) == [] and not (tmp_path / CACHE_DIR).exists()  # archive deleted, nothing half-made

    rc, out, _ = zcbench_data(capsys, "fetch", "cifar10", "--data", str(tmp_path))  # already there: no download
    assert rc == 0 and "nothing to do" in out
    assert len(tiny.server.gets("cifar-10-python.tar.gz")) == 1


def test_fetch_nds_puts_the_json_files_of_data_zip_under_nds(tiny, tmp_path, capsys):
    rc, out, err = zcbench_data(capsys, "fetch", "nds", "--data", str(tmp_path))
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "nds").iterdir()) == sorted(NDS_JSON)  # flat: no nds_data/
    records = read_nds_json(tmp_path / "nds" / "DARTS_in.json")
    assert [dict(r) for r in records] == NDS_JSON["DARTS_in.json"]
    assert len(read_nds_json(tmp_path / "nds" / "ResNet_reruns.json")) == 2
    assert "no published checksum" in out
    assert leftovers(tmp_path) == []


def test_fetch_nds_keeps_json_files_already_there_unless_forced(tiny, tmp_path, capsys):
    (tmp_path / "nds").mkdir()
    mine = tmp_path / "nds" / "DARTS_in.json"
    mine.write_text("[]")
    rc, out, err = zcbench_data(capsys, "fetch", "nds", "--data", str(tmp_path))
    assert rc == 0, err
    assert mine.read_text() == "[]" and "1 already there kept" in out
    assert (tmp_path / "nds" / "ResNet_reruns.json").is_file()
    rc, out, err = zcbench_data(capsys, "fetch", "nds", "--force", "--data", str(tmp_path))
    assert rc == 0, err
    assert json.loads(mine.read_text()) == NDS_JSON["DARTS_in.json"]


def test_fetch_tfrecord_checks_its_sha256(tiny, tmp_path, capsys):
    rc, out, err = zcbench_data(capsys, "fetch", "nb101-tfrecord", "--data", str(tmp_path))
    assert rc == 0, err
    assert (tmp_path / "nb101" / TFRECORD).read_bytes() == tiny.tfrecord
    assert "sha256 matches the published one" in out
    assert leftovers(tmp_path) == []


def test_a_checksum_mismatch_is_refused_and_leaves_no_file_under_the_final_name(tiny, tmp_path, capsys, monkeypatch):
    wrong = "0" * 64
    _set_download_checksum(monkeypatch, "nb101-tfrecord", Checksum("sha256", wrong, "test"))
    rc, _, err = zcbench_data(capsys, "fetch", "nb101-tfrecord", "--data", str(tmp_path))
    assert rc == 2
    line = error_line(err)
    assert f"expected sha256 {wrong}, got {_sha256(tiny.tfrecord)}" in line and TFRECORD in line
    assert not (tmp_path / "nb101" / TFRECORD).exists()
    assert leftovers(tmp_path) == []  # the bad bytes are gone too (no .part to "resume" from)

    _set_download_checksum(monkeypatch, "cifar10", Checksum("md5", "f" * 32, "test"))
    rc, _, err = zcbench_data(capsys, "fetch", "cifar10", "--data", str(tmp_path))
    assert rc == 2 and f"expected md5 {'f' * 32}, got {_md5(tiny.cifar_tar)}" in error_line(err)
    assert not (tmp_path / "images" / "cifar-10-batches-py").exists()
    assert leftovers(tmp_path) == []


def test_an_archive_whose_unpacked_files_do_not_match_is_not_put_in_place(tiny, tmp_path, capsys, monkeypatch):
    item = catalog.ITEMS["cifar10"]
    checks = tuple((n, Checksum("md5", "0" * 32, "t") if n == "data_batch_2" else c) for n, c in item.checks)
    _replace_item(monkeypatch, "cifar10", checks=checks)
    rc, _, err = zcbench_data(capsys, "fetch", "cifar10", "--data", str(tmp_path))
    assert rc == 2
    assert f"data_batch_2: expected md5 {'0' * 32}, got {_md5(tiny.cifar_members['data_batch_2'])}" in error_line(err)
    assert not (tmp_path / "images" / "cifar-10-batches-py").exists()
    assert [p for p in leftovers(tmp_path) if "staging" in p] == []


def test_a_partial_download_is_continued_with_a_range_request(tiny, tmp_path, capsys):
    part = tmp_path / CACHE_DIR / f"{TFRECORD}.part"
    part.parent.mkdir()
    part.write_bytes(tiny.tfrecord[:123_456])
    rc, _, err = zcbench_data(capsys, "list", "--data", str(tmp_path))
    assert rc == 0 and re.search(r"nb101-tfrecord .*partial download 123\.5 kB", _)
    rc, _, err = zcbench_data(capsys, "fetch", "nb101-tfrecord", "--data", str(tmp_path))
    assert rc == 0, err
    assert tiny.server.gets(TFRECORD) == ["bytes=123456-"]  # only the rest was asked for
    assert (tmp_path / "nb101" / TFRECORD).read_bytes() == tiny.tfrecord
    assert "continuing 123.5 kB already received" in err
    assert leftovers(tmp_path) == []


def test_a_connection_cut_mid_download_is_resumed_within_the_same_fetch(tiny, tmp_path, capsys):
    tiny.server.cut.add(TFRECORD)
    rc, _, err = zcbench_data(capsys, "fetch", "nb101-tfrecord", "--data", str(tmp_path))
    assert rc == 0, err
    first, second = tiny.server.gets(TFRECORD)
    assert first is None and second is not None and second.startswith("bytes=")
    assert 0 < int(second[6:-1]) < len(tiny.tfrecord)
    assert "retrying from byte" in err
    assert (tmp_path / "nb101" / TFRECORD).read_bytes() == tiny.tfrecord


def test_a_server_without_range_support_starts_over(tiny, tmp_path, capsys):
    tiny.server.ranges = False
    part = tmp_path / CACHE_DIR / f"{TFRECORD}.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 1000)  # not even the right bytes: a restart must not append to them
    rc, _, err = zcbench_data(capsys, "fetch", "nb101-tfrecord", "--data", str(tmp_path))
    assert rc == 0, err
    assert "starting over" in err
    assert (tmp_path / "nb101" / TFRECORD).read_bytes() == tiny.tfrecord


def test_an_item_that_is_there_but_different_is_replaced_only_with_force(tiny, tmp_path, capsys):
    folder = tmp_path / "images" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    rc, _, err = zcbench_data(capsys, "fetch", "cifar10", "--data", str(tmp_path))
    assert rc == 2 and "--force" in error_line(err) and "data_batch_1: expected md5" in error_line(err)
    assert (folder / "data_batch_1").read_bytes() == b"not a pickle"
    rc, _, err = zcbench_data(capsys, "fetch", "cifar10", "--force", "--data", str(tmp_path))
    assert rc == 0, err
    assert len(load_cifar(tmp_path, 10, "train")) == 10
    assert leftovers(tmp_path) == []


# -- errors -----------------------------------------------------------------------------------------------


def test_an_unknown_item_names_the_closest_ones(tiny, tmp_path, capsys):
    rc, _, err = zcbench_data(capsys, "fetch", "cifar", "--data", str(tmp_path))
    assert rc == 2 and "unknown data item 'cifar': did you mean cifar10 or cifar100?" in error_line(err)
    rc, _, err = zcbench_data(capsys, "verify", "nb101-tfrecords", "--data", str(tmp_path))
    assert rc == 2 and "did you mean nb101-tfrecord?" in error_line(err)


def test_an_item_without_a_public_url_says_why(tmp_path, capsys):
    rc, _, err = zcbench_data(capsys, "fetch", "imagenet16", "--data", str(tmp_path))
    assert rc == 2 and "cannot fetch imagenet16" in error_line(err) and "images/ImageNet16" in error_line(err)


def test_no_network_is_one_line(tmp_path, capsys, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}")
    monkeypatch.setattr(fetch_module, "ATTEMPTS", 2)
    rc, _, err = zcbench_data(capsys, "fetch", "nb101-tfrecord", "--data", str(tmp_path))
    assert rc == 2
    line = error_line(err)
    assert f"cannot download http://127.0.0.1:{port}/{TFRECORD}" in line and "Connection refused" in line
    assert "no network?" in line and not (tmp_path / "nb101" / TFRECORD).exists()


def test_a_missing_file_on_the_server_and_a_bad_mirror_are_one_line(tiny, tmp_path, capsys, monkeypatch):
    del tiny.server.files["data.zip"]
    rc, _, err = zcbench_data(capsys, "fetch", "nds", "--data", str(tmp_path))
    assert rc == 2 and f"{tiny.server.url}/data.zip answered HTTP 404" in error_line(err)
    monkeypatch.setenv(MIRROR_ENV, "ftp://example.org/")
    rc, _, err = zcbench_data(capsys, "fetch", "nds", "--data", str(tmp_path))
    assert rc == 2 and f"{MIRROR_ENV}='ftp://example.org/' must be an http:// or https:// URL" in error_line(err)


def test_a_read_only_data_root_is_refused_before_downloading(tiny, tmp_path, capsys, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    if os.geteuid() != 0:
        root.chmod(0o555)
    else:  # root may write anywhere: make the write probe fail as a read-only file system would
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own keyword
            if dir is not None and Path(dir).is_relative_to(root):
                raise PermissionError(13, "Permission denied", dir)
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(fetch_module.tempfile, "mkstemp", refuse)
    try:
        rc, _, err = zcbench_data(capsys, "fetch", "cifar10", "--data", str(root))
    finally:
        root.chmod(0o755)
    assert rc == 2 and "read-only" in error_line(err) and "Permission denied" in error_line(err)
    assert tiny.server.log == []


# -- list and verify --------------------------------------------------------------------------------------


def _status(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.split("\n\n")[1].splitlines()[1:]:
        name, status, *rest = line.split()
        rows[name] = [status, *rest]
    return rows


def test_list_shows_what_is_present_and_missing(tiny, tmp_path, capsys):
    rc, out, err = zcbench_data(capsys, "list", "--data", str(tmp_path))
    assert rc == 0, err
    rows = _status(out)
    assert set(rows) == set(catalog.ITEMS)
    assert all(r[0] == "missing" for r in rows.values())
    assert rows["cifar10"][2:4] == ["yes", "(md5)"] and rows["imagenet16"][2] == "no"
    assert rows["nds"][2:5] == ["yes", "(no", "checksum)"]
    assert "https://dl.fbaipublicfiles.com/nds/data.zip" in out and "no published checksum" in out
    assert f"downloads from ${MIRROR_ENV}={tiny.server.url}/" in out

    assert zcbench_data(capsys, "fetch", "cifar10", "--data", str(tmp_path))[0] == 0
    rows = _status(zcbench_data(capsys, "list", "--data", str(tmp_path))[1])
    assert rows["cifar10"][0] == "present" and rows["cifar10"][-1] == "images/cifar-10-batches-py"
    assert rows["cifar100"][0] == "missing"


def test_list_on_the_shared_data_root(data_root, capsys):
    rc, out, err = zcbench_data(capsys, "list", "--data", str(data_root))
    assert rc == 0, err
    rows = _status(out)
    assert rows["nb201-table"][0] == "present"
    assert rows["imagenet16"][0] == "missing"
    assert rows["nds"][0] in ("present", "partial")


def test_verify_catches_a_corrupted_file(tiny, tmp_path, capsys):
    assert zcbench_data(capsys, "fetch", "cifar10", "nds", "--data", str(tmp_path))[0] == 0
    rc, out, err = zcbench_data(capsys, "verify", "--data", str(tmp_path))
    assert rc == 0, err
    assert re.search(r"^ok +cifar10 +7 file\(s\) match the published md5", out, re.M)
    assert re.search(r"^unchecked +nds +2 JSON file\(s\) whole; no published checksums", out, re.M)

    batch = tmp_path / "images" / "cifar-10-batches-py" / "data_batch_3"
    body = bytearray(batch.read_bytes())
    body[100] ^= 0xFF
    batch.write_bytes(bytes(body))
    truncated = tmp_path / "nds" / "DARTS_in.json"
    truncated.write_text(truncated.read_text()[:-5])
    rc, out, err = zcbench_data(capsys, "verify", "cifar10", "nds", "--data", str(tmp_path))
    assert rc == 2
    problems = [line for line in err.splitlines() if line.startswith("zcbench data: verify:")]
    assert problems == [
        f"zcbench data: verify: cifar10: data_batch_3: expected md5 {_md5(tiny.cifar_members['data_batch_3'])}, "
        f"got {_md5(bytes(body))}",
        "zcbench data: verify: nds: nds/DARTS_in.json is not a whole JSON file (truncated or empty)",
    ]
    assert "verify found 2 problems in cifar10, nds" in error_line(err)


def test_verify_of_a_named_item_that_is_missing_fails(tmp_path, capsys):
    rc, _, err = zcbench_data(capsys, "verify", "cifar100", "--data", str(tmp_path))
    assert rc == 2 and "cifar100: not under the data root (expected at images/cifar-100-python)" in err
    rc, out, _ = zcbench_data(capsys, "verify", "--data", str(tmp_path))
    assert rc == 0 and "nothing to verify" in out


def test_the_catalog_lists_the_nds_files_the_spaces_read():
    assert set(catalog.NDS_FILES) == {sweep.file for sweep in SWEEPS.values()}
