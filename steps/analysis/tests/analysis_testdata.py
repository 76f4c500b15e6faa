"""A tiny but complete run (real digits, model, embeddings, index), written through the real contract.

The query embeddings sit on ten well-separated clusters, except for crafted queries moved onto
another class's centre: those, and only those, are misclassified, so the confusion matrix and the
accuracy are known exactly before analysis runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import faiss
import numpy as np

from mnist_ct.artifacts import (
    Embeddings,
    Producer,
    RunPaths,
    Split,
    publish,
    read_manifest,
    write_dataset,
    write_embeddings,
)
from mnist_ct.artifacts.testing import mnist5k
from mnist_ct.artifacts.testing import run_args as core_args

DIM = 16
GALLERY_PER_CLASS = 20
QUERIES_PER_CLASS = 5
# (true class, class whose centre the query is moved onto): the crafted errors.
CRAFTED_ERRORS = ((3, 5), (3, 8), (7, 1), (9, 4))


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def centres() -> np.ndarray:
    return unit_rows(np.random.default_rng(1234).normal(size=(10, DIM)))


def cluster_points(labels: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit_rows(centres()[labels] + noise * rng.normal(size=(len(labels), DIM)))


def real_digits(labels: np.ndarray, skip: int = 0) -> np.ndarray:
    """Real MNIST digits (the plugin's 5,000) with these labels, in order; the first `skip` of each class unused."""
    digits = mnist5k()
    images = np.empty((len(labels), 28, 28), dtype=np.uint8)
    for c in range(10):
        where = np.flatnonzero(labels == c)
        images[where] = digits.images[np.flatnonzero(digits.labels == c)[skip : skip + len(where)]]
    return images


@dataclass
class CraftedRun:
    paths: RunPaths
    gallery: Embeddings
    queries: Embeddings
    expected_confusion: np.ndarray
    crafted: list[int] = field(default_factory=list)  # query positions moved to another class

    @property
    def expected_accuracy(self) -> float:
        return float(np.trace(self.expected_confusion)) / len(self.queries)


def crafted_queries() -> tuple[Embeddings, np.ndarray, list[int]]:
    labels = np.repeat(np.arange(10), QUERIES_PER_CLASS).astype(np.int64)
    vectors = cluster_points(labels, seed=2)
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (labels, labels), 1)
    crafted: list[int] = []
    used: dict[int, int] = {}
    for true, wrong in CRAFTED_ERRORS:
        position = true * QUERIES_PER_CLASS + used.get(true, 0)
        used[true] = used.get(true, 0) + 1
        vectors[position] = cluster_points(np.array([wrong]), seed=100 + position, noise=0.02)[0]
        expected[true, true] -= 1
        expected[true, wrong] += 1
        crafted.append(position)
    return Embeddings(vectors, labels), expected, crafted


def write_dataset_artifact(paths: RunPaths, test_labels: np.ndarray, name: str = "synthetic") -> str:
    train_labels = np.repeat(np.arange(10), GALLERY_PER_CLASS).astype(np.int64)
    splits = {
        "train": Split(real_digits(train_labels), train_labels),
        "test": Split(real_digits(test_labels, skip=GALLERY_PER_CLASS), test_labels),
    }
    return write_dataset(paths.dataset, splits, Producer("preprocess", "0.1.0"), {"dataset": name}).digest


def write_model_artifact(paths: RunPaths, dataset_digest: str, note: str = "v1") -> str:
    with publish(paths.model, "model", Producer("train_model", "0.1.0"), inputs={"dataset": dataset_digest}) as s:
        (s.path / "model.json").write_text(json.dumps({"embedding_dim": DIM, "note": note}))
    assert s.manifest is not None
    return s.manifest.digest


def write_embeddings_artifact(paths: RunPaths, gallery: Embeddings, queries: Embeddings, inputs: dict) -> str:
    manifest = write_embeddings(
        paths.embeddings, {"train": gallery, "test": queries}, Producer("embedding", "0.1.0"), inputs, {}
    )
    return manifest.digest


def write_index_artifact(
    paths: RunPaths, vectors: np.ndarray, labels: np.ndarray, spec: str = "Flat", nprobe: int | None = None
) -> str:
    """An index artifact as train_faiss publishes it (built here so analysis tests stand alone)."""
    index = faiss.index_factory(vectors.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    if nprobe is not None:
        faiss.extract_index_ivf(index).nprobe = nprobe
    info = {"factory": spec, "metric": "inner_product", "size": int(index.ntotal), "dim": int(vectors.shape[1])}
    info.update({"search_params": {}, "build_seconds": 0.01, "recall_at_1": 1.0, "recall_at_10": 1.0})
    embeddings = read_manifest(paths.embeddings).digest
    with publish(paths.index, "index", Producer("train_faiss", "0.1.0"), inputs={"embeddings": embeddings}) as s:
        faiss.write_index(index, str(s.path / "index.faiss"))
        np.save(s.path / "labels.npy", labels.astype(np.int64))
        (s.path / "index.json").write_text(json.dumps(info))
    assert s.manifest is not None
    return s.manifest.digest


def write_crafted_run(paths: RunPaths) -> CraftedRun:
    gallery_labels = np.repeat(np.arange(10), GALLERY_PER_CLASS).astype(np.int64)
    gallery = Embeddings(cluster_points(gallery_labels, seed=1), gallery_labels)
    queries, expected, crafted = crafted_queries()
    dataset = write_dataset_artifact(paths, queries.labels)
    model = write_model_artifact(paths, dataset)
    write_embeddings_artifact(paths, gallery, queries, {"dataset": dataset, "model": model})
    write_index_artifact(paths, gallery.vectors, gallery.labels)
    return CraftedRun(paths, gallery, queries, expected, crafted)


def run_args(paths: RunPaths, *extra: str) -> list[str]:
    """The core options of `paths` (quiet), one FAISS thread, then `extra`."""
    return [*core_args(paths), "--threads", "1", *extra]


def one_error_line(err: str) -> str:
    """The only line on stderr, which must be analysis's error line (no traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("analysis: error: "), lines[0]
    return lines[0]


def last_usage_line(err: str) -> str:
    """argparse's error line (after its usage lines); no traceback."""
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "error:" in line, line
    return line
