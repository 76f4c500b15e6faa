"""Bad input, as a hostile user would give it: exit 2 (usage), 3 (input) or 5 (environment), one line, nothing left.

Every option at and beyond its limits, every file the step reads, every folder it writes.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faiss_testdata import clustered, last_usage_line, one_error_line, random_unit, run_args

from mnist_ct.artifacts import Embeddings, RunPaths
from mnist_ct.artifacts.testing import tmpfs_volume
from mnist_ct.train_faiss import factory
from mnist_ct.train_faiss.__main__ import main
from mnist_ct.train_faiss.step import write_file


def _nothing_published(paths: RunPaths) -> bool:
    """No index folder and no hidden staging of one."""
    run = paths.model_run
    return not paths.index.exists() and not (run.exists() and [p for p in run.iterdir() if p.name.startswith(".")])


def _small_run(write_run) -> RunPaths:
    return write_run(clustered(30, 16, seed=1), clustered(4, 16, seed=2))


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        ("HNSW0", "HNSW's M (links per node) must be from 2 to 256, got 0"),
        ("IVF0,Flat", "IVF's n (lists) must be from 1 to 65536, got 0"),
        ("PQ0", "PQ's m (sub-quantizers) must be from 1 to 256, got 0"),
        ("Flat,Flat", "'Flat,Flat' is not a factory string train_faiss supports"),
        ("", "'' is not a factory string"),
        ("NoSuchIndex", "'NoSuchIndex' is not a factory string"),
        ("IDMap,Flat", "'IDMap,Flat' is not a factory string"),
    ],
)
def test_bad_input_index_string_is_refused_before_anything_is_read(tmp_path, capsys, index, needle):
    model_root = tmp_path / "model"  # does not exist: nothing may be read or created

    assert main(["--run-id", "t1", "--model-root", str(model_root), "--index", index]) == 2

    line = last_usage_line(capsys.readouterr().err)
    assert "argument --index" in line and needle in line
    assert not model_root.exists()


def test_bad_input_index_string_that_crashes_faiss_is_a_usage_line_not_an_abort(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(factory, "HNSW_M", (0, 256))  # as if the grammar let HNSW0 through: the probe catches it
    model_root = tmp_path / "model"

    assert main(["--run-id", "t1", "--model-root", str(model_root), "--index", "HNSW0"]) == 2

    line = one_error_line(capsys.readouterr().err)
    assert "--index HNSW0: FAISS crashes (SIGABRT) building it, even on 256 tiny vectors" in line
    assert not model_root.exists()


@pytest.mark.parametrize(
    ("index", "needle"),
    [
        (
            "IVF64,PQ7",
            "--index IVF64,PQ7: PQ with 7 sub-quantizers needs an embedding dimension divisible by 7, "
            "and the embeddings have 16; choose m among [1, 2, 4, 8, 16]",
        ),
        ("IVF1000,Flat", "--index IVF1000,Flat cannot be trained on a gallery of 300 vectors (1000 IVF lists"),
        ("PQ4", "--index PQ4 cannot be trained on a gallery of 250 vectors (PQ needs at least 256"),
    ],
)
def test_bad_input_index_that_does_not_fit_the_embeddings_exits_2_before_training(write_run, capsys, index, needle):
    gallery = clustered(30 if index != "PQ4" else 25, 16, seed=1)  # 300 (250 for PQ4) vectors of dimension 16
    paths = write_run(gallery, clustered(4, 16, seed=2))

    assert main(run_args(paths, "--index", index)) == 2

    assert needle in one_error_line(capsys.readouterr().err)
    assert _nothing_published(paths)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--nprobe", "0"], "argument --nprobe: must be from 1 to 65536, got 0"),
        (["--nprobe", "-3"], "must be from 1 to 65536, got -3"),
        (["--nprobe", "65537"], "got 65537"),
        (["--nprobe", "nan"], "invalid"),
        (["--nprobe", "2.5"], "invalid"),
        (["--ef-search", "0"], "argument --ef-search: must be from 1 to 4096, got 0"),
        (["--ef-search", "4097"], "got 4097"),
        (["--ef-search", "many"], "invalid"),
        (["--threads", "-1"], "argument --threads: must be from 0 to 1024, got -1"),
        (["--threads", "1025"], "got 1025"),
        (["--threads", "inf"], "invalid"),
        (["--run-id", "../escape"], "invalid run id '../escape'"),
        (["--run-id", "ok\n"], "invalid run id"),
    ],
)
def test_bad_input_numbers_and_names_beyond_their_limits_exit_2(tmp_path, capsys, extra, needle):
    model_root = tmp_path / "model"

    assert main(["--run-id", "t1", "--model-root", str(model_root), "--index", "IVF8,Flat", *extra]) == 2

    assert needle in last_usage_line(capsys.readouterr().err)
    assert not model_root.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--index", "Flat", "--nprobe", "4"], "--nprobe applies to IVF indexes only; --index Flat has no inverted"),
        (["--index", "HNSW8", "--nprobe", "4"], "--nprobe applies to IVF indexes only"),
        (["--index", "IVF8,Flat", "--nprobe", "9"], "--nprobe 9: --index IVF8,Flat has 8 lists; give 1..8"),
        (["--index", "IVF8,Flat", "--ef-search", "4"], "--ef-search applies to HNSW indexes only"),
        (["--index", "Flat", "--ef-search", "4"], "--ef-search applies to HNSW indexes only; --index Flat"),
    ],
)
def test_bad_input_search_parameter_of_another_index_type_exits_2_before_reading(tmp_path, capsys, extra, needle):
    model_root = tmp_path / "model"

    assert main(["--run-id", "t1", "--model-root", str(model_root), *extra]) == 2

    assert needle in one_error_line(capsys.readouterr().err)
    assert not model_root.exists()


def test_bad_input_model_root_that_is_a_file_exits_2(tmp_path, capsys):
    root = tmp_path / "model"
    root.write_text("not a folder")

    assert main(["--run-id", "t1", "--model-root", str(root)]) == 2

    assert f"{root}: is a file, not a folder" in last_usage_line(capsys.readouterr().err)


def test_missing_embeddings_exit_3_naming_the_folder(paths, capsys):
    assert main(run_args(paths)) == 3

    line = one_error_line(capsys.readouterr().err)
    assert str(paths.embeddings) in line and "not found" in line
    assert not paths.index.exists()


def test_bad_input_embeddings_folder_that_is_a_file_exits_3(paths, capsys):
    paths.embeddings.parent.mkdir(parents=True)
    paths.embeddings.write_text("a file")

    assert main(run_args(paths)) == 3

    assert f"{paths.embeddings}: artifact folder not found" in one_error_line(capsys.readouterr().err)
    assert _nothing_published(paths)


def test_bad_input_truncated_embeddings_file_exits_3(write_run, capsys):
    paths = _small_run(write_run)
    train = paths.embeddings / "train.npy"
    train.write_bytes(train.read_bytes()[:-100])

    assert main(run_args(paths)) == 3

    line = one_error_line(capsys.readouterr().err)
    assert str(train) in line and "the file was changed or truncated" in line
    assert _nothing_published(paths)


def test_bad_input_manifest_that_is_not_json_exits_3(write_run, capsys):
    paths = _small_run(write_run)
    (paths.embeddings / "manifest.json").write_text("{not json")

    assert main(run_args(paths)) == 3

    assert "manifest.json: not a valid manifest" in one_error_line(capsys.readouterr().err)
    assert _nothing_published(paths)


@pytest.mark.parametrize(
    ("train", "needle"),
    [
        (random_unit(50, 8, seed=1).astype(np.float64), "embeddings must be float32 [N,D], got float64 [50, 8]"),
        (random_unit(50, 8, seed=1)[:, 0].copy(), "embeddings must be float32 [N,D], got float32 [50]"),
    ],
)
def test_bad_input_embeddings_of_the_wrong_dtype_or_shape_exit_3(write_raw_embeddings, capsys, train, needle):
    paths = write_raw_embeddings(train, random_unit(10, 8, seed=2))

    assert main(run_args(paths)) == 3

    line = one_error_line(capsys.readouterr().err)
    assert "train.npy" in line and needle in line
    assert _nothing_published(paths)


def test_bad_input_embeddings_without_a_test_split_exit_3(write_raw_embeddings, capsys):
    paths = write_raw_embeddings(random_unit(50, 8, seed=1), None)

    assert main(run_args(paths)) == 3

    assert "no 'test' split (has ['train']); rerun the embedding step" in one_error_line(capsys.readouterr().err)
    assert _nothing_published(paths)


def test_bad_input_train_and_test_of_different_dimensions_exit_3(write_raw_embeddings, capsys):
    paths = write_raw_embeddings(random_unit(50, 8, seed=1), random_unit(10, 16, seed=2))

    assert main(run_args(paths)) == 3

    assert "train and test embeddings differ in dimension (8 vs 16)" in one_error_line(capsys.readouterr().err)
    assert _nothing_published(paths)


def test_bad_input_run_folder_that_is_a_symlink_out_of_the_volume_exits_3(write_run, tmp_path, capsys):
    paths = _small_run(write_run)
    outside = tmp_path / "elsewhere"
    shutil.move(paths.model_run, outside)
    paths.model_run.symlink_to(outside)

    assert main(run_args(paths)) == 3

    line = one_error_line(capsys.readouterr().err)
    assert "leads out of its volume" in line and str(paths.model_root) in line
    assert not (outside / "index").exists()


@contextlib.contextmanager
def _run_folder_on_tmpfs(paths: RunPaths, size_kib: int) -> Iterator[None]:
    """The run folder moved onto a small tmpfs of its own, its embeddings copied back (readable)."""
    saved = paths.model_run.parent / "saved"
    shutil.move(paths.model_run, saved)
    with tmpfs_volume(paths.model_run, size_kib):
        shutil.copytree(saved / "embeddings", paths.model_run / "embeddings")
        yield


def test_bad_input_full_disk_exits_5_naming_the_index_file(write_run, capsys):
    gallery = Embeddings(random_unit(2000, 16, seed=3), np.arange(2000, dtype=np.int64) % 10)
    paths = write_run(gallery, Embeddings(random_unit(100, 16, seed=4), np.arange(100, dtype=np.int64) % 10))
    with _run_folder_on_tmpfs(paths, 200):  # the embeddings (160 KiB) fit; the 128 KiB index does not
        assert main(run_args(paths)) == 5

        line = one_error_line(capsys.readouterr().err)
        assert f"{paths.model_run}/.index.staging-" in line
        assert "/index.faiss: No space left on device; the disk is full" in line
        assert _nothing_published(paths)


def test_bad_input_read_only_model_volume_exits_5_naming_the_folder(write_run, capsys):
    paths = _small_run(write_run)
    with _run_folder_on_tmpfs(paths, 1024):
        subprocess.run(["mount", "-o", "remount,ro", str(paths.model_run)], check=True)

        assert main(run_args(paths)) == 5

        line = one_error_line(capsys.readouterr().err)
        assert f"{paths.model_run}/.index." in line  # the first thing publish() creates there
        assert "Read-only file system; the volume is mounted read-only" in line
        assert _nothing_published(paths)


def test_bad_input_index_file_that_cannot_be_opened_names_its_path(tmp_path):
    missing = tmp_path / "no" / "index.faiss"
    with pytest.raises(FileNotFoundError) as raised:
        write_file(missing, b"x")
    assert raised.value.filename == str(missing)


def test_nothing_is_created_when_the_options_are_bad(tmp_path: Path, capsys):
    root = tmp_path / "model"

    assert main(["--run-id", "t1", "--model-root", str(root), "--index", "HNSW8", "--nprobe", "2"]) == 2

    assert not root.exists()
