"""The champion: the model live on the deploy volume, as every step that compares against production finds it.

deploy makes version V of model M live by publishing `history/V/` (an artifact folder of kind "deployment":
`M.mar` and `deployment.json`, both listed with their sha256 in its manifest) and then copying `M.mar` over
`model-store/M.mar`. So the champion is found with no option: the live archive names its version (its
`deployment.json` member), and history's verified entry of that version, whose archive must be byte for byte
the live one, gives its record: accuracy, run id, data version, the data set's manifest digest, every step's
version and image (deployment.json, written by deploy from analysis' lineage).

Readers:
- preprocess: is this run's data version and every step version the champion's (nothing to retrain)?
- validate: the champion's training data set (`<data-root>/runs/<its run>/dataset/`, its manifest digest
  checked) is the reference for drift;
- embedding: the champion's model.pt embeds this run's test split;
- analysis: the champion's index and k-NN setting classify those embeddings (champion accuracy, blessing);
- deploy: the champion analysis measured must still be the live one.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError, UsageError
from .manifest import MANIFEST, Manifest, read_manifest, read_verified
from .paths import check_run_id, confined

DEPLOYMENT_KIND = "deployment"
DEPLOYMENT_FILE = "deployment.json"
DEFAULT_MODEL_NAME = "mnist"
# A TorchServe model name becomes <name>.mar, /predictions/<name> and a folder name: torch-model-archiver
# also allows '.', but TorchServe turns every non-word character of a name it derives into '_'.
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# What a champion's archive holds that its challengers are measured with.
MODEL_MEMBER, INDEX_MEMBER, LABELS_MEMBER = "model.pt", "index.faiss", "labels.npy"


def check_model_name(name: str) -> str:
    """`name` if it is a safe TorchServe model name, else UsageError."""
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def live_archive_path(deploy_root: Path, model_name: str) -> Path:
    """model-store/<model>.mar: the archive TorchServe serves (refused if a symlink leads out of the volume)."""
    return confined(deploy_root, "model-store", f"{check_model_name(model_name)}.mar")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Champion:
    """The live version of a model: its verified history entry and what deployment.json records of it."""

    model_name: str
    version: str
    folder: Path  # history/<version>/, verified
    archive: Path  # history/<version>/<model>.mar, the live archive's twin
    archive_sha256: str
    record: dict[str, Any]  # deployment.json

    @property
    def run_id(self) -> str:
        value = self.record.get("run_id")
        return value if isinstance(value, str) and value else self.version

    @property
    def accuracy(self) -> float | None:
        """The accuracy deploy recorded (measured on the champion's own test split: compare with care)."""
        value = self.record.get("accuracy")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    @property
    def data_version(self) -> str | None:
        value = self.record.get("data_version")
        return value if isinstance(value, str) and value else None

    @property
    def dataset_sha256(self) -> str | None:
        value = self.record.get("dataset_sha256")
        return value if isinstance(value, str) and value else None

    @property
    def versions(self) -> dict[str, str]:
        """Every step's version in the run that made it (MNIST_CT_STEP_VERSIONS as analysis recorded it), or {}."""
        value = self.record.get("versions")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def images(self) -> dict[str, str]:
        value = self.record.get("images")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def serving(self) -> dict[str, Any]:
        """The k-NN setting it is served with (and its accuracy was measured with): `k`, `vote`."""
        value = self.record.get("serving")
        serving = dict(value) if isinstance(value, dict) else {}
        return {"k": int(serving.get("k", 1)), "vote": str(serving.get("vote", "majority"))}

    def summary(self) -> dict[str, Any]:
        """What a report or a manifest records of the champion."""
        return {
            "model_name": self.model_name,
            "version": self.version,
            "run_id": self.run_id,
            "archive_sha256": self.archive_sha256,
            "recorded_accuracy": self.accuracy,
            "data_version": self.data_version,
        }

    def member(self, name: str) -> bytes:
        """One file of the champion's archive (model.pt, index.faiss, labels.npy), from its verified history copy."""
        try:
            with zipfile.ZipFile(self.archive) as z:
                return z.read(name)
        except KeyError:
            raise ArtifactError(f"{self.archive}: the champion's archive has no {name}") from None
        except (zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"{self.archive}: not a readable zip archive ({e})") from None

    def training_data(self, data_root: Path) -> tuple[Path, Manifest]:
        """The data set the champion was trained on, `<data-root>/runs/<its run>/dataset/`, and its manifest:
        ArtifactError if it is gone or is not the one the champion's record names (by manifest digest)."""
        try:
            check_run_id(self.run_id)
        except UsageError:
            raise ArtifactError(
                f"{self.folder / DEPLOYMENT_FILE}: run_id {self.run_id!r} is not a run id; the record is damaged"
            ) from None
        folder = confined(data_root, "runs", self.run_id, "dataset")
        if not (folder / MANIFEST).is_file():
            raise ArtifactError(
                f"{folder}: the training data of the champion ({self.model_name} version {self.version}) is gone "
                "from the data volume; restore it, or pass a reference data set explicitly"
            )
        manifest = read_manifest(folder, "dataset")
        if self.dataset_sha256 is not None and manifest.digest != self.dataset_sha256:
            raise ArtifactError(
                f"{folder / MANIFEST}: sha256 {manifest.digest[:12]}, but the champion ({self.model_name} version "
                f"{self.version}) was trained on {self.dataset_sha256[:12]}; the data set was replaced"
            )
        return folder, manifest


def find_champion(deploy_root: Path, model_name: str = DEFAULT_MODEL_NAME) -> Champion | None:
    """The live version of `model_name` on the deploy volume, verified; None when nothing is live.

    ArtifactError (exit 3) when the live archive is unreadable, names a version history lacks, or differs from
    history's copy of it: comparing against a champion that cannot be trusted would bless anything.
    """
    live = live_archive_path(deploy_root, model_name)
    if not live.exists():
        if live.is_symlink():  # a dangling link is not "nothing live": that would bless anything
            raise ArtifactError(f"{live}: a symlink to nothing; deploy or roll back to replace the live archive")
        return None
    try:
        with zipfile.ZipFile(live) as z:
            deployment = json.loads(z.read(DEPLOYMENT_FILE))
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError) as e:
        raise ArtifactError(
            f"{live}: the live archive is unreadable ({e.__class__.__name__}: {e}); deploy or roll back to replace it"
        ) from None
    version = deployment.get("version") if isinstance(deployment, dict) else None
    try:
        version = check_run_id(version)  # type: ignore[arg-type]  # refused unless a str
    except UsageError:
        raise ArtifactError(f"{live}: its {DEPLOYMENT_FILE} names version {version!r}, not a run id") from None
    assert isinstance(version, str)
    champion = read_deployed(deploy_root, model_name, version)
    if _sha256(live) != champion.archive_sha256:
        raise ArtifactError(
            f"{live}: differs from {champion.archive}, the history copy of the version it names ({version}); "
            "run deploy (it reconciles the live archive) or roll back"
        )
    return champion


def read_deployed(deploy_root: Path, model_name: str, version: str) -> Champion:
    """Version `version` of `model_name` as history/<version>/ holds it, verified (live or not): how a step
    reads exactly the champion an earlier step of its run measured, even if another deploy happened since.

    `version` comes from a record (an artifact's meta, a log): one that is not a run id is bad input, exit 3;
    a caller with a version from the command line checks it with check_run_id first (exit 2)."""
    try:
        check_run_id(version)
    except UsageError:
        raise ArtifactError(
            f"version {version!r} of {model_name} is not a run id; the record naming it is damaged"
        ) from None
    folder = confined(deploy_root, "history", version)
    manifest = read_verified(folder, DEPLOYMENT_KIND)  # every listed file's sha256
    mar = f"{check_model_name(model_name)}.mar"
    if mar not in manifest.files or DEPLOYMENT_FILE not in manifest.files:
        raise ArtifactError(f"{folder}: the history entry of version {version} lists no {mar} or {DEPLOYMENT_FILE}")
    try:
        record = json.loads((folder / DEPLOYMENT_FILE).read_bytes())
    except ValueError as e:
        raise ArtifactError(f"{folder / DEPLOYMENT_FILE}: not JSON ({e})") from None
    if not isinstance(record, dict):
        raise ArtifactError(f"{folder / DEPLOYMENT_FILE}: not a JSON object")
    return Champion(model_name, version, folder, folder / mar, manifest.files[mar].sha256, record)
