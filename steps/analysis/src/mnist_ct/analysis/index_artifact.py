"""Read the index artifact train_faiss publishes (index.faiss, labels.npy, index.json), verified."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mnist_ct.artifacts import NUM_CLASSES, ArtifactError, Manifest, load_array, read_manifest, verify_file

INDEX_KIND = "index"


@dataclass
class IndexArtifact:
    manifest: Manifest
    index: faiss.Index
    labels: np.ndarray  # int64 [ntotal]: the label of each index id
    info: dict[str, Any]  # index.json

    @property
    def dim(self) -> int:
        return int(self.index.d)


def read_index(folder: Path) -> IndexArtifact:
    """Verify the manifest and checksums, load the index and its labels, and check they agree."""
    folder = Path(folder)
    manifest = read_manifest(folder, INDEX_KIND)
    for rel in ("index.faiss", "labels.npy", "index.json"):
        if rel not in manifest.files:
            raise ArtifactError(f"{folder / rel}: not listed in the index manifest; rerun train_faiss")
    index_path = verify_file(folder, manifest, "index.faiss")
    labels = load_array(folder, manifest, "labels.npy")
    info_path = verify_file(folder, manifest, "index.json")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as e:
        raise ArtifactError(f"{info_path}: not valid JSON ({e}); rerun train_faiss") from None
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as e:
        reason = " ".join(str(e).split())[-200:]
        raise ArtifactError(f"{index_path}: FAISS cannot read it ({reason}); rerun train_faiss") from None
    check_index_labels(index, labels, (folder / "index.faiss", folder / "labels.npy", folder), "rerun train_faiss")
    return IndexArtifact(manifest, index, labels.astype(np.int64), info)


def check_index_labels(
    index: faiss.Index, labels: np.ndarray, names: tuple[Path | str, Path | str, Path | str], fix: str
) -> None:
    """Refuse labels that are not one label in 0..9 per vector of a non-empty index.

    `names`: how the errors name the index, the labels and the two together.
    """
    index_name, labels_name, pair = names
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ArtifactError(f"{labels_name}: labels must be integer [N], got {labels.dtype} {list(labels.shape)}")
    if len(labels) != index.ntotal:
        raise ArtifactError(
            f"{pair}: index.faiss holds {index.ntotal} vectors but labels.npy has {len(labels)} labels; {fix}"
        )
    if len(labels) == 0:
        raise ArtifactError(f"{index_name}: the index is empty; {fix}")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ArtifactError(f"{labels_name}: labels must be in 0..9, found {int(labels.min())}..{int(labels.max())}")
