"""Test data: unit vectors, clustered or not, and the step's command line."""

from __future__ import annotations

import numpy as np

from mnist_ct.artifacts import Embeddings, RunPaths
from mnist_ct.artifacts.testing import run_args as core_args


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
    """The core options of `paths` (quiet), one FAISS thread, then `extra`."""
    return [*core_args(paths), "--threads", "1", *extra]


def one_error_line(err: str) -> str:
    """The only line on stderr, which must be train_faiss's error line (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("train_faiss: error: "), lines[0]
    return lines[0]


def last_usage_line(err: str) -> str:
    """argparse's error line (after its usage lines); no traceback."""
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "error:" in line, line
    return line
