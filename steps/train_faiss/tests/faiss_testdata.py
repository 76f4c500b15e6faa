"""Test data: unit vectors, clustered or not, and the step's command line."""

from __future__ import annotations

import numpy as np

from mnist_ct.artifacts import Embeddings, RunPaths


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    """Unclustered unit vectors: the hard case for approximate search."""
    return unit_rows(np.random.default_rng(seed).normal(size=(n, dim)))


def clustered(per_class: int, dim: int, seed: int, noise: float = 0.05) -> Embeddings:
    """Ten well-separated clusters of unit vectors, one per digit class."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(np.random.default_rng(1234).normal(size=(10, dim)))
    labels = np.repeat(np.arange(10), per_class)
    vectors = unit_rows(centres[labels] + noise * rng.normal(size=(len(labels), dim)))
    return Embeddings(vectors, labels.astype(np.int64))


def run_args(paths: RunPaths, *extra: str) -> list[str]:
    return ["--run-id", paths.run_id, "--model-root", str(paths.model_root), "--threads", "1", *extra]
