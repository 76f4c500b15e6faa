"""deploy's lineage and typed KFP artifact: the images and data that made each live version, in the log, the
history command and the `model` artifact (system.Model) written by the step itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixture_run import FixtureRun, cli_roots

from mnist_ct.artifacts import IMAGES_ENV, VERSIONS_ENV, Producer, publish, read_manifest, read_verified, sha256_file
from mnist_ct.artifacts.testing import assert_readme_documents, executor_input, read_executor_output
from mnist_ct.deploy.__main__ import build_history_parser, main
from mnist_ct.deploy.event_log import read_events
from mnist_ct.deploy.step import ARTIFACTS

README = Path(__file__).parents[1] / "README.md"
STEPS = ("preprocess", "validate", "train_model", "embedding", "train_faiss", "analysis", "deploy")
IMAGES = {step: f"127.0.0.1:5000/mnist-ct-{step}@sha256:{n:064x}" for n, step in enumerate(STEPS, 1)}
VERSIONS = {step: f"0.{n}.0" for n, step in enumerate(STEPS, 1)}


def kfp_args(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    output_file, artifact = tmp_path / "kfp" / "output_metadata.json", tmp_path / "kfp" / "model" / "data"
    return (
        output_file,
        artifact,
        [
            "--executor-input",
            executor_input(output_file, ARTIFACTS, "deploy"),
            "--output-artifact",
            f"model={artifact}",
        ],
    )


def history(capsys, deploy_root: Path, *extra: str) -> list[str]:
    capsys.readouterr()
    assert main(["history", "--deploy-root", str(deploy_root), *extra]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_model_artifact_is_the_deployment_record_with_archive_lineage_and_images(
    runs: dict[str, FixtureRun], deploy_root, tmp_path, monkeypatch
):
    monkeypatch.setenv(IMAGES_ENV, json.dumps(IMAGES))
    monkeypatch.setenv(VERSIONS_ENV, json.dumps(VERSIONS))
    output_file, artifact, kfp = kfp_args(tmp_path)

    assert main([*cli_roots(runs["good"], deploy_root), *kfp]) == 0

    assert artifact.read_bytes() == (deploy_root / "history/good/deployment.json").read_bytes()
    archive = deploy_root / "history/good/mnist.mar"
    dataset_sha256 = read_manifest(runs["good"].paths.dataset).digest
    assert read_executor_output(output_file) == {
        "model": {
            "model_name": "mnist",
            "version": "good",
            "accuracy": pytest.approx(runs["good"].accuracy),
            "archive_sha256": sha256_file(archive),
            "uri": archive.absolute().as_uri(),
            "live": True,
            "images": IMAGES,  # the fixture's analysis recorded none: deploy's own MNIST_CT_IMAGES
            "versions": VERSIONS,  # likewise: deploy's own MNIST_CT_STEP_VERSIONS
            "data_version": None,
            "dataset_sha256": dataset_sha256,
            "step": "deploy",
            "step_version": Producer.of("deploy").version,
            "image": IMAGES["deploy"],
            "run_id": "good",
        }
    }
    assert sha256_file(deploy_root / "model-store/mnist.mar") == sha256_file(archive)
    event = read_events(deploy_root)[-1]
    assert (event["images"], event["versions"], event["dataset_sha256"]) == (IMAGES, VERSIONS, dataset_sha256)
    assert json.loads(artifact.read_text())["images"] == IMAGES
    assert json.loads(artifact.read_text())["versions"] == VERSIONS


def test_the_images_analysis_recorded_are_the_ones_deployed_even_by_hand(
    runs: dict[str, FixtureRun], deploy_root, tmp_path, capsys, monkeypatch
):
    """The run that made the model knew its images and step versions; a deploy run by hand later (no
    MNIST_CT_IMAGES, no MNIST_CT_STEP_VERSIONS) keeps them."""
    monkeypatch.delenv(IMAGES_ENV, raising=False)
    monkeypatch.delenv(VERSIONS_ENV, raising=False)
    model_root = tmp_path / "model"
    shutil.copytree(runs["good"].paths.model_root, model_root)
    analysis = model_root / "runs/good/analysis"
    recorded = read_verified(analysis)
    metrics = (analysis / "metrics.json").read_bytes()
    with publish(analysis, "analysis", Producer("analysis", "0.3.0"), recorded.inputs) as staging:
        (staging.path / "metrics.json").write_bytes(metrics)
        staging.meta.update(images=IMAGES, versions=VERSIONS, data_version="d" * 64)

    assert main([*cli_roots(runs["good"], deploy_root), "--model-root", str(model_root)]) == 0

    event = read_events(deploy_root)[-1]
    assert event["images"] == IMAGES and event["versions"] == VERSIONS and event["data_version"] == "d" * 64
    assert json.loads((deploy_root / "history/good/deployment.json").read_text())["versions"] == VERSIONS
    lines = history(capsys, deploy_root)
    assert lines[0].endswith("deploy  mnist version good  accuracy " + f"{runs['good'].accuracy:.4f}  (previous: none)")
    assert lines[1] == f"    data: version {'d' * 64}, data set manifest sha256 {event['dataset_sha256']}"
    assert lines[2] == "    versions: " + ", ".join(f"{step} {v}" for step, v in sorted(VERSIONS.items()))
    assert lines[3:] == [f"    image {step}: {image}" for step, image in sorted(IMAGES.items())]  # as logged


def test_history_shows_every_event_and_not_given_for_a_run_by_hand(
    runs: dict[str, FixtureRun], deploy_root, capsys, monkeypatch
):
    monkeypatch.delenv(IMAGES_ENV, raising=False)
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert main(cli_roots(runs["worse"], deploy_root)) == 4  # refused: logged, not live

    lines = history(capsys, deploy_root)

    assert " deploy  mnist version good " in lines[0]
    assert lines[2] == "    images: not given (the run was not started from a compiled pipeline)"
    assert " refused  mnist version worse " in lines[3] and len(lines) == 5
    assert lines[
        4
    ] == f"    reason: run worse has accuracy {runs['worse'].accuracy:.4f}, below the live version good " + (
        f"({runs['good'].accuracy:.4f})"
    )
    as_json = [json.loads(line) for line in history(capsys, deploy_root, "--json", "--model-name", "mnist")]
    assert as_json == read_events(deploy_root)
    assert history(capsys, deploy_root, "--model-name", "other") == []


def test_rollback_logs_and_writes_the_lineage_of_the_version_it_makes_live(
    runs: dict[str, FixtureRun], deploy_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(IMAGES_ENV, json.dumps(IMAGES))
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    monkeypatch.setenv(IMAGES_ENV, json.dumps({"deploy": "localhost/mnist-ct-deploy:dev"}))
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    output_file, artifact, kfp = kfp_args(tmp_path)

    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet", *kfp]) == 0

    assert read_events(deploy_root)[-1]["images"] == IMAGES
    assert artifact.read_bytes() == (deploy_root / "history/worse/deployment.json").read_bytes()
    metadata = read_executor_output(output_file)["model"]
    assert metadata["version"] == "worse" and metadata["images"] == IMAGES and metadata["live"] is True
    assert metadata["image"] == "localhost/mnist-ct-deploy:dev"  # the image of the step that wrote it
    assert "(from good)" in history(capsys, deploy_root)[-len(IMAGES) - 2]


def test_a_refused_deploy_writes_no_artifact_file_and_no_executor_output(
    runs: dict[str, FixtureRun], deploy_root, tmp_path
):
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    output_file, artifact, kfp = kfp_args(tmp_path)

    assert main([*cli_roots(runs["worse"], deploy_root), *kfp]) == 4

    assert not (tmp_path / "kfp").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--output-artifact", "archive=/tmp/a"], "this step has no output artifact 'archive' (it writes model"),
        (["--output-artifact", "model=/"], "argument --output-artifact: model /: is a folder"),
        (
            ["--executor-input", '{"outputs": {"artifacts": {}}}'],
            "argument --executor-input: has no outputs.outputFile",
        ),
    ],
)
def test_bad_input_kfp_options_exit_2_and_leave_the_deploy_root_untouched(
    runs: dict[str, FixtureRun], deploy_root, capsys, extra, needle
):
    assert main([*cli_roots(runs["good"], deploy_root), *extra]) == 2

    assert needle in capsys.readouterr().err.strip().splitlines()[-1]
    assert not deploy_root.exists()


def test_bad_input_malformed_images_variable_exits_2_and_leaves_the_deploy_root_untouched(
    runs: dict[str, FixtureRun], deploy_root, capsys, monkeypatch
):
    monkeypatch.setenv(IMAGES_ENV, '{"deploy": null}')

    assert main(cli_roots(runs["good"], deploy_root)) == 2

    assert capsys.readouterr().err.startswith(f"deploy: error: environment variable {IMAGES_ENV}: step 'deploy'")
    assert not deploy_root.exists()


def test_bad_input_malformed_step_versions_variable_exits_2_and_leaves_the_deploy_root_untouched(
    runs: dict[str, FixtureRun], deploy_root, capsys, monkeypatch
):
    monkeypatch.setenv(VERSIONS_ENV, "[1, 2]")

    assert main(cli_roots(runs["good"], deploy_root)) == 2

    assert capsys.readouterr().err.startswith(f"deploy: error: environment variable {VERSIONS_ENV}")
    assert not deploy_root.exists()


def test_history_of_an_empty_deploy_root_says_so(tmp_path, capsys):
    assert main(["history", "--deploy-root", str(tmp_path)]) == 0

    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"no deployments logged in {tmp_path / 'deployments.jsonl'}\n"


def test_readme_history_options_section_lists_every_history_option():
    assert_readme_documents(build_history_parser(), README, "History options")
