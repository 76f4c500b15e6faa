"""The model as the KServe predictor loads it: one verified folder per deployed version and a `live` pointer.

    kserve/<model>/<version>/     kind "kserve-model": model.pt, index.faiss, labels.npy and deployment.json,
                                  copied out of that version's verified archive (history/<version>/<model>.mar),
                                  so TorchServe and KServe serve the same bytes
    kserve/<model>/live           symlink -> <version>, relative, so it also resolves inside a mount of
                                  kserve/<model> alone (KServe: storageUri pvc://<pvc>/kserve/<model> at
                                  /mnt/models); replaced by a rename, so a reader sees the old or the new version
    kserve/<model>/*.yaml         the cluster manifests (manifests.py)

deploy and rollback switch it under the deploy lock right after the live archive (step.py); a running predictor
(predictor.py) follows the pointer without a restart.
"""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

from mnist_ct.artifacts import (
    ArtifactError,
    Producer,
    confined,
    fsync_dir,
    publish,
    read_verified,
    sha256_file,
)

from .archive import INDEX_FILE, LABELS_FILE, MODEL_FILE, SETTINGS_FILE, ArchiveInfo

KIND = "kserve-model"
KSERVE_DIR = "kserve"
LIVE = "live"
SERVED_FILES = (MODEL_FILE, INDEX_FILE, LABELS_FILE, SETTINGS_FILE)


def model_dir(deploy_root: Path, model_name: str) -> Path:
    """kserve/<model>/ on the deploy volume: what the predictor mounts at /mnt/models."""
    return confined(deploy_root, KSERVE_DIR, model_name)


def publish_version(deploy_root: Path, info: ArchiveInfo, producer: Producer) -> Path:
    """kserve/<model>/<version>/ from the verified archive `info`; kept as it is if it already verifies and came
    from the same archive bytes."""
    folder = model_dir(deploy_root, info.model_name) / info.version
    archive_sha256 = sha256_file(info.path)
    if folder.is_dir() and not folder.is_symlink():
        try:
            if read_verified(folder, KIND).meta.get("archive_sha256") == archive_sha256:
                return folder
        except ArtifactError:
            pass  # damaged or from other bytes: published again below
    with zipfile.ZipFile(info.path) as z, publish(folder, KIND, producer) as staging:
        for name in SERVED_FILES:
            (staging.path / name).write_bytes(z.read(name))
        staging.meta.update(model_name=info.model_name, version=info.version, archive_sha256=archive_sha256)
    return folder


def switch_live(deploy_root: Path, model_name: str, version: str) -> None:
    """Point kserve/<model>/live at <version>: a new symlink renamed over the old one (atomic), then fsynced."""
    folder = model_dir(deploy_root, model_name)
    if not (folder / version).is_dir():
        raise ArtifactError(f"{folder / version}: no such version folder; publish it before switching to it")
    tmp = folder / f".{LIVE}.tmp-{uuid.uuid4().hex[:12]}"
    os.symlink(version, tmp)
    try:
        os.replace(tmp, folder / LIVE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def live_version(folder: Path) -> str | None:
    """The version kserve/<model>/live names (None: no pointer yet); ArtifactError if it is not one of ours."""
    link = Path(folder) / LIVE
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:
        raise ArtifactError(f"{link}: not a symlink to a version folder; deploy again to replace it") from None
    if not target or "/" in target or target.startswith("."):
        raise ArtifactError(f"{link}: points to {target!r}, not to a version folder beside it; deploy again")
    return target


def read_live(folder: Path) -> tuple[str, Path]:
    """(version, its verified folder) that kserve/<model>/live points to, for the predictor."""
    version = live_version(folder)
    if version is None:
        raise ArtifactError(
            f"{Path(folder) / LIVE}: no live model; deploy a run first (python -m mnist_ct.deploy --run-id R)"
        )
    path = Path(folder) / version
    manifest = read_verified(path, KIND)
    if manifest.meta.get("version") != version:
        raise ArtifactError(f"{path}: holds version {manifest.meta.get('version')!r}, but {LIVE} calls it {version}")
    return version, path
