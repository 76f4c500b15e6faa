"""What a run must have to be deployed: a verified model, index and analysis that belong together.

Every manifest and checksum is verified, model.pt must be a TorchScript archive (never unpickled), the
index's labels must be integers, one per vector, analysis' accuracy a number in 0..1 with a k-NN setting
the handler knows, and, where the run's embeddings are present, the lineage must hold: the index was built
from this model's embeddings and analysis measured this index. Nothing here loads the model: probe.py
runs it once these checks pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import (
    NUM_CLASSES,
    ArtifactError,
    Manifest,
    RunPaths,
    UsageError,
    check_run_id,
    load_array,
    read_manifest,
    read_verified,
    require_torchscript,
    verify_file,
)
from mnist_ct.artifacts.knn import VOTES

from .archive import INDEX_FILE, LABELS_FILE, MODEL_FILE

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class MeasuredChampion:
    """The champion analysis measured the run against: the version live then, and its accuracy on THIS run's
    test split (the figure to compare the run's own accuracy with, not the one recorded when it was deployed)."""

    version: str
    accuracy: float
    archive_sha256: str | None  # of the live archive analysis read, where it recorded it


@dataclass(frozen=True)
class Candidate:
    """The verified inputs of one run: model, index and the accuracy analysis measured with its k-NN setting."""

    run_id: str
    model: Manifest
    index: Manifest
    analysis: Manifest
    accuracy: float
    k: int
    vote: str
    sources: dict[str, Path]  # model.pt, index.faiss, labels.npy -> where they are
    n_labels: int
    lineage: dict[str, Any]
    images: dict[str, str]  # every step's image in the run that made the model, as analysis recorded them
    data_version: str | None  # the data set's (preprocess), as analysis recorded it
    # every step's version in the run (MNIST_CT_STEP_VERSIONS as analysis recorded it), {} if it recorded none
    versions: dict[str, str] = field(default_factory=dict)
    # metrics.json has a `champion` key (an analysis that measures the champion): `champion` is then what it
    # measured, None meaning nothing was live. Without the key (an older analysis) both are False/None.
    measured_champion: bool = False
    champion: MeasuredChampion | None = None
    blessing: dict[str, Any] | None = None  # analysis' verdict, as it recorded it

    @property
    def dataset_sha256(self) -> str | None:
        """The manifest digest of the data set the model was trained on."""
        return self.model.inputs.get("dataset")

    @property
    def inputs(self) -> dict[str, str]:
        """The digests of the manifests a deployment is made from (its history entry's inputs)."""
        return {"model": self.model.digest, "index": self.index.digest, "analysis": self.analysis.digest}

    def manifest_of(self, name: str) -> Manifest:
        """The manifest that lists source file `name`."""
        return self.model if name == MODEL_FILE else self.index


def _require(folder: Path, manifest: Manifest, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in manifest.files:
            raise ArtifactError(f"{folder / name}: not in {folder / 'manifest.json'}; rerun {manifest.producer.step}")


def read_metrics(folder: Path, analysis: Manifest) -> dict[str, Any]:
    """analysis' metrics.json, its accuracy checked to be a number in 0..1."""
    path = verify_file(folder, analysis, METRICS_FILE)
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({e})") from None
    accuracy = doc.get("accuracy") if isinstance(doc, dict) else None
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        raise ArtifactError(f"{path}: top-level 'accuracy' must be a number in 0..1, got {accuracy!r}")
    if not 0.0 <= accuracy <= 1.0:
        raise ArtifactError(f"{path}: accuracy {accuracy} is outside 0..1")
    return doc


def _number_0_1(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1


def measured_champion(path: Path, doc: dict[str, Any]) -> tuple[bool, MeasuredChampion | None]:
    """metrics.json's `champion`: (False, None) without the key, (True, None) for null (nothing was live),
    (True, the champion) for {"version", "accuracy", ...}; anything else is bad input."""
    if "champion" not in doc:
        return False, None
    value = doc["champion"]
    if value is None:
        return True, None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: 'champion' must be null or an object with version and accuracy, got {value!r}")
    version: Any = value.get("version")
    accuracy: Any = value.get("accuracy")
    sha: Any = value.get("archive_sha256")
    try:
        check_run_id(version)
    except UsageError:
        raise ArtifactError(
            f"{path}: champion.version must be the run id of a deployed version, got {version!r}"
        ) from None
    if not _number_0_1(accuracy):
        raise ArtifactError(f"{path}: champion.accuracy must be a number in 0..1, got {accuracy!r}")
    if sha is not None and not isinstance(sha, str):
        raise ArtifactError(f"{path}: champion.archive_sha256 must be a string, got {sha!r}")
    return True, MeasuredChampion(version, float(accuracy), sha)


def recorded_blessing(path: Path, doc: dict[str, Any]) -> dict[str, Any] | None:
    """metrics.json's `blessing` (analysis' verdict), None where it recorded none."""
    blessing = doc.get("blessing")
    if blessing is not None and not isinstance(blessing, dict):
        raise ArtifactError(f"{path}: 'blessing' must be an object, got {blessing!r}")
    return blessing


def _steps_map(folder: Path, analysis: Manifest, key: str, what: str) -> dict[str, str]:
    value = analysis.meta.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ArtifactError(f"{folder / 'manifest.json'}: meta.{key} must map step names to {what}")
    return dict(value)


def recorded_images(folder: Path, analysis: Manifest) -> dict[str, str]:
    """The images analysis recorded (MNIST_CT_IMAGES of its task) in its manifest: step -> image reference."""
    return _steps_map(folder, analysis, "images", "image references")


def recorded_versions(folder: Path, analysis: Manifest) -> dict[str, str]:
    """The step versions analysis recorded (MNIST_CT_STEP_VERSIONS of its task): step -> package version."""
    return _steps_map(folder, analysis, "versions", "package versions")


def _describe(m: Manifest) -> dict[str, Any]:
    return {"digest": m.digest, "producer": f"{m.producer.step} {m.producer.version}", "inputs": m.inputs}


def check_lineage(paths: RunPaths, model: Manifest, index: Manifest, analysis: Manifest) -> dict[str, Any]:
    """The index must come from this model's embeddings, and analysis from this index or them."""
    lineage: dict[str, Any] = {"model": _describe(model), "index": _describe(index), "analysis": _describe(analysis)}
    if not paths.embeddings.exists():
        return lineage
    emb = read_manifest(paths.embeddings, "embeddings")
    lineage["embeddings"] = _describe(emb)
    if model.digest not in emb.inputs.values():
        raise ArtifactError(f"{paths.embeddings}: made from another model than {paths.model}; rerun embedding")
    if emb.digest not in index.inputs.values():
        raise ArtifactError(f"{paths.index}: built from other embeddings than {paths.embeddings}; rerun train_faiss")
    if not {index.digest, emb.digest} & set(analysis.inputs.values()):
        raise ArtifactError(f"{paths.analysis}: measured on another index than {paths.index}; rerun analysis")
    return lineage


def read_candidate(paths: RunPaths) -> Candidate:
    """Verify the manifests and checksums of the model, index and analysis of run `paths.run_id`."""
    model = read_verified(paths.model, "model")
    _require(paths.model, model, (MODEL_FILE,))
    require_torchscript(paths.model / MODEL_FILE)  # a pickle must never go live (TorchServe would unpickle it)
    index = read_verified(paths.index, "index")
    _require(paths.index, index, (INDEX_FILE, LABELS_FILE))
    labels = load_array(paths.index, index, LABELS_FILE)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
        raise ArtifactError(
            f"{paths.index / LABELS_FILE}: must be a non-empty integer [N] array, got {labels.dtype} "
            f"{list(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ArtifactError(
            f"{paths.index / LABELS_FILE}: labels must be digits 0..9, found {labels.min()}..{labels.max()}"
        )
    size = index.meta.get("size")
    if isinstance(size, int) and size != len(labels):
        raise ArtifactError(f"{paths.index}: index.json says {size} vectors but labels.npy has {len(labels)}")
    analysis = read_verified(paths.analysis, "analysis")
    _require(paths.analysis, analysis, (METRICS_FILE,))
    metrics = read_metrics(paths.analysis, analysis)
    k = metrics.get("k", analysis.meta.get("k", 1))
    vote = metrics.get("vote", analysis.meta.get("vote", "majority"))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or vote not in VOTES:
        raise ArtifactError(f"{paths.analysis / METRICS_FILE}: k={k!r}, vote={vote!r} are not a k-NN setting")
    measured, champion = measured_champion(paths.analysis / METRICS_FILE, metrics)
    return Candidate(
        run_id=paths.run_id,
        model=model,
        index=index,
        analysis=analysis,
        accuracy=float(metrics["accuracy"]),
        k=k,
        vote=vote,
        sources={
            MODEL_FILE: paths.model / MODEL_FILE,
            INDEX_FILE: paths.index / INDEX_FILE,
            LABELS_FILE: paths.index / LABELS_FILE,
        },
        n_labels=len(labels),
        lineage=check_lineage(paths, model, index, analysis),
        images=recorded_images(paths.analysis, analysis),
        data_version=analysis.meta.get("data_version") if isinstance(analysis.meta.get("data_version"), str) else None,
        versions=recorded_versions(paths.analysis, analysis),
        measured_champion=measured,
        champion=champion,
        blessing=recorded_blessing(paths.analysis / METRICS_FILE, metrics),
    )
