"""Bad input and faults of whole runs: each stops before anything is stored, with one line naming the problem.

One test per case the engine issue lists; the per-architecture ones (failures
printed, ``--retry-failed``) and the file faults (disk full, merge and export
inputs) as well. ``score()``'s own bad input is in test_score_bad_input.py,
the benchmark tables' in test_table_validation.py, dead workers in test_runner.py.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import test_evaluate  # noqa: F401  (registers the tiny-test space)

from zc_proxies.cli import main
from zc_proxies.runs import store as store_module
from zc_proxies.runs.store import ResultStore, read_store

FAST = ["--batch-size", "8", "--bootstrap", "20", "--no-plot", "--quiet"]


def eval_args(out: Path, data_root: Path, *extra: str, space: str = "nb201-cifar10", sample: str = "2") -> list[str]:
    return ["eval", "--space", space, "--sample", sample, "--out", str(out), "--data", str(data_root), *FAST, *extra]


def refused(capsys, argv: list[str], message: str, *, started: bool = False) -> str:
    """Exit status 2 and one line naming the problem (after the run's own first line if it ``started``)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 + started, err
    return err


@pytest.mark.parametrize("extra,message", [
    (["--device", "cuda"], "--device cuda: CUDA is not available on this machine"),
    (["--device", "tpu9"], "--device 'tpu9' is not a torch device"),
    (["--batch-size", "20000"], "--batch-size 20000: cifar10-train at"),
    (["--seed", "-1"], "--seed -1 is out of range: use a whole number in 0..9223372036854775807"),
    (["--seed", str(2**63)], f"--seed {2**63} is out of range"),
    (["--bootstrap", "0"], "--bootstrap must be a positive integer, got 0"),
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--import", "no_such_module_here"], "--import no_such_module_here: No module named 'no_such_module_here'"),
    (["--shard", "2/2"], "--shard 2/2: need 0 <= i < N"),
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot connect to the Dask scheduler"),
])
def test_run_level_problems_stop_before_anything_is_stored(tmp_path, data_root, capsys, extra, message):
    if extra[0] == "--device" and extra[1] == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    if extra[0] == "--scheduler":
        pytest.importorskip("distributed")
    out = tmp_path / "run"
    refused(capsys, eval_args(out, data_root, *extra), message)
    assert not out.exists()


def test_a_batch_too_large_names_the_images_and_the_size(tmp_path, data_root, capsys):
    err = refused(capsys, eval_args(tmp_path / "r", data_root, "--batch-size", "20000"), "--batch-size 20000")
    assert "has 10000 images, fewer than batch size 20000" in err


def test_a_balanced_batch_the_classes_cannot_fill_is_refused_up_front(tmp_path, data_root, capsys):
    refused(capsys, eval_args(tmp_path / "r", data_root, "--balanced-batch", "--batch-size", "9999"),
            "a class-balanced batch of 9999 over 10 classes needs more images per class")


@pytest.mark.parametrize("kind", ["file", "file-parent", "store-is-folder", "read-only"])
def test_an_out_that_cannot_hold_a_store_is_refused(tmp_path, data_root, capsys, monkeypatch, kind):
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("not a folder")
        message = "is a file, not a folder"
    elif kind == "file-parent":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
        message = "is a file, not a folder"
    elif kind == "store-is-folder":
        (out / "scores.jsonl").mkdir(parents=True)
        message = "is a folder where the result store file should be"
    else:
        out.mkdir()
        real = os.access
        monkeypatch.setattr(store_module.os, "access", lambda p, mode: False if Path(p) == out else real(p, mode))
        message = f"cannot write in {str(out)!r} (permission denied)"
    refused(capsys, eval_args(out, data_root), message)
    assert not (out / "scores.jsonl").is_file()


def test_malformed_slurm_variables_are_named(tmp_path, data_root, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "seven")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    refused(capsys, eval_args(tmp_path / "r", data_root), "environment variable SLURM_ARRAY_TASK_ID='seven' is not "
                                                          "an integer")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "9")
    refused(capsys, eval_args(tmp_path / "r", data_root), "shard 9 of 4 (SLURM_ARRAY_TASK_ID of "
                                                          "SLURM_ARRAY_TASK_COUNT)")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("extra,message", [
    (["--samples", "0"], "samples must be a positive integer, got 0"),
    (["--tolerance", "1.5"], "tolerance must lie in [0, 1), got 1.5"),
    (["--tolerance", "-0.1"], "tolerance must lie in [0, 1), got -0.1"),
    (["--batch-size", "0"], "batch_size must be a positive integer, got 0"),
    (["--seed", "-3"], "seed -3 is out of range"),
    (["--workers", "0"], "--workers must be a positive integer, got 0"),
    (["--device", "cuda:7"], "--device cuda:7"),
])
def test_blockswap_search_options_out_of_range(tmp_path, data_root, capsys, extra, message):
    out = tmp_path / "best.json"
    refused(capsys, ["blockswap", "search", "--net", "wrn-16-1", "--budget", "100k", "--data", str(data_root),
                     "--out", str(out), *extra], message)
    assert not out.exists() and not list(tmp_path.iterdir())


# -- per-architecture failures -------------------------------------------------------------------------------
def test_failures_are_printed_and_retry_failed_scores_error_rows_again(tmp_path, data_root, capsys):
    archs = tmp_path / "archs.txt"
    archs.write_text("0\n4\n7\n")  # 4 gives NaN, 7 cannot be built (test_evaluate.TinySpace)
    out = tmp_path / "tiny"
    argv = ["eval", "--import", "test_evaluate", "--space", "tiny-test", "--proxy", "fisher,grad_norm", "--archs",
            str(archs), "--out", str(out), "--data", str(data_root), *FAST]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "4 scores of this run failed or were NaN:" in err
    assert "index 7, proxy fisher, seed 0: building the network or minibatch failed: this tiny arch cannot be " \
           "built" in err
    assert "index 4, proxy fisher, seed 0: proxy 'fisher' gave" in err or "index 4" in err
    assert main(argv) == 0  # a plain rerun keeps the stored failures
    assert "3 architectures were already in the store" in capsys.readouterr().err
    assert main(argv + ["--retry-failed"]) == 0
    err = capsys.readouterr().err
    assert "2 stored error rows were scored again (--retry-failed)" in err  # index 7's two rows; NaN rows stay
    _, rows = read_store(out / "scores.jsonl")
    assert len(rows) == 6 and len({(r["index"], r["proxy"]) for r in rows}) == 6


# -- faults while writing -------------------------------------------------------------------------------------
def test_disk_full_while_appending_stops_the_run_and_a_rerun_resumes(tmp_path, data_root, capsys, monkeypatch):
    out = tmp_path / "full"
    real_write = os.write
    calls = {"n": 0}

    def disk_fills(fd, data):
        calls["n"] += 1
        if calls["n"] == 3:  # header, first architecture, then the disk is full mid-line
            real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(store_module.os, "write", disk_fills)
    err = refused(capsys, eval_args(out, data_root, sample="3"), "No space left on device", started=True)
    assert "the 1 results stored before are kept" in err
    monkeypatch.undo()
    assert len(read_store(out / "scores.jsonl")[1]) == 1
    assert not list(out.glob("correlations*")) and not list(out.glob(".*.tmp"))
    assert main(eval_args(out, data_root, sample="3")) == 0
    assert "1 architectures were already in the store (resumed)" in capsys.readouterr().err
    assert len(read_store(out / "scores.jsonl")[1]) == 3


def test_a_report_that_cannot_be_written_leaves_no_empty_file(tmp_path, data_root, capsys, monkeypatch):
    from zc_proxies.runs import atomic

    real_fsync = os.fsync

    def full_for_reports(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):  # only the files written whole
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", full_for_reports)
    out = tmp_path / "rep"
    refused(capsys, eval_args(out, data_root), "cannot write the report under", started=True)
    monkeypatch.undo()
    assert len(read_store(out / "scores.jsonl")[1]) == 2  # the scores are kept
    assert not list(out.glob("correlations*")) and not list(out.glob(".*tmp"))


# -- merge, export, import ------------------------------------------------------------------------------------
def _eval(out: Path, data_root: Path, *extra: str) -> Path:
    assert main(eval_args(out, data_root, *extra)) == 0
    return out / "scores.jsonl"


def test_merge_checks_every_input_before_writing(tmp_path, data_root, capsys):
    good = _eval(tmp_path / "a", data_root)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().splitlines()[0] + "\n{broken\n" + good.read_text().splitlines()[1] + "\n")
    capsys.readouterr()
    refused(capsys, ["merge", str(good), str(bad), "--out", str(tmp_path / "m"), "--data", str(data_root)],
            "line 2 is not valid JSON")
    other = _eval(tmp_path / "b", data_root, "--no-augment")
    capsys.readouterr()
    refused(capsys, ["merge", str(good), str(other), "--out", str(tmp_path / "m"), "--data", str(data_root)],
            "hold results of different settings (augment: stored True, now False)")
    refused(capsys, ["merge", str(good), "--out", str(tmp_path / "m"), "--data", str(data_root), "--space",
                     "nb201-cifar100"], "--space nb201-cifar100 means space 'nb201' with dataset 'cifar100'")
    assert not (tmp_path / "m").exists()


def test_export_refuses_stores_of_different_settings_as_merge_does(tmp_path, data_root, capsys):
    a = _eval(tmp_path / "a", data_root)
    b = _eval(tmp_path / "b", data_root, "--batch-size", "16")
    capsys.readouterr()
    target = tmp_path / "zc.json"
    refused(capsys, ["export", str(a), str(b), "--out", str(target), "--accuracy", "none"],
            "hold results of different settings (batch_size: stored 8, now 16)")
    assert not target.exists()


def test_merge_of_some_shards_warns_naming_the_missing(tmp_path, data_root, capsys):
    _eval(tmp_path / "s", data_root, "--shard", "1/3")
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s"), "--out", str(tmp_path / "m"), "--data", str(data_root), "--no-plot",
                 "--bootstrap", "20"]) == 0
    captured = capsys.readouterr()
    assert "zcbench merge: warning: merging an incomplete set of shards: shard 0 of 3, shard 2 of 3 are missing" in captured.err
    assert "Incomplete: shard 0 of 3, shard 2 of 3 missing." in captured.out


def test_an_imported_store_can_be_merged_and_reported(tmp_path, data_root, capsys):
    from zc_proxies import get_space

    space = get_space("nb201", data_root)
    archs = [space[i] for i in (0, 1, 2, 3)]
    from zc_proxies.spaces.nb201.naslib import to_naslib_key

    naslib = {"cifar10": {to_naslib_key(a): {"fisher": {"score": float(i + 1), "time": 0.1}}
                          for i, a in enumerate(archs)}}
    src = tmp_path / "zc.json"
    src.write_text(json.dumps(naslib))
    assert main(["import", str(src), "--space", "nb201", "--out", str(tmp_path / "imp"), "--data",
                 str(data_root)]) == 0
    assert main(["merge", str(tmp_path / "imp"), "--out", str(tmp_path / "m"), "--data", str(data_root),
                 "--no-plot", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "fisher" in out and "scores from naslib-import, minibatch not recorded" in out
    assert (tmp_path / "m" / "correlations.csv").is_file()


def test_a_killed_store_writer_leaves_no_lock(tmp_path):
    """The lock is the kernel's: a holder that dies (closes its descriptor) frees the store at once."""
    path = tmp_path / "s.jsonl"
    first = ResultStore(path, {"space": "x"})
    first._lock.release()  # what the kernel does for a killed process
    ResultStore(path, {"space": "x"}).close()
