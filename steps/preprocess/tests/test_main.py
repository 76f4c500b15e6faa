"""The step end to end through its main: what it publishes, and one test per bad-input row."""

import gzip
import hashlib
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
from idx_files import FASHION, NAMES, idx_bytes, write_idx_folder
from step_runs import manifest, refused, run

import mnist_ct.preprocess.step as step
from mnist_ct.artifacts import read_dataset, sha256_file
from mnist_ct.artifacts.mnist5k import builtin_csv
from mnist_ct.preprocess.sources import MNIST, IdxDataset, RemoteFile


def test_default_is_mnist_5k_split_80_20(tmp_path):
    assert run(tmp_path) == 0
    m, splits = read_dataset(tmp_path / "data/runs/r1/dataset")
    assert m.producer.step == "preprocess" and m.producer.version == version("mnist-ct-preprocess")
    assert m.meta["dataset"] == "mnist-5k" and m.meta["split"] == {"method": "stratified", "test_fraction": 0.2}
    assert m.meta["counts"]["train"] == {str(c): 400 for c in range(10)}
    assert m.meta["counts"]["test"] == {str(c): 100 for c in range(10)}
    assert set(m.meta["pixel_stats"]) == {"train", "test"}
    assert 0.12 < m.meta["pixel_stats"]["train"]["mean"] < 0.14
    csv = m.meta["source"]["files"]["mnist_5k.csv.gz"]
    assert m.meta["source"]["kind"] == "builtin" and len(csv["sha256"]) == 64
    assert m.meta["source"]["path"] == str(builtin_csv())  # shipped in mnist-ct-artifacts
    assert splits["train"].images.dtype == np.uint8


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    test_images = []
    for seed in ("0", "0", "1"):
        assert run(tmp_path, "--seed", seed, "--limit-per-class", "30") == 0
        test_images.append(manifest(tmp_path)["files"]["test/images.npy"]["sha256"])
    assert test_images[0] == test_images[1] != test_images[2]


def test_limit_per_class_and_test_fraction(tmp_path):
    assert run(tmp_path, "--limit-per-class", "20", "--test-fraction", "0.25") == 0
    m = manifest(tmp_path)
    assert m["meta"]["sizes"] == {"train": 150, "test": 50} and m["meta"]["limit_per_class"] == 20


def test_mnist_5k_from_a_source_folder(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "mnist_5k.csv.gz").write_bytes(builtin_csv().read_bytes())
    assert run(tmp_path, "--source", str(folder), "--limit-per-class", "10") == 0
    m = manifest(tmp_path)
    assert m["meta"]["source"]["kind"] == "directory" and m["meta"]["source"]["path"] == str(folder)
    assert m["meta"]["sizes"] == {"train": 80, "test": 20}


def test_bad_input_mnist_5k_source_folder_without_the_csv(tmp_path, capsys):
    folder = tmp_path / "src"
    folder.mkdir()
    line = refused(tmp_path, capsys, 3, "--source", str(folder))
    assert line == (
        f"preprocess: error: {folder / 'mnist_5k.csv.gz'}: not found; the --source folder for this data set "
        "holds mnist_5k.csv.gz"
    )
    assert not (tmp_path / "data").exists()  # refused before anything was created


@pytest.mark.skipif(not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist (.ci/run installs it)")
def test_fashion_mnist_from_debian_source_keeps_official_splits(tmp_path):
    assert run(tmp_path, "--dataset", "fashion-mnist", "--source", str(FASHION), "--limit-per-class", "30") == 0
    m, splits = read_dataset(tmp_path / "data/runs/r1/dataset")
    assert m.meta["sizes"] == {"train": 300, "test": 300}
    assert m.meta["classes"][9] == "Ankle boot" and m.meta["split"] == {"method": "official"}
    # Debian re-compressed the files: not the official checksums, but recorded all the same.
    recorded = m.meta["source"]["files"]["train-images-idx3-ubyte.gz"]["sha256"]
    assert recorded == hashlib.sha256((FASHION / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert not (tmp_path / "data/raw").exists()  # nothing downloaded or cached


def test_mnist_from_source_folder(tmp_path, idx_folder):
    assert run(tmp_path, "--dataset", "mnist", "--source", str(idx_folder)) == 0
    _, splits = read_dataset(tmp_path / "data/runs/r1/dataset")
    assert len(splits["train"]) == 60 and len(splits["test"]) == 20


def test_uncompressed_files_in_source_are_read(tmp_path, idx_folder):
    for name in NAMES.values():
        (idx_folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((idx_folder / name).read_bytes()))
        (idx_folder / name).unlink()
    assert run(tmp_path, "--dataset", "mnist", "--source", str(idx_folder)) == 0


def test_download_through_a_mirror_is_checked_against_the_official_checksum(tmp_path, idx_folder, server, capsys):
    # The served files are not the official ones: the download must be refused, and nothing cached.
    for name in NAMES.values():
        server.routes[f"/mnist/{name}"] = (idx_folder / name).read_bytes()
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--mirror", f"{server.url}/mnist/", "--retries", "1")
    assert f"{server.url}/mnist/train-images-idx3-ubyte.gz: served" in line
    assert f"expected sha256 {MNIST.files['train-images'].sha256}" in line
    assert not list((tmp_path / "data/raw/mnist").iterdir())


def test_cached_files_are_used_without_the_network(tmp_path, dead_url, monkeypatch):
    # A tiny data set stands in for MNIST, with its own checksums as the "official" ones.
    cache = tmp_path / "data/raw/mnist"
    write_idx_folder(cache)
    files = {role: RemoteFile(f.name, sha256_file(cache / f.name)) for role, f in MNIST.files.items()}
    monkeypatch.setitem(step.IDX_DATASETS, "mnist", IdxDataset("mnist", files, (dead_url,), MNIST.classes))
    assert run(tmp_path, "--dataset", "mnist") == 0
    m = manifest(tmp_path)
    assert m["meta"]["sizes"] == {"train": 60, "test": 20} and m["meta"]["source"]["kind"] == "download"


# One test per bad-input row (issue 7): one clear line, a non-zero exit, nothing half-written.


def test_bad_input_truncated_gz(tmp_path, idx_folder, capsys):
    f = idx_folder / NAMES["train-images"]
    f.write_bytes(f.read_bytes()[:-300])
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert f"{f}: truncated gzip file" in line


def test_bad_input_wrong_idx_magic(tmp_path, idx_folder, capsys):
    f = idx_folder / NAMES["test-labels"]
    data = bytearray(gzip.decompress(f.read_bytes()))
    data[2] = 0x42
    f.write_bytes(gzip.compress(bytes(data)))
    line = refused(tmp_path, capsys, 3, "--dataset", "fashion-mnist", "--source", str(idx_folder))
    assert f"{f}: wrong idx magic 0x00004201" in line


def test_bad_input_image_label_count_mismatch(tmp_path, idx_folder, capsys):
    (idx_folder / NAMES["train-labels"]).write_bytes(gzip.compress(idx_bytes(np.zeros(59, np.uint8))))
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert "train-images-idx3-ubyte.gz: 60 images but train-labels-idx1-ubyte.gz has 59 labels" in line


def test_bad_input_label_out_of_range(tmp_path, idx_folder, capsys):
    labels = np.zeros(20, np.uint8)
    labels[7] = 11
    (idx_folder / NAMES["test-labels"]).write_bytes(gzip.compress(idx_bytes(labels)))
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert "t10k-labels-idx1-ubyte.gz: label 11 at index 7 is out of range 0..9" in line


def test_bad_input_empty_split_in_source(tmp_path, idx_folder, capsys):
    (idx_folder / NAMES["test-images"]).write_bytes(gzip.compress(idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    (idx_folder / NAMES["test-labels"]).write_bytes(gzip.compress(idx_bytes(np.zeros(0, np.uint8))))
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert "t10k-images-idx3-ubyte.gz: holds no images, so the test split would be empty" in line


def test_bad_input_empty_split_from_options(tmp_path, capsys):
    line = refused(tmp_path, capsys, 2, "--limit-per-class", "2", "--test-fraction", "0.2")
    assert line == (
        "preprocess: error: the test split would be empty (--limit-per-class 2, --test-fraction 0.2); "
        "raise --limit-per-class or change --test-fraction"
    )
    assert not (tmp_path / "data").exists()  # refused before anything was read or created


def test_bad_input_empty_train_split_from_options(tmp_path, capsys):
    line = refused(tmp_path, capsys, 2, "--limit-per-class", "1", "--test-fraction", "0.6")
    assert "the train split would be empty (--limit-per-class 1, --test-fraction 0.6)" in line


def test_bad_input_test_fraction_too_small_for_the_data(tmp_path, capsys):
    # Without --limit-per-class only the data tells: 500 per class * 0.0009 rounds to 0 test images.
    line = refused(tmp_path, capsys, 2, "--test-fraction", "0.0009")
    assert "the test split would be empty (5000 images, --test-fraction 0.0009)" in line


def test_bad_input_wrong_dtype(tmp_path, idx_folder, capsys):
    images = np.zeros((60, 28, 28), np.float32)
    (idx_folder / NAMES["train-images"]).write_bytes(gzip.compress(idx_bytes(images)))
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert "expected uint8 images [N,28,28], found float32 [60, 28, 28]" in line


def test_bad_input_missing_source_file_is_named(tmp_path, idx_folder, capsys):
    (idx_folder / NAMES["test-labels"]).unlink()
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert f"{idx_folder / NAMES['test-labels']}: not found (nor uncompressed)" in line
    assert not (tmp_path / "data").exists()


def test_bad_input_a_folder_where_a_source_file_should_be(tmp_path, idx_folder, capsys):
    (idx_folder / NAMES["train-labels"]).unlink()
    (idx_folder / NAMES["train-labels"]).mkdir()
    line = refused(tmp_path, capsys, 3, "--dataset", "mnist", "--source", str(idx_folder))
    assert f"{idx_folder / NAMES['train-labels']}: is a folder, not a file" in line


def test_a_failed_rerun_keeps_the_previous_data_set(tmp_path, idx_folder, capsys):
    assert run(tmp_path, "--dataset", "mnist", "--source", str(idx_folder)) == 0
    before = manifest(tmp_path)
    (idx_folder / NAMES["train-images"]).write_bytes(b"garbage")
    assert run(tmp_path, "--dataset", "mnist", "--source", str(idx_folder)) == 3
    assert manifest(tmp_path) == before
    assert not [p.name for p in (tmp_path / "data/runs/r1").iterdir() if p.name.startswith(".")]


def test_runs_as_a_module(tmp_path):
    cmd = [sys.executable, "-m", "mnist_ct.preprocess", "--run-id", "m1", "--data-root", str(tmp_path)]
    result = subprocess.run([*cmd, "--limit-per-class", "10"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "mnist-5k: train 80, test 20 images" in result.stderr
    assert (tmp_path / "runs/m1/dataset/manifest.json").is_file()
