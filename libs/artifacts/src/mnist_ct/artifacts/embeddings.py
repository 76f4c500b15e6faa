"""Embeddings on disk: {split}.npy float32 [N,D], L2-normalised, and {split}_labels.npy int64 [N]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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
    if v.dtype != np.float32 or v.ndim != 2 or v.shape[1] < 1:
        raise ArtifactError(f"{name}: embeddings must be float32 [N,D], got {v.dtype} {list(v.shape)}")
    if len(v) != len(e.labels):
        raise ArtifactError(f"{name}: {len(v)} embeddings but {len(e.labels)} labels")
    _ensure_labels(name, e.labels)
    if len(v) == 0:
        raise ArtifactError(f"{name}: no embeddings")
    if not np.isfinite(v).all():
        raise ArtifactError(f"{name}: embeddings contain NaN or infinite values")
    norms = np.linalg.norm(v, axis=1)
    worst = float(np.abs(norms - 1.0).max())
    if worst > NORM_TOLERANCE:
        raise ArtifactError(f"{name}: embeddings are not L2-normalised (a row has norm off by {worst:.3g})")


def write_embeddings(
    folder: Path, splits: dict[str, Embeddings], producer: Producer, inputs: dict[str, str], meta: dict[str, Any]
) -> Manifest:
    """Publish the embeddings of each split atomically (manifest last)."""
    for name, e in splits.items():
        check_embeddings(name, e)
    with publish(folder, EMBEDDINGS_KIND, producer, inputs) as staging:
        for name, e in splits.items():
            np.save(staging.path / f"{name}.npy", np.ascontiguousarray(e.vectors))
            np.save(staging.path / f"{name}_labels.npy", e.labels.astype(np.int64))
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
