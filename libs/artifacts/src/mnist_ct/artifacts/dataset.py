"""Data splits on disk: {split}/images.npy uint8 [N,28,28] and {split}/labels.npy int64 [N]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError
from .manifest import Manifest, Producer, publish, read_manifest, verify_file

DATASET_KIND = "dataset"
SPLITS = ("train", "test")
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
_STATS_CHUNK = 1 << 22  # pixels per bincount in pixel_stats


@dataclass
class Split:
    images: np.ndarray  # uint8 [N,28,28], white digit on black
    labels: np.ndarray  # int64 [N], 0..9

    def __len__(self) -> int:
        return len(self.labels)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Images per class 0..9 (JSON keys are strings)."""
    counts = np.bincount(labels.astype(np.int64), minlength=NUM_CLASSES)
    return {str(c): int(n) for c, n in enumerate(counts)}


def pixel_stats(images: np.ndarray) -> dict[str, float]:
    """Mean and std of uint8 pixels on the [0,1] scale the model sees, from a histogram (exact, no float copy)."""
    flat = np.asarray(images).reshape(-1)
    counts = np.zeros(256, dtype=np.float64)
    for start in range(0, len(flat), _STATS_CHUNK):  # bincount copies into int64: chunked, not 8x the data at once
        counts += np.bincount(flat[start : start + _STATS_CHUNK], minlength=256)
    values = np.arange(256) / 255.0
    n = counts.sum()
    mean = float(counts @ values / n)
    std = float(np.sqrt(max(counts @ values**2 / n - mean**2, 0.0)))
    return {"mean": round(mean, 6), "std": round(std, 6)}


def check_split(name: str, split: Split) -> None:
    """Refuse a split that breaks the contract (raised before anything is published)."""
    im, lb = split.images, split.labels
    if im.dtype != np.uint8 or im.ndim != 3 or im.shape[1:] != IMAGE_SHAPE:
        raise ArtifactError(f"split {name}: images must be uint8 [N,28,28], got {im.dtype} {list(im.shape)}")
    if len(im) != len(lb):
        raise ArtifactError(f"split {name}: {len(im)} images but {len(lb)} labels")
    _ensure_labels(f"split {name}", lb)


def _ensure_labels(name: str, labels: np.ndarray) -> None:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ArtifactError(f"{name}: labels must be integer [N], got {labels.dtype} {list(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ArtifactError(f"{name}: labels must be in 0..9, found {int(labels.min())}..{int(labels.max())}")


def write_dataset(folder: Path, splits: dict[str, Split], producer: Producer, meta: dict[str, Any]) -> Manifest:
    """Publish the splits atomically with a manifest holding `meta` plus counts per class."""
    for name, split in splits.items():
        check_split(name, split)
    with publish(folder, DATASET_KIND, producer) as staging:
        counts = {}
        for name, split in splits.items():
            (staging.path / name).mkdir()
            np.save(staging.path / name / "images.npy", np.ascontiguousarray(split.images))
            np.save(staging.path / name / "labels.npy", split.labels.astype(np.int64))
            counts[name] = class_counts(split.labels)
        staging.meta.update(meta)
        staging.meta["counts"] = counts
        staging.meta["sizes"] = {name: len(split) for name, split in splits.items()}
    assert staging.manifest is not None
    return staging.manifest


def load_array(folder: Path, manifest: Manifest, rel: str, mmap: bool = False) -> np.ndarray:
    """Verify one listed .npy file and load it (never with pickle)."""
    path = verify_file(folder, manifest, rel)
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        raise ArtifactError(f"{path}: not a readable .npy array ({e})") from None


def _load_split(folder: Path, manifest: Manifest, name: str, mmap: bool) -> Split:
    if f"{name}/images.npy" not in manifest.files or f"{name}/labels.npy" not in manifest.files:
        raise ArtifactError(f"{Path(folder) / name}: the data set has no complete {name!r} split")
    split = Split(
        load_array(folder, manifest, f"{name}/images.npy", mmap),
        load_array(folder, manifest, f"{name}/labels.npy", mmap),
    )
    try:
        check_split(name, split)
    except ArtifactError as e:
        raise ArtifactError(f"{Path(folder) / name}: {e}") from None
    return split


def read_dataset(folder: Path, mmap: bool = False) -> tuple[Manifest, dict[str, Split]]:
    """Verify the data set's manifest and checksums, load and contract-check every split."""
    manifest = read_manifest(folder, DATASET_KIND)
    names = sorted({rel.split("/")[0] for rel in manifest.files})
    return manifest, {name: _load_split(folder, manifest, name, mmap) for name in names}


def read_split(folder: Path, name: str, mmap: bool = False) -> tuple[Manifest, Split]:
    """One verified split of a data set (only its own files are hashed)."""
    manifest = read_manifest(folder, DATASET_KIND)
    return manifest, _load_split(folder, manifest, name, mmap)
