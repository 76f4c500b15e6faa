"""Embeddings artifacts written through the real contract (mnist_ct.artifacts), FAISS on one thread.

The shared fixtures (full_volume, read_only_volume, tmpfs_volume, run_args) come from the
mnist_ct.artifacts.testing plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest

from mnist_ct.artifacts import Embeddings, Producer, RunPaths, publish, write_embeddings

RUN_ID = "t1"


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> None:
    faiss.omp_set_num_threads(1)


@pytest.fixture
def paths(tmp_path: Path) -> RunPaths:
    return RunPaths(RUN_ID, tmp_path / "data", tmp_path / "model", tmp_path / "deploy")


@pytest.fixture
def write_run(paths: RunPaths) -> Callable[[Embeddings, Embeddings], RunPaths]:
    """Publish gallery (train) and queries (test) as the run's embeddings artifact."""

    def write(gallery: Embeddings, queries: Embeddings) -> RunPaths:
        write_embeddings(
            paths.embeddings,
            {"train": gallery, "test": queries},
            Producer("embedding", "0.1.0"),
            inputs={},
            meta={},
        )
        return paths

    return write


@pytest.fixture
def write_raw_embeddings(paths: RunPaths) -> Callable[..., RunPaths]:
    """Publish arrays that break the contract, bypassing write_embeddings's own checks."""

    def write(train: np.ndarray, test: np.ndarray | None) -> RunPaths:
        with publish(paths.embeddings, "embeddings", Producer("embedding", "0.1.0")) as staging:
            for name, vectors in (("train", train), ("test", test)):
                if vectors is not None:
                    np.save(staging.path / f"{name}.npy", vectors)
                    np.save(staging.path / f"{name}_labels.npy", np.arange(len(vectors), dtype=np.int64) % 10)
        return paths

    return write
