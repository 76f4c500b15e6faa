"""Tiny data sets on disk: good ones through the contract, broken ones published around it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_ct.artifacts import Producer, RunPaths, Split, class_counts, publish, write_dataset

PRODUCER = Producer("preprocess", "0.1.0")


def digits(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sparse images (about 15% bright pixels: MNIST-like statistics) and balanced labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    bright = rng.random((len(labels), 28, 28)) < 0.15
    images = np.where(bright, rng.integers(128, 256, bright.shape), 0).astype(np.uint8)
    return images, labels.astype(np.int64)


def good_splits(train_per_class: int = 20, test_per_class: int = 5) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": digits(train_per_class, 1), "test": digits(test_per_class, 2)}


def stats(images: np.ndarray) -> dict[str, float]:
    x = images.astype(np.float64) / 255
    return {"mean": round(float(x.mean()), 6), "std": round(float(x.std()), 6)}


def write_good(data_root: Path, run_id: str = "r1", **sizes: int) -> Path:
    folder = RunPaths(run_id, data_root).dataset
    splits = {name: Split(x, y) for name, (x, y) in good_splits(**sizes).items()}
    meta = {"dataset": "tiny", "pixel_stats": {name: stats(s.images) for name, s in splits.items()}}
    write_dataset(folder, splits, PRODUCER, meta)
    return folder


def write_raw(data_root: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], run_id: str = "r1") -> Path:
    """Publish arrays as they are (a valid manifest around data the contract would refuse)."""
    folder = RunPaths(run_id, data_root).dataset
    with publish(folder, "dataset", PRODUCER) as staging:
        for name, (images, labels) in splits.items():
            (staging.path / name).mkdir()
            np.save(staging.path / name / "images.npy", images)
            np.save(staging.path / name / "labels.npy", labels)
        staging.meta["counts"] = {
            name: class_counts(labels[(labels >= 0) & (labels < 10)])
            for name, (_, labels) in splits.items()
            if labels.dtype.kind in "iu"
        }
    return folder
