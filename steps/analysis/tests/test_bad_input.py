"""Bad input: one line naming the file, exit 3 (2 for usage), and nothing half-written."""

from __future__ import annotations

import json

import numpy as np
from analysis_testdata import run_args, write_dataset_artifact, write_embeddings_artifact, write_index_artifact

from mnist_ct.analysis.__main__ import main
from mnist_ct.artifacts import Producer, publish, read_manifest


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("analysis: error: ")
    return lines[0]


def _nothing_written(paths) -> bool:
    leftovers = [p.name for p in paths.model_run.iterdir() if p.name.startswith(".analysis")]
    return not paths.analysis.exists() and not leftovers


def _republish_index(paths, labels: np.ndarray) -> None:
    """Keep index.faiss and index.json, replace labels.npy, publish again (checksums consistent)."""
    old = paths.index
    files = {name: (old / name).read_bytes() for name in ("index.faiss", "index.json")}
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

    assert "index dimension 8 but the query embeddings have 16" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_k_larger_than_the_index_is_a_usage_error(crafted, capsys):
    assert main(run_args(crafted.paths, "--k", "201")) == 2

    assert "--k 201 is more than the 200 vectors" in _one_error_line(capsys)
    assert _nothing_written(crafted.paths)


def test_an_unknown_vote_is_refused_by_argparse(crafted, capsys):
    try:
        main(run_args(crafted.paths, "--vote", "loudest"))
    except SystemExit as e:
        assert e.code == 2
    assert "invalid choice: 'loudest'" in capsys.readouterr().err


def test_a_rerun_replaces_the_analysis(crafted):
    assert main(run_args(crafted.paths, "--k", "1")) == 0
    assert main(run_args(crafted.paths, "--k", "3")) == 0
    assert json.loads((crafted.paths.analysis / "metrics.json").read_text())["k"] == 3
    assert not [p for p in crafted.paths.model_run.iterdir() if p.name.startswith(".analysis")]
