"""Collect a data set's train/test splits from its files: the mnist-5k CSV (split here, stratified and
seeded) or the four idx files of an MNIST-format data set (the official splits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_ct.artifacts import ArtifactError, Split, UsageError, sha256_file
from mnist_ct.artifacts.mnist5k import read_mnist_csv

from .idx import read_idx_split
from .sources import IDX_DATASETS, MNIST_5K
from .split import limit_per_class, stratified_split

MNIST_5K_FILE = "mnist_5k.csv.gz"


def source_file_names(dataset: str) -> dict[str, str]:
    """role -> file name that a `--source` folder must hold for `dataset` (idx files also uncompressed)."""
    if dataset == MNIST_5K:
        return {"csv": MNIST_5K_FILE}
    return {role: f.name for role, f in IDX_DATASETS[dataset].files.items()}


def in_folder(folder: Path, name: str, uncompressed_too: bool) -> Path:
    """`folder/name` (or the same without .gz when `uncompressed_too`); ArtifactError naming what is missing."""
    candidates = [folder / name]
    if uncompressed_too and name.endswith(".gz"):
        candidates.append(folder / name.removesuffix(".gz"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
        if candidate.exists():
            raise ArtifactError(f"{candidate}: is a folder, not a file; the --source folder must hold the file itself")
    also = " (nor uncompressed)" if len(candidates) > 1 else ""
    raise ArtifactError(f"{folder / name}: not found{also}; the --source folder for this data set holds {name}")


def locate_in_folder(folder: Path, dataset: str) -> dict[str, Path]:
    """role -> path of every file `dataset` needs in the `--source` folder."""
    idx = dataset != MNIST_5K
    return {role: in_folder(folder, name, uncompressed_too=idx) for role, name in source_file_names(dataset).items()}


def file_records(files: list[Path]) -> dict[str, dict[str, Any]]:
    """name -> sha256 and size of each source file, for the manifest's `meta.source.files`."""
    return {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}


def split_would_be_empty(per_class: int, test_fraction: float) -> str | None:
    """Which split a class of `per_class` images leaves empty with `test_fraction` (as stratified_split rounds)."""
    n_test = int(round(per_class * test_fraction))
    if n_test == 0:
        return "test"
    if per_class - n_test == 0:
        return "train"
    return None


def mnist_5k_splits(csv: Path, limit: int | None, test_fraction: float, rng: np.random.Generator) -> dict[str, Split]:
    """The CSV's digits, at most `limit` per class, split stratified: `test_fraction` of every class to test."""
    pool = limit_per_class(read_mnist_csv(csv), limit, rng)
    train, test = stratified_split(pool, test_fraction, rng)
    for name, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise UsageError(
                f"the {name} split would be empty ({len(pool)} images, --test-fraction {test_fraction}); "
                "raise --limit-per-class or change --test-fraction"
            )
    return {"train": train, "test": test}


def idx_splits(located: dict[str, Path], limit: int | None, rng: np.random.Generator) -> dict[str, Split]:
    """The official train and test splits from the four idx files (role -> path), at most `limit` per class."""
    splits = {}
    for name in ("train", "test"):
        images_path, labels_path = located[f"{name}-images"], located[f"{name}-labels"]
        split = read_idx_split(images_path, labels_path)
        if len(split) == 0:
            raise ArtifactError(f"{images_path}: holds no images, so the {name} split would be empty")
        splits[name] = limit_per_class(split, limit, rng)
    return splits
