"""Small data sets of real digits (the built-in mnist-5k) on disk: good ones through the contract, broken ones
published around it (a valid manifest around arrays the contract would refuse)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_ct.artifacts import Producer, RunPaths, Split, class_counts, pixel_stats, publish, write_dataset
from mnist_ct.artifacts.testing import mnist5k, take

PRODUCER = Producer("preprocess", "0.1.0")
Arrays = tuple[np.ndarray, np.ndarray]


def digits(per_class: int, skip: int = 0) -> Arrays:
    """`per_class` real digits of every class (uint8 [N,28,28], int64 labels), after skipping `skip` of each."""
    split = take(mnist5k(), per_class, skip)
    return split.images.copy(), split.labels.copy()


def good_splits(train_per_class: int = 20, test_per_class: int = 5) -> dict[str, Arrays]:
    """Disjoint train and test digits: 200 and 50 by default."""
    return {"train": digits(train_per_class), "test": digits(test_per_class, skip=train_per_class)}


def write_good(data_root: Path, run_id: str = "r1", **sizes: int) -> Path:
    """A data set as preprocess publishes it (with pixel_stats), through the contract."""
    folder = RunPaths(run_id, data_root).dataset
    splits = {name: Split(x, y) for name, (x, y) in good_splits(**sizes).items()}
    meta = {"dataset": "mnist-5k", "pixel_stats": {name: pixel_stats(s.images) for name, s in splits.items()}}
    write_dataset(folder, splits, PRODUCER, meta)
    return folder


def write_raw(data_root: Path, splits: dict[str, Arrays], run_id: str = "r1", meta: object = None) -> Path:
    """Publish arrays as they are; `meta` (default: the class counts) is the manifest's meta, whatever it is."""
    folder = RunPaths(run_id, data_root).dataset
    with publish(folder, "dataset", PRODUCER) as staging:
        for name, (images, labels) in splits.items():
            (staging.path / name).mkdir()
            np.save(staging.path / name / "images.npy", images)
            np.save(staging.path / name / "labels.npy", labels)
        staging.meta["counts"] = {
            name: class_counts(labels[(labels >= 0) & (labels < 10)])
            for name, (_, labels) in splits.items()
            if labels.dtype.kind in "iu" and labels.ndim == 1
        }
        if meta is not None:
            staging.meta = meta  # type: ignore[assignment]  # a hand-made manifest: anything may be there
    return folder
