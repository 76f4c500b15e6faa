"""The champion: the live archive on the deploy volume and its verified history entry, found as every step finds it.

The deploy volume is built by hand here in deploy's layout (history/<version>/ published as a "deployment"
artifact folder holding <model>.mar and deployment.json, the archive copied to model-store/<model>.mar), so
these tests need nothing but mnist-ct-artifacts.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnist_ct.artifacts import (
    ArtifactError,
    Champion,
    Producer,
    RunPaths,
    UsageError,
    check_model_name,
    find_champion,
    publish,
    read_deployed,
    read_manifest,
    sha256_file,
)
from mnist_ct.artifacts.testing import mar_bytes, npy_bytes, publish_deployment

VERSIONS = {"preprocess": "0.4.0", "train_model": "0.3.1", "analysis": "0.4.0"}


def deploy_version(
    deploy_root: Path,
    version: str,
    accuracy: float,
    live: bool = True,
    model_name: str = "mnist",
    **record: Any,
) -> Path:
    """Publish history/<version>/ as deploy does and, if `live`, copy its archive to model-store/; the archive."""
    doc = {
        "model_name": model_name,
        "version": version,
        "run_id": version,
        "accuracy": accuracy,
        "versions": VERSIONS,
        "serving": {"k": 3, "vote": "distance", "max_pixels": 1000, "threads": 1, "version": version},
        **record,
    }
    labels = npy_bytes(np.arange(10, dtype=np.int64))
    members = {"model.pt": f"model of {version}".encode(), "index.faiss": b"index", "labels.npy": labels}
    return publish_deployment(deploy_root, doc, members, model_name, live)


def test_nothing_live_is_no_champion(tmp_path: Path) -> None:
    assert find_champion(tmp_path / "deploy") is None
    deploy_version(tmp_path / "deploy", "r1", 0.9, live=False)  # in history, never made live
    assert find_champion(tmp_path / "deploy") is None


def test_the_live_version_is_found_with_its_record(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    deploy_version(root, "r1", 0.91)
    archive = deploy_version(root, "r2", 0.93)

    champion = find_champion(root)

    assert isinstance(champion, Champion)
    assert (champion.version, champion.run_id, champion.accuracy) == ("r2", "r2", 0.93)
    assert champion.archive == archive and champion.folder == root / "history/r2"
    assert champion.archive_sha256 == sha256_file(root / "model-store/mnist.mar")
    assert champion.versions == VERSIONS and champion.images == {} and champion.data_version is None
    assert champion.serving == {"k": 3, "vote": "distance"}
    assert champion.member("model.pt") == b"model of r2"
    assert np.load(io.BytesIO(champion.member("labels.npy"))).tolist() == list(range(10))
    assert champion.summary() == {
        "model_name": "mnist",
        "version": "r2",
        "run_id": "r2",
        "archive_sha256": champion.archive_sha256,
        "recorded_accuracy": 0.93,
        "data_version": None,
    }


def test_a_member_the_archive_lacks_is_bad_input(tmp_path: Path) -> None:
    deploy_version(tmp_path / "deploy", "r1", 0.9)
    champion = find_champion(tmp_path / "deploy")
    assert champion is not None
    with pytest.raises(ArtifactError, match="has no weights.bin"):
        champion.member("weights.bin")


def test_a_live_archive_that_differs_from_its_history_entry_is_refused_naming_both(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    deploy_version(root, "r1", 0.9)
    live = root / "model-store/mnist.mar"
    # Same version named inside, other bytes: not the archive history verified.
    record = json.loads(zipfile.ZipFile(live).read("deployment.json"))
    live.write_bytes(mar_bytes({**record, "accuracy": 0.99}, {"model.pt": b"another model"}))

    with pytest.raises(ArtifactError) as e:
        find_champion(root)

    assert e.value.exit_code == 3
    assert str(e.value).startswith(f"{live}: differs from {root / 'history/r1/mnist.mar'}")
    assert "(r1)" in str(e.value) and "roll back" in str(e.value)


def test_a_tampered_history_entry_is_refused_by_its_checksums(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    deploy_version(root, "r1", 0.9)
    record = root / "history/r1/deployment.json"
    record.write_text(record.read_text().replace("0.9", "0.99"))  # a better accuracy, written by hand

    with pytest.raises(ArtifactError) as e:
        find_champion(root)
    assert e.value.exit_code == 3 and str(record) in str(e.value)
    with pytest.raises(ArtifactError):
        read_deployed(root, "mnist", "r1")


def test_a_history_entry_without_the_archive_or_record_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    folder = root / "history/r1"
    with publish(folder, "deployment", Producer("deploy", "0.4.0")) as staging:
        (staging.path / "deployment.json").write_text("{}")
    with pytest.raises(ArtifactError, match="lists no mnist.mar or deployment.json"):
        read_deployed(root, "mnist", "r1")


def test_an_unreadable_live_archive_is_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    (root / "model-store").mkdir(parents=True)
    (root / "model-store/mnist.mar").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="the live archive is unreadable"):
        find_champion(root)


@pytest.mark.parametrize("version", ["../r1", "", None, 7, "a/b"])
def test_a_live_archive_naming_a_version_that_is_not_a_run_id_is_refused(tmp_path: Path, version: Any) -> None:
    root = tmp_path / "deploy"
    (root / "model-store").mkdir(parents=True)
    live = root / "model-store/mnist.mar"
    live.write_bytes(mar_bytes({"version": version}, {}))

    with pytest.raises(ArtifactError) as e:
        find_champion(root)

    assert str(e.value) == f"{live}: its deployment.json names version {version!r}, not a run id"


def test_a_live_version_that_history_lacks_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    deploy_version(root, "r1", 0.9)
    (root / "history/r1/manifest.json").unlink()  # the entry is gone (or was never published complete)
    with pytest.raises(ArtifactError):
        find_champion(root)


def test_read_deployed_reads_a_version_that_is_no_longer_live(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    first = deploy_version(root, "r1", 0.91, data_version="d" * 64)
    deploy_version(root, "r2", 0.93)

    old = read_deployed(root, "mnist", "r1")

    assert (old.version, old.accuracy, old.data_version, old.archive) == ("r1", 0.91, "d" * 64, first)
    assert old.archive_sha256 == sha256_file(first) != sha256_file(root / "model-store/mnist.mar")
    assert old.member("model.pt") == b"model of r1"
    live = find_champion(root)
    assert live is not None and live.version == "r2"


def test_read_deployed_refuses_a_version_that_is_not_a_run_id(tmp_path: Path) -> None:
    # The version comes from a record (embeddings' meta.champion), not the command line: bad input, exit 3.
    with pytest.raises(ArtifactError, match="version '../r1' of mnist is not a run id"):
        read_deployed(tmp_path / "deploy", "mnist", "../r1")


def test_another_model_name_has_its_own_champion(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    deploy_version(root, "r1", 0.9, model_name="fashion")
    assert find_champion(root) is None
    champion = find_champion(root, "fashion")
    assert champion is not None and champion.model_name == "fashion" and champion.version == "r1"
    with pytest.raises(UsageError, match="invalid model name"):
        check_model_name("../mnist")
    with pytest.raises(ArtifactError, match="lists no mnist.mar"):
        read_deployed(root, "mnist", "r1")


def test_the_training_data_is_the_champions_data_set_checked_by_digest(published_run: RunPaths) -> None:
    dataset = read_manifest(published_run.dataset, "dataset")
    root = published_run.deploy_root
    deploy_version(root, published_run.run_id, 0.9, dataset_sha256=dataset.digest)
    champion = find_champion(root)
    assert champion is not None

    folder, manifest = champion.training_data(published_run.data_root)

    assert folder == published_run.dataset and manifest.digest == dataset.digest


def test_training_data_that_was_replaced_or_is_gone_is_bad_input(published_run: RunPaths) -> None:
    root = published_run.deploy_root
    deploy_version(root, published_run.run_id, 0.9, dataset_sha256="0" * 64)
    champion = find_champion(root)
    assert champion is not None
    with pytest.raises(ArtifactError, match="the data set was replaced"):
        champion.training_data(published_run.data_root)
    with pytest.raises(ArtifactError, match="is gone from the data volume"):
        champion.training_data(published_run.data_root / "elsewhere")


def test_a_recorded_run_id_that_is_not_a_run_id_is_bad_input(published_run: RunPaths) -> None:
    root = published_run.deploy_root
    deploy_version(root, published_run.run_id, 0.9, run_id="../runs/" + published_run.run_id)
    champion = find_champion(root)
    assert champion is not None
    with pytest.raises(ArtifactError, match="is not a run id; the record is damaged"):
        champion.training_data(published_run.data_root)


def test_bad_input_a_dangling_live_symlink_is_not_nothing_live(tmp_path):
    live = tmp_path / "model-store" / "mnist.mar"
    live.parent.mkdir(parents=True)
    live.symlink_to(tmp_path / "model-store" / "gone.mar")
    with pytest.raises(ArtifactError, match="a symlink to nothing"):
        find_champion(tmp_path)
