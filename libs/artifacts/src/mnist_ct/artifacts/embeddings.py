"""Embeddings on disk: {split}.npy float32 [N,D], L2-normalised, and {split}_labels.npy int64 [N]."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .dataset import _ensure_labels, load_array
from .errors import ArtifactError
from .manifest import Manifest, Producer, publish, read_manifest

EMBEDDINGS_KIND = "embeddings"
NORM_TOLERANCE = 1e-3


@dataclass
class Embeddings:
    vectors: np.ndarray  # float32 [N,D], rows of unit length
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


def check_embeddings(name: str, e: Embeddings) -> None:
    """Refuse NaN, unnormalised or mis-shaped embeddings, or labels that do not match them."""
    v = e.vectors
    _check_shape(name, v)
    if len(v) != len(e.labels):
        raise ArtifactError(f"{name}: {len(v)} embeddings but {len(e.labels)} labels")
    _ensure_labels(name, e.labels)
    _check_rows(name, v)


def check_vectors(name: str, v: np.ndarray) -> None:
    """Refuse vectors without labels (an extra file such as champion/test.npy) that break the embeddings contract."""
    _check_shape(name, v)
    _check_rows(name, v)


def _check_shape(name: str, v: np.ndarray) -> None:
    if v.dtype != np.float32 or v.ndim != 2 or v.shape[1] < 1:
        raise ArtifactError(f"{name}: embeddings must be float32 [N,D], got {v.dtype} {list(v.shape)}")


def _check_rows(name: str, v: np.ndarray) -> None:
    if len(v) == 0:
        raise ArtifactError(f"{name}: no embeddings")
    if not np.isfinite(v).all():
        raise ArtifactError(f"{name}: embeddings contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1)
    worst = float(np.abs(norms - 1.0).max())
    if worst > NORM_TOLERANCE:
        raise ArtifactError(f"{name}: embeddings are not L2-normalised (a row has norm off by {worst:.3g})")


def write_embeddings(
    folder: Path,
    splits: dict[str, Embeddings],
    producer: Producer,
    inputs: dict[str, str],
    meta: dict[str, Any],
    extra: Mapping[str, np.ndarray] | None = None,
) -> Manifest:
    """Publish the embeddings of each split atomically (manifest last).

    `extra`: more vectors without labels of their own, by relative path ending in .npy (embedding's
    `champion/test.npy`: the test split embedded by another model); checked like embeddings, listed in the
    manifest, and not a split: read_embeddings ignores them, read_vectors reads one.
    """
    for name, e in splits.items():
        check_embeddings(name, e)
    extra = dict(extra or {})
    taken = {f"{name}{suffix}" for name in splits for suffix in (".npy", "_labels.npy")}
    for rel, v in extra.items():
        parts = PurePosixPath(rel).parts
        if not rel.endswith(".npy") or rel.startswith("/") or ".." in parts or rel in taken or len(parts) > 2:
            raise ArtifactError(f"{folder / rel}: not a valid extra embeddings file (name.npy or folder/name.npy)")
        check_vectors(rel, v)
    with publish(folder, EMBEDDINGS_KIND, producer, inputs) as staging:
        for name, e in splits.items():
            np.save(staging.path / f"{name}.npy", np.ascontiguousarray(e.vectors))
            np.save(staging.path / f"{name}_labels.npy", e.labels.astype(np.int64))
        for rel, v in extra.items():
            (staging.path / rel).parent.mkdir(exist_ok=True)
            np.save(staging.path / rel, np.ascontiguousarray(v))
        staging.meta.update(meta)
        staging.meta["dim"] = int(next(iter(splits.values())).vectors.shape[1])
        staging.meta["sizes"] = {name: len(e) for name, e in splits.items()}
    assert staging.manifest is not None
    return staging.manifest


def read_embeddings(folder: Path, mmap: bool = False) -> tuple[Manifest, dict[str, Embeddings]]:
    """Verify checksums and load every split's embeddings, contract-checked."""
    manifest = read_manifest(folder, EMBEDDINGS_KIND)
    names = sorted(rel[: -len("_labels.npy")] for rel in manifest.files if rel.endswith("_labels.npy"))
    if not names:
        raise ArtifactError(f"{folder}: the embeddings artifact lists no splits")
    splits = {}
    for name in names:
        e = Embeddings(
            load_array(folder, manifest, f"{name}.npy", mmap), load_array(folder, manifest, f"{name}_labels.npy", mmap)
        )
        try:
            check_embeddings(name, e)
        except ArtifactError as err:
            raise ArtifactError(f"{Path(folder) / (name + '.npy')}: {err}") from None
        splits[name] = e
    return manifest, splits


def read_vectors(folder: Path, manifest: Manifest, rel: str, mmap: bool = False) -> np.ndarray:
    """One extra file of an embeddings artifact (`champion/test.npy`), verified and contract-checked."""
    if rel not in manifest.files:
        raise ArtifactError(f"{Path(folder) / rel}: not listed in the embeddings manifest")
    v = load_array(folder, manifest, rel, mmap)
    try:
        check_vectors(rel, v)
    except ArtifactError as err:
        raise ArtifactError(f"{Path(folder) / rel}: {err}") from None
    return v
