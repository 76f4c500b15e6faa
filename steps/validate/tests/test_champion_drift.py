"""Drift against the champion: the model live on the deploy volume names the data set it was trained on, and
validate judges this run's data set against it (pixel mean/std per split, the train split's labels)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from step_runs import failed, refused, report, run

from mnist_ct.artifacts import (
    MANIFEST,
    Manifest,
    Producer,
    RunPaths,
    Split,
    find_champion,
    pixel_stats,
    publish,
    read_manifest,
    write_dataset,
)
from mnist_ct.artifacts.testing import publish_deployment, take
from mnist_ct.validate.__main__ import main

PREPROCESS = Producer("preprocess", "0.3.0")
SKIP_REASON = "skipped: no champion on the deploy volume"


@pytest.fixture
def volumes(tmp_path: Path) -> tuple[Path, Path]:
    """The data volume and the deploy volume (empty: nothing is live yet)."""
    data, deploy = tmp_path / "data", tmp_path / "deploy"
    data.mkdir()
    deploy.mkdir()
    return data, deploy


def per_class(digits: Split, counts: list[int], skip: int) -> Split:
    """Real digits, counts[c] of class c, after skipping the first `skip` of each class."""
    idx = np.concatenate([np.flatnonzero(digits.labels == c)[skip : skip + n] for c, n in enumerate(counts)])
    return Split(digits.images[idx], digits.labels[idx])


def publish_data_set(folder: Path, train: Split, test: Split) -> Manifest:
    """A data set as preprocess publishes it: the splits, their class counts and pixel statistics."""
    splits = {"train": train, "test": test}
    meta = {"dataset": "mnist-5k", "pixel_stats": {name: pixel_stats(s.images) for name, s in splits.items()}}
    return write_dataset(folder, splits, PREPROCESS, meta)


def this_run(data_root: Path, digits: Split, train_counts: list[int] | None = None) -> Path:
    """Run r1's data set: digits the champion never saw (train 30 a class unless told, test 10)."""
    train = per_class(digits, train_counts or [30] * 10, skip=40)
    publish_data_set(RunPaths("r1", data_root).dataset, train, take(digits, 10, skip=70))
    return RunPaths("r1", data_root).dataset


def make_champion(
    data_root: Path,
    deploy_root: Path,
    digits: Split,
    version: str = "v1",
    model_name: str = "mnist",
    train_counts: list[int] | None = None,
) -> Path:
    """Version `version` trained on its own data set (train 30 a class unless told, test 10), deployed and live,
    laid out as deploy leaves it: history/<version>/ (kind "deployment": <model>.mar and deployment.json) and
    model-store/<model>.mar, a byte-equal copy. Returns the champion's data set folder."""
    train = per_class(digits, train_counts or [30] * 10, skip=0)
    dataset = RunPaths(version, data_root).dataset
    manifest = publish_data_set(dataset, train, take(digits, 10, skip=30))
    record = {
        "model_name": model_name,
        "version": version,
        "run_id": version,
        "dataset_sha256": manifest.digest,
        "data_version": "d-" + version,
        "accuracy": 0.9,
        "serving": {"k": 1, "vote": "majority"},
    }
    publish_deployment(deploy_root, record, model_name=model_name)
    champion = find_champion(deploy_root, model_name)
    assert champion is not None and champion.version == version  # the layout find_champion reads
    return dataset


def checks_named(data_root: Path, name: str) -> dict[str, dict]:
    return {c["scope"]: c for c in report(data_root)["checks"] if c["check"] == name}


def test_no_champion_skips_the_drift_checks_saying_why(volumes, digits):
    data, deploy = volumes
    this_run(data, digits)
    assert run(data, "--deploy-root", str(deploy)) == 0
    r = report(data)
    skipped = [c for c in r["checks"] if c["status"] == "skip"]
    labels = [(c["check"], c["scope"]) for c in skipped]
    assert labels == [("drift", "train"), ("drift", "test"), ("label_shift", "train")]
    assert all(c["message"] == SKIP_REASON for c in skipped)
    assert r["reference"] == {
        "source": None,
        "manifest": None,
        "manifest_sha256": None,
        "champion": None,
        "reason": "no champion on the deploy volume",
    }
    assert r["reference_manifest"] is None and r["thresholds"]["max_label_shift"] == 0.1


def test_the_same_distribution_as_the_champion_passes(volumes, digits):
    data, deploy = volumes
    champion_data = make_champion(data, deploy, digits)
    dataset = this_run(data, digits)
    assert run(data, "--deploy-root", str(deploy)) == 0
    r = report(data)
    assert r["summary"]["fail"] == 0 and r["summary"]["skip"] == 0
    shift = checks_named(data, "label_shift")
    assert list(shift) == ["train"] and shift["train"]["status"] == "pass"
    assert shift["train"]["value"]["distance"] == 0.0 and shift["train"]["threshold"] == 0.1
    assert shift["train"]["value"]["reference"] == {str(c): 0.1 for c in range(10)}
    drift = checks_named(data, "drift")
    assert sorted(drift) == ["test", "train"] and {c["status"] for c in drift.values()} == {"pass"}
    digest = read_manifest(champion_data).digest
    assert r["reference"]["source"] == "champion"
    assert r["reference"]["manifest"] == r["reference_manifest"] == str(champion_data / MANIFEST)
    assert r["reference"]["manifest_sha256"] == digest
    assert r["reference"]["champion"]["version"] == "v1" and r["reference"]["champion"]["model_name"] == "mnist"
    validation = read_manifest(data / "runs/r1/validation", "validation")
    assert validation.inputs == {"dataset": read_manifest(dataset).digest, "reference": digest}
    assert validation.meta["reference"]["champion"]["version"] == "v1"


def test_a_label_shift_above_the_threshold_fails(volumes, digits, capsys):
    data, deploy = volumes
    make_champion(data, deploy, digits)
    # classes 0-4: 30 each, 5-9: 18 each: 12.5% and 7.5% against the champion's 10%, distance 0.125
    this_run(data, digits, [30] * 5 + [18] * 5)
    [line] = failed(data, capsys, "--deploy-root", str(deploy))
    where = data / "runs/r1/dataset/train/labels.npy"
    assert line == (
        f"validate: check failed: label_shift[train]: {where}: label distribution 0.1250 from the champion's "
        "training data (mnist version v1), by total variation distance; largest differences, this run vs the "
        "reference: class 0 12.5% vs 10.0%, class 1 12.5% vs 10.0%, class 2 12.5% vs 10.0%; shift above 0.1"
    )
    shift = checks_named(data, "label_shift")["train"]
    assert shift["value"]["distance"] == 0.125 and shift["value"]["current"]["9"] == 0.075
    # The threshold is an option: the same data set passes at 0.13.
    assert run(data, "--deploy-root", str(deploy), "--max-label-shift", "0.13") == 0


def test_inverted_digits_on_a_dark_frame_fail_the_pixel_drift(volumes, digits, capsys):
    data, deploy = volumes
    make_champion(data, deploy, digits)
    dataset = this_run(data, digits)
    inverted = {}
    for split in ("train", "test"):
        images = 255 - np.load(dataset / split / "images.npy")
        images[:, :2, :], images[:, -2:, :], images[:, :, :2], images[:, :, -2:] = 0, 0, 0, 0
        inverted[split] = Split(images, np.load(dataset / split / "labels.npy"))
    publish_data_set(dataset, inverted["train"], inverted["test"])
    lines = failed(data, capsys, "--deploy-root", str(deploy))
    drift = [line for line in lines if ": drift[" in line]
    assert len(drift) == 2 and all("drift above 0.05" in line for line in drift)
    assert checks_named(data, "label_shift")["train"]["status"] == "pass"  # the labels did not move


def test_reference_manifest_wins_over_the_champion(volumes, digits, tmp_path):
    data, deploy = volumes
    champion_data = make_champion(data, deploy, digits, train_counts=[30] * 5 + [18] * 5)
    this_run(data, digits)
    assert run(data, "--deploy-root", str(deploy)) == 3  # against the champion's shifted labels
    reference = RunPaths("ref", tmp_path / "other").dataset
    publish_data_set(reference, take(digits, 30, skip=100), take(digits, 10, skip=130))
    assert run(data, "--deploy-root", str(deploy), "--reference-manifest", str(reference / MANIFEST)) == 0
    r = report(data)
    assert r["reference"] == {
        "source": "--reference-manifest",
        "manifest": str(reference / MANIFEST),
        "manifest_sha256": read_manifest(reference).digest,
        "champion": None,
    }
    # The champion is not even looked at: its data set may be gone.
    shutil.rmtree(champion_data)
    assert run(data, "--deploy-root", str(deploy), "--reference-manifest", str(reference)) == 0


def test_bad_input_champion_training_data_gone(volumes, digits, capsys):
    data, deploy = volumes
    champion_data = make_champion(data, deploy, digits)
    this_run(data, digits)
    shutil.rmtree(champion_data)
    line = refused(data, capsys, 3, "--deploy-root", str(deploy))
    assert line == (
        f"validate: error: {champion_data}: the training data of the champion (mnist version v1) is gone from the "
        "data volume; restore it, or pass a reference data set explicitly"
    )


def test_bad_input_champion_training_data_replaced(volumes, digits, capsys):
    data, deploy = volumes
    champion_data = make_champion(data, deploy, digits)
    this_run(data, digits)
    publish_data_set(champion_data, take(digits, 30, skip=100), take(digits, 10, skip=130))
    line = refused(data, capsys, 3, "--deploy-root", str(deploy))
    assert line.startswith(f"validate: error: {champion_data / MANIFEST}: sha256 ")
    assert line.endswith("the data set was replaced")


def test_model_name_chooses_whose_champion(volumes, digits):
    data, deploy = volumes
    make_champion(data, deploy, digits, version="f1", model_name="fashion")
    this_run(data, digits)
    assert run(data, "--deploy-root", str(deploy)) == 0
    assert report(data)["reference"]["source"] is None  # nothing live for mnist
    assert run(data, "--deploy-root", str(deploy), "--model-name", "fashion") == 0
    assert report(data)["reference"]["champion"]["version"] == "f1"


def test_bad_input_model_name(volumes, capsys):
    data, _ = volumes
    line = refused(data, capsys, 2, "--model-name", "../x")
    assert "argument --model-name: invalid model name '../x'" in line


def test_reference_without_class_counts_fails_the_label_shift(volumes, digits, capsys, tmp_path):
    data, _ = volumes
    this_run(data, digits)
    reference = RunPaths("ref", tmp_path / "other").dataset
    with publish(reference, "dataset", PREPROCESS) as staging:  # a hand-made data set: pixel_stats, no counts
        train, test = take(digits, 30, skip=100), take(digits, 10, skip=130)
        for name, split in (("train", train), ("test", test)):
            (staging.path / name).mkdir()
            np.save(staging.path / name / "images.npy", split.images)
            np.save(staging.path / name / "labels.npy", split.labels)
        staging.meta["pixel_stats"] = {"train": pixel_stats(train.images), "test": pixel_stats(test.images)}
    [line] = failed(data, capsys, "--reference-manifest", str(reference))
    assert "label_shift[train]: " in line
    assert f"the reference {reference} records no class counts for split 'train' (meta.counts.train: None)" in line


def test_the_summary_line_names_the_reference(volumes, digits, capsys):
    data, deploy = volumes
    champion_data = make_champion(data, deploy, digits)
    this_run(data, digits)
    assert main(["--run-id", "r1", "--data-root", str(data), "--deploy-root", str(deploy)]) == 0
    line, timing = capsys.readouterr().err.strip().splitlines()  # the summary, then the step's time (timing.py)
    assert timing.startswith("[validate] time: ")
    assert line.endswith(f"; drift against the champion's training data (mnist version v1), {champion_data / MANIFEST}")
