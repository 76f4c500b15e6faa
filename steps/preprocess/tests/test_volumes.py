"""The folders the step writes: symlinks out of the volume, a full or read-only disk, a kill mid-download."""

import os
import signal
import subprocess
import sys
import time

import pytest
from idx_files import write_idx_folder
from local_http import Stalled
from step_runs import error_line, nothing_published, refused, run

import mnist_ct.preprocess.step as step
from mnist_ct.artifacts import sha256_file
from mnist_ct.preprocess.sources import MNIST, IdxDataset, RemoteFile

TRAIN_IMAGES = MNIST.files["train-images"].name


def files_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def tiny_mnist(tmp_path, server, monkeypatch):
    """A tiny MNIST-format data set served on 127.0.0.1 and standing in for MNIST (its checksums as official)."""
    folder = tmp_path / "served"
    write_idx_folder(folder)
    files = {role: RemoteFile(f.name, sha256_file(folder / f.name)) for role, f in MNIST.files.items()}
    monkeypatch.setitem(step.IDX_DATASETS, "mnist", IdxDataset("mnist", files, (server.url,), MNIST.classes))
    for f in files.values():
        server.routes[f"/{f.name}"] = (folder / f.name).read_bytes()
    return server


def test_a_download_is_cached_in_raw(tmp_path, tiny_mnist):
    assert run(tmp_path, "--dataset", "mnist", "--retries", "1") == 0
    assert files_in(tmp_path / "data/raw/mnist") == sorted(f.name for f in MNIST.files.values())


def test_bad_input_raw_cache_is_a_symlink_out_of_the_volume(tmp_path, capsys, tiny_mnist):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data/raw").symlink_to(elsewhere)
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--retries", "1")
    assert line.startswith(f"preprocess: error: {tmp_path / 'data/raw/mnist'}: leads out of its volume")
    assert files_in(elsewhere) == [] and sum(tiny_mnist.hits.values()) == 0


def test_bad_input_runs_folder_is_a_symlink_out_of_the_volume(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data/runs").symlink_to(elsewhere)
    line = refused(tmp_path, capsys, 3, "--limit-per-class", "10")
    assert line.startswith(f"preprocess: error: {tmp_path / 'data/runs/r1/dataset'}: leads out of its volume")
    assert files_in(elsewhere) == []


def test_bad_input_raw_cache_is_a_file(tmp_path, capsys, tiny_mnist):
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/mnist").write_text("")
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--retries", "1")
    assert line.startswith(f"preprocess: error: {tmp_path / 'data/raw/mnist'}: File exists; already exists")


def test_bad_input_a_folder_in_the_cache_where_a_file_should_be(tmp_path, capsys, tiny_mnist):
    (tmp_path / "data/raw/mnist" / TRAIN_IMAGES).mkdir(parents=True)
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--retries", "1")
    assert line == (
        f"preprocess: error: {tmp_path / 'data/raw/mnist' / TRAIN_IMAGES}: in the download cache but not a file; "
        "remove it and rerun"
    )


def test_bad_input_full_disk_while_caching_a_download(tmp_path, capsys, server, tmpfs):
    data = tmpfs(tmp_path / "data", size="200k")
    server.routes[f"/{TRAIN_IMAGES}"] = os.urandom(600_000)
    line = refused(tmp_path, capsys, 5, "--dataset", "mnist", "--mirror", server.url, "--retries", "1")
    assert line.startswith(f"preprocess: error: {data / 'raw/mnist' / TRAIN_IMAGES}: No space left on device; ")
    assert "the disk is full" in line
    assert files_in(data / "raw/mnist") == []  # no partial file left in the cache


def test_bad_input_full_disk_while_publishing(tmp_path, capsys, tmpfs):
    data = tmpfs(tmp_path / "data", size="200k")  # 300 digits are 235 KB
    line = refused(tmp_path, capsys, 5, "--limit-per-class", "30")
    assert line.startswith(f"preprocess: error: {data / 'runs/r1/dataset'}") and "No space left on device" in line
    assert files_in(data / "runs/r1") == []  # no staging folder left


def test_bad_input_read_only_data_volume(tmp_path, capsys, tmpfs):
    data = tmpfs(tmp_path / "data", read_only=True)
    line = refused(tmp_path, capsys, 5, "--limit-per-class", "10")
    assert line.startswith(f"preprocess: error: {data / 'runs'}: Read-only file system; ")
    assert "mounted read-only" in line


def test_bad_input_sigterm_mid_download_leaves_no_partial_file(tmp_path, server):
    server.routes[f"/{TRAIN_IMAGES}"] = Stalled(os.urandom(1_000_000), sent=100_000)
    cache = tmp_path / "data/raw/mnist"
    cmd = [sys.executable, "-m", "mnist_ct.preprocess", "--run-id", "r1", "--data-root", str(tmp_path / "data")]
    proc = subprocess.Popen(
        [*cmd, "--dataset", "mnist", "--mirror", server.url, "--retries", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(name.startswith(f".{TRAIN_IMAGES}.part-") for name in files_in(cache)):
            assert proc.poll() is None and time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert error_line(err, 143) == "preprocess: error: terminated (SIGTERM); nothing half-written was left"
    assert files_in(cache) == []
    assert nothing_published(tmp_path / "data")
