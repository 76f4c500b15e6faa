"""preprocess's typed KFP artifact: the data set (system.Dataset) and its metadata, written by the step itself."""

from __future__ import annotations

import json

from step_runs import manifest, refused, run

from mnist_ct.artifacts import IMAGES_ENV, Producer, read_manifest
from mnist_ct.artifacts.testing import executor_input, read_executor_output
from mnist_ct.preprocess.step import ARTIFACTS

IMAGE = "127.0.0.1:5000/mnist-ct-preprocess@sha256:" + "1" * 64


def test_the_dataset_artifact_is_the_manifest_with_uri_sha256_counts_and_data_version(tmp_path, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, json.dumps({"preprocess": IMAGE, "validate": "localhost/v:1"}))
    output_file, artifact = tmp_path / "kfp" / "output_metadata.json", tmp_path / "kfp" / "dataset" / "data"
    kfp = ["--executor-input", executor_input(output_file, ARTIFACTS), "--output-artifact", f"dataset={artifact}"]

    assert run(tmp_path, "--limit-per-class", "20", *kfp) == 0

    folder = tmp_path / "data/runs/r1/dataset"
    assert artifact.read_bytes() == (folder / "manifest.json").read_bytes()
    published = read_manifest(folder)
    assert read_executor_output(output_file) == {
        "dataset": {
            "uri": folder.absolute().as_uri(),
            "sha256": published.digest,
            "counts": {"train": 160, "test": 40},
            "data_version": published.meta["data_version"],
            "dataset": "mnist-5k",
            "batches": 0,
            "proceed": True,
            "step": "preprocess",
            "step_version": Producer.of("preprocess").version,
            "image": IMAGE,
            "run_id": "r1",
        }
    }


def test_data_version_follows_what_went_in_not_when_or_where(tmp_path):
    versions = []
    for seed in ("0", "0", "1"):
        assert run(tmp_path, "--seed", seed, "--limit-per-class", "10") == 0
        versions.append(manifest(tmp_path)["meta"]["data_version"])
    assert run(tmp_path, "--limit-per-class", "11") == 0
    versions.append(manifest(tmp_path)["meta"]["data_version"])

    assert versions[0] == versions[1] and len(set(versions)) == 3 and len(versions[0]) == 64


def test_bad_input_unknown_artifact_name_exits_2_before_any_work(tmp_path, capsys):
    line = refused(tmp_path, capsys, 2, "--output-artifact", f"model={tmp_path / 'm'}")

    assert "argument --output-artifact: " in line and "this step has no output artifact 'model'" in line
    assert "(it writes dataset (system.Dataset))" in line


def test_bad_input_artifact_path_that_is_a_folder_exits_2(tmp_path, capsys):
    line = refused(tmp_path, capsys, 2, "--output-artifact", f"dataset={tmp_path}")

    assert f"argument --output-artifact: dataset {tmp_path}: is a folder" in line


def test_bad_input_executor_input_without_output_file_exits_2(tmp_path, capsys):
    line = refused(tmp_path, capsys, 2, "--executor-input", '{"outputs": {"artifacts": {}}}')

    assert "argument --executor-input: has no outputs.outputFile; pass KFP's executor input placeholder" in line


def test_bad_input_malformed_images_variable_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, '{"preprocess": ["a"]}')

    line = refused(tmp_path, capsys, 2)

    assert line.startswith(f"preprocess: error: environment variable {IMAGES_ENV}: step 'preprocess' has image")


def test_a_failing_preprocess_leaves_no_artifact_file_and_no_executor_output(tmp_path, capsys, tmpfs):
    data_root = tmpfs(tmp_path / "small", "200k")  # mnist-5k's 3.9 MB of splits do not fit
    output_file, artifact = tmp_path / "kfp" / "output_metadata.json", tmp_path / "kfp" / "dataset"
    kfp = ["--executor-input", executor_input(output_file, ARTIFACTS), "--output-artifact", f"dataset={artifact}"]

    line = refused(tmp_path, capsys, 5, *kfp, data_root=data_root)

    assert "No space left on device" in line
    assert not (tmp_path / "kfp").exists()
