"""train_model's typed KFP artifact: the model (system.Model) and its metadata, written by the step itself."""

from __future__ import annotations

import json

import pytest
from conftest import SMALL

from mnist_ct.artifacts import IMAGES_ENV, Producer, RunPaths, read_manifest
from mnist_ct.artifacts.testing import executor_input, read_executor_output, run_args
from mnist_ct.train_model.__main__ import main
from mnist_ct.train_model.step import ARTIFACTS

IMAGE = "127.0.0.1:5000/mnist-ct-train-model@sha256:" + "2" * 64


def test_the_model_artifact_is_model_json_with_framework_dims_epochs_metrics_and_weights_sha256(
    published_run: RunPaths, tmp_path, monkeypatch
):
    monkeypatch.setenv(IMAGES_ENV, json.dumps({"train_model": IMAGE}))
    output_file, artifact = tmp_path / "kfp" / "output_metadata.json", tmp_path / "kfp" / "model" / "data"
    kfp = ["--executor-input", executor_input(output_file, ARTIFACTS), "--output-artifact", f"model={artifact}"]

    assert main([*run_args(published_run), *SMALL, *kfp]) == 0

    assert artifact.read_bytes() == (published_run.model / "model.json").read_bytes()
    card = json.loads(artifact.read_text())
    manifest = read_manifest(published_run.model)
    metadata = read_executor_output(output_file)["model"]
    assert metadata == {
        "framework": "pytorch",
        "format": "torchscript",
        "embedding_dim": 16,
        "epochs": 1,
        "best_epoch": 1,
        **{key: pytest.approx(card["best"][key]) for key in ("loss", "train_accuracy", "val_accuracy")},
        "val_nn1_accuracy": pytest.approx(card["best"]["val_nn1_accuracy"]),
        "sha256": manifest.files["model.pt"].sha256,
        "uri": published_run.model.absolute().as_uri(),
        "dataset_sha256": read_manifest(published_run.dataset).digest,
        "step": "train_model",
        "step_version": Producer.of("train_model").version,
        "image": IMAGE,
        "run_id": published_run.run_id,
    }


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--output-artifact", "dataset=/tmp/d"], "this step has no output artifact 'dataset'"),
        (["--output-artifact", "model=/"], "argument --output-artifact: model /: is a folder"),
        (
            ["--executor-input", '{"outputs": {"artifacts": {}}}'],
            "argument --executor-input: has no outputs.outputFile",
        ),
    ],
)
def test_bad_input_kfp_options_exit_2_before_training(published_run: RunPaths, capsys, extra, needle):
    assert main([*run_args(published_run), *SMALL, *extra]) == 2

    assert needle in capsys.readouterr().err.strip().splitlines()[-1]
    assert not published_run.model.exists() and not published_run.checkpoints.exists()


def test_bad_input_malformed_images_variable_exits_2_before_training(published_run: RunPaths, capsys, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, "{")

    assert main([*run_args(published_run), *SMALL]) == 2

    assert capsys.readouterr().err.startswith(f"train_model: error: environment variable {IMAGES_ENV} is not JSON")
    assert not published_run.model.exists() and not published_run.checkpoints.exists()


def test_a_failing_training_leaves_no_artifact_file_and_no_executor_output(published_run: RunPaths, tmp_path):
    (published_run.dataset / "train" / "labels.npy").write_bytes(b"changed")  # its checksum no longer holds
    output_file, artifact = tmp_path / "kfp" / "output_metadata.json", tmp_path / "kfp" / "model"
    kfp = ["--executor-input", executor_input(output_file, ARTIFACTS), "--output-artifact", f"model={artifact}"]

    assert main([*run_args(published_run), *SMALL, *kfp]) == 3

    assert not (tmp_path / "kfp").exists() and not published_run.model.exists()
