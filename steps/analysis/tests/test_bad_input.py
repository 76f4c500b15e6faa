"""Bad input, as a hostile user would give it: one line naming the file, exit 2 (usage), 3 (input) or
5 (environment), and nothing half-written. Every option at and beyond its limits, every file the step
reads, every folder it writes."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from analysis_testdata import (
    last_usage_line,
    run_args,
    write_dataset_artifact,
    write_embeddings_artifact,
    write_index_artifact,
)

from mnist_ct.analysis.__main__ import main
from mnist_ct.artifacts import Producer, publish, read_manifest
from mnist_ct.artifacts.testing import tmpfs_volume


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("analysis: error: ")
    return lines[0]


def _nothing_written(paths) -> bool:
    leftovers = [p.name for p in paths.model_run.iterdir() if p.name.startswith(".analysis")]
    return not paths.analysis.exists() and not leftovers


def _republish_index(paths, labels: np.ndarray, **replace: bytes) -> None:
    """Keep index.faiss and index.json (unless replaced), write labels.npy, publish again (checksums consistent)."""
    old = paths.index
    files = {name: replace.get(name, (old / name).read_bytes()) for name in ("index.faiss", "index.json")}
    embeddings = read_manifest(paths.embeddings).digest
    with publish(old, "index", Producer("train_faiss", "0.1.0"), inputs={"embeddings": embeddings}) as staging:
        for name, data in files.items():
            (staging.path / name).write_bytes(data)
        np.save(staging.path / "labels.npy", labels)


def test_index_and_labels_of_different_sizes_exit_3(crafted, capsys, tmp_path):
    _republish_index(crafted.paths, crafted.gallery.labels[:-5])
    accuracy = tmp_path / "accuracy"

    assert main(run_args(crafted.paths, "--accuracy-out", str(accuracy))) == 3

    line = _one_error_line(capsys)
    assert "index.faiss holds 200 vectors but labels.npy has 195 labels" in line
    assert _nothing_written(crafted.paths) and not accuracy.exists()


def test_labels_out_of_range_exit_3(crafted, capsys):
    _republish_index(crafted.paths, crafted.gallery.labels + 5)

    assert main(run_args(crafted.paths)) == 3

    assert "labels must be in 0..9" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_a_missing_index_exits_3_naming_it(crafted, capsys):
    for p in sorted(crafted.paths.index.iterdir()):
        p.unlink()
    crafted.paths.index.rmdir()

    assert main(run_args(crafted.paths)) == 3

    line = _one_error_line(capsys)
    assert str(crafted.paths.index) in line and "not found" in line
    assert _nothing_written(crafted.paths)


def test_an_index_without_its_manifest_is_refused_as_incomplete(crafted, capsys):
    (crafted.paths.index / "manifest.json").unlink()

    assert main(run_args(crafted.paths)) == 3

    assert "manifest missing" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_a_changed_index_file_fails_its_checksum(crafted, capsys):
    with open(crafted.paths.index / "index.faiss", "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")

    assert main(run_args(crafted.paths)) == 3

    assert "index.faiss: sha256" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_nan_query_embeddings_exit_3(crafted, capsys):
    queries = np.array(crafted.queries.vectors)
    queries[3, 0] = np.nan
    with publish(crafted.paths.embeddings, "embeddings", Producer("embedding", "0.1.0")) as staging:
        np.save(staging.path / "train.npy", crafted.gallery.vectors)
        np.save(staging.path / "train_labels.npy", crafted.gallery.labels)
        np.save(staging.path / "test.npy", queries)
        np.save(staging.path / "test_labels.npy", crafted.queries.labels)

    assert main(run_args(crafted.paths)) == 3

    line = _one_error_line(capsys)
    assert "test.npy" in line and "NaN" in line
    assert _nothing_written(crafted.paths)


def test_unnormalised_gallery_embeddings_exit_3(crafted, capsys):
    with publish(crafted.paths.embeddings, "embeddings", Producer("embedding", "0.1.0")) as staging:
        np.save(staging.path / "train.npy", 2.0 * np.asarray(crafted.gallery.vectors))
        np.save(staging.path / "train_labels.npy", crafted.gallery.labels)
        np.save(staging.path / "test.npy", crafted.queries.vectors)
        np.save(staging.path / "test_labels.npy", crafted.queries.labels)

    assert main(run_args(crafted.paths)) == 3

    line = _one_error_line(capsys)
    assert "train.npy" in line and "not L2-normalised" in line
    assert _nothing_written(crafted.paths)


def test_embeddings_replaced_after_the_index_was_built_exit_3(crafted, capsys):
    dataset = read_manifest(crafted.paths.dataset).digest
    write_embeddings_artifact(crafted.paths, crafted.gallery, crafted.queries, {"dataset": dataset, "model": "other"})

    assert main(run_args(crafted.paths)) == 3

    assert "built from other embeddings" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_a_test_split_that_does_not_match_the_queries_exits_3(crafted, capsys):
    write_dataset_artifact(crafted.paths, np.roll(crafted.queries.labels, 1))
    # Embeddings that name no data set: the digit-for-digit check is what catches it.
    write_embeddings_artifact(crafted.paths, crafted.gallery, crafted.queries, {})
    _republish_index(crafted.paths, crafted.gallery.labels)

    assert main(run_args(crafted.paths)) == 3

    assert "does not match the test embeddings (50) digit for digit" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_embeddings_from_another_data_set_exit_3(crafted, capsys):
    write_dataset_artifact(crafted.paths, crafted.queries.labels, name="synthetic-v2")  # same digits, new manifest

    assert main(run_args(crafted.paths)) == 3

    assert "computed from another data set" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_an_index_of_another_dimension_exits_3(crafted, capsys):
    gallery = np.ascontiguousarray(crafted.gallery.vectors[:, :8])
    write_index_artifact(
        crafted.paths, gallery / np.linalg.norm(gallery, axis=1, keepdims=True), crafted.gallery.labels
    )

    assert main(run_args(crafted.paths)) == 3

    line = _one_error_line(capsys)
    index, queries = crafted.paths.index / "index.faiss", crafted.paths.embeddings / "test.npy"
    assert f"{index} has dimension 8 but {queries} has 16; they come from different models" in line
    assert _nothing_written(crafted.paths)


def test_k_larger_than_the_index_is_a_usage_error(crafted, capsys):
    assert main(run_args(crafted.paths, "--k", "201")) == 2

    line = _one_error_line(capsys)
    assert f"--k 201 is more than the 200 vectors in the index {crafted.paths.index}" in line
    assert _nothing_written(crafted.paths)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--k", "0"], "argument --k: must be from 1 to 1024, got 0"),
        (["--k", "-1"], "got -1"),
        (["--k", "1025"], "got 1025"),
        (["--k", "nan"], "argument --k: invalid"),
        (["--k", "three"], "argument --k: invalid"),
        (["--max-examples", "-1"], "argument --max-examples: must be from 0 to 10000, got -1"),
        (["--max-examples", "10001"], "got 10001"),
        (["--max-examples", "1e3"], "argument --max-examples: invalid"),
        (["--threads", "-1"], "argument --threads: must be from 0 to 1024, got -1"),
        (["--threads", "4096"], "got 4096"),
        (["--vote", "loudest"], "argument --vote: invalid choice: 'loudest'"),
        (["--run-id", "../up"], "invalid run id"),
    ],
)
def test_bad_input_options_beyond_their_limits_exit_2_before_any_work(crafted, capsys, extra, needle):
    assert main(run_args(crafted.paths, *extra)) == 2

    assert needle in last_usage_line(capsys.readouterr().err)
    assert _nothing_written(crafted.paths)


def test_bad_input_output_file_that_is_a_folder_exits_2(crafted, capsys, tmp_path):
    assert main(run_args(crafted.paths, "--accuracy-out", str(tmp_path))) == 2

    assert f"argument --accuracy-out: {tmp_path}: is a folder" in last_usage_line(capsys.readouterr().err)
    assert _nothing_written(crafted.paths)


def test_bad_input_output_file_under_a_file_exits_2(crafted, capsys, tmp_path):
    (tmp_path / "kfp").write_text("a file")
    out = tmp_path / "kfp" / "metrics.json"

    assert main(run_args(crafted.paths, "--metrics-out", str(out))) == 2

    line = last_usage_line(capsys.readouterr().err)
    assert f"argument --metrics-out: {out}: {tmp_path / 'kfp'} is a file, not a folder" in line
    assert _nothing_written(crafted.paths)


def test_bad_input_two_outputs_to_one_file_exit_2(crafted, capsys, tmp_path):
    out = str(tmp_path / "out")

    assert main(run_args(crafted.paths, "--accuracy-out", out, "--output-artifact", f"report={out}")) == 2

    assert f"--output-artifact report and --accuracy-out are both {out}" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths) and not Path(out).exists()


def test_bad_input_output_file_on_a_read_only_volume_exits_5_before_any_work(crafted, capsys, read_only_volume):
    out = read_only_volume / "kfp" / "accuracy"

    assert main(run_args(crafted.paths, "--accuracy-out", str(out))) == 5

    line = _one_error_line(capsys)
    assert f"{out}: Read-only file system; the volume is mounted read-only" in line
    assert _nothing_written(crafted.paths)


def test_bad_input_output_file_on_a_full_volume_exits_5_naming_it(crafted, capsys, full_volume):
    out = full_volume / "accuracy"

    assert main(run_args(crafted.paths, "--accuracy-out", str(out))) == 5

    assert f"{out}: No space left on device; the disk is full" in _one_error_line(capsys)
    assert not out.exists() and not [p for p in full_volume.iterdir() if p.name.startswith(".")]
    assert _nothing_written(crafted.paths)


@contextlib.contextmanager
def _run_folder_on_tmpfs(paths, size_kib: int) -> Iterator[None]:
    """The run's model folder moved onto a small tmpfs of its own, its inputs copied back (readable)."""
    saved = paths.model_run.parent / "saved"
    shutil.move(paths.model_run, saved)
    with tmpfs_volume(paths.model_run, size_kib):
        for name in ("model", "embeddings", "index"):
            shutil.copytree(saved / name, paths.model_run / name)
        yield


def test_bad_input_full_model_volume_exits_5_naming_the_file(crafted, capsys, tmp_path):
    accuracy = tmp_path / "kfp" / "outputs" / "accuracy"
    with _run_folder_on_tmpfs(crafted.paths, 96):  # the inputs (68 KiB in pages) fit; metrics and report (48) do not
        assert main(run_args(crafted.paths, "--accuracy-out", str(accuracy))) == 5

        line = _one_error_line(capsys)
        assert f"{crafted.paths.model_run}/.analysis.staging-" in line
        assert "No space left on device; the disk is full" in line
        assert _nothing_written(crafted.paths)
        assert not (tmp_path / "kfp").exists()  # staged beside its place, removed with the folders made for it


def test_bad_input_read_only_model_volume_exits_5_naming_the_folder(crafted, capsys):
    with _run_folder_on_tmpfs(crafted.paths, 1024):
        subprocess.run(["mount", "-o", "remount,ro", str(crafted.paths.model_run)], check=True)

        assert main(run_args(crafted.paths)) == 5

        line = _one_error_line(capsys)
        assert f"{crafted.paths.model_run}/.analysis." in line and "Read-only file system" in line
        assert _nothing_written(crafted.paths)


def test_bad_input_train_and_test_embeddings_of_different_dimensions_exit_3(crafted, capsys):
    with publish(crafted.paths.embeddings, "embeddings", Producer("embedding", "0.1.0")) as staging:
        gallery = np.ascontiguousarray(crafted.gallery.vectors[:, :8])
        np.save(staging.path / "train.npy", gallery / np.linalg.norm(gallery, axis=1, keepdims=True))
        np.save(staging.path / "train_labels.npy", crafted.gallery.labels)
        np.save(staging.path / "test.npy", crafted.queries.vectors)
        np.save(staging.path / "test_labels.npy", crafted.queries.labels)
    _republish_index(crafted.paths, crafted.gallery.labels)

    assert main(run_args(crafted.paths)) == 3

    assert "train and test embeddings differ in dimension (8 vs 16)" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_bad_input_index_folder_that_is_a_file_exits_3(crafted, capsys):
    shutil.rmtree(crafted.paths.index)
    crafted.paths.index.write_text("a file")

    assert main(run_args(crafted.paths)) == 3

    assert f"{crafted.paths.index}: artifact folder not found" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("index.faiss", b"hello world" * 10, "index.faiss: FAISS cannot read it"),
        ("index.faiss", b"", "index.faiss: FAISS cannot read it"),
        ("index.json", b"{not json", "index.json: not valid JSON"),
    ],
)
def test_bad_input_index_files_that_do_not_parse_exit_3(crafted, capsys, name, data, needle):
    _republish_index(crafted.paths, crafted.gallery.labels, **{name: data})

    assert main(run_args(crafted.paths)) == 3

    assert needle in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_bad_input_labels_of_the_wrong_dtype_exit_3(crafted, capsys):
    _republish_index(crafted.paths, crafted.gallery.labels.astype(np.float32))

    assert main(run_args(crafted.paths)) == 3

    line = _one_error_line(capsys)
    assert "labels.npy" in line and "float32" in line
    assert _nothing_written(crafted.paths)


def test_bad_input_missing_data_set_exits_3(crafted, capsys):
    shutil.rmtree(crafted.paths.dataset)

    assert main(run_args(crafted.paths)) == 3

    assert f"{crafted.paths.dataset}: artifact folder not found" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_bad_input_run_folder_that_is_a_symlink_out_of_the_volume_exits_3(crafted, capsys, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.move(crafted.paths.model_run, outside)
    crafted.paths.model_run.symlink_to(outside)

    assert main(run_args(crafted.paths)) == 3

    assert "leads out of its volume" in _one_error_line(capsys)
    assert not (outside / "analysis").exists()


def test_a_rerun_replaces_the_analysis(crafted):
    assert main(run_args(crafted.paths, "--k", "1")) == 0
    assert main(run_args(crafted.paths, "--k", "3")) == 0
    assert json.loads((crafted.paths.analysis / "metrics.json").read_text())["k"] == 3
    assert not [p for p in crafted.paths.model_run.iterdir() if p.name.startswith(".analysis")]
