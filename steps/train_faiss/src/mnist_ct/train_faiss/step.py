"""The step, top to bottom: read the embeddings, build and measure the index, publish it."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from mnist_ct.artifacts import (
    MAX_THREADS,
    ArtifactError,
    Log,
    Producer,
    RunPaths,
    UsageError,
    os_errors_named,
    publish,
    read_embeddings,
    thread_count,
)

from .factory import FactorySpec, check_factory
from .index import METRIC, RECALL_KS, BuiltIndex, build_index, recall_at

STEP = "train_faiss"
INDEX_KIND = "index"
GALLERY, QUERIES = "train", "test"
MAX_EF_SEARCH = 4096  # HNSW's search beam; beyond a few hundred it only costs time


@dataclass(frozen=True)
class Options:
    index: str = "Flat"  # a factory string (factory.py says which)
    nprobe: int | None = None  # IVF only; default about sqrt(nlist)
    ef_search: int | None = None  # HNSW only; default 64
    threads: int = 0  # FAISS (OpenMP) threads; 0: every core this process may use
    factory: FactorySpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.threads <= MAX_THREADS:
            raise UsageError(f"--threads {self.threads}: give 0..{MAX_THREADS} (0: every core this process may use)")
        spec = check_factory(self.index)
        object.__setattr__(self, "factory", spec)
        if self.nprobe is not None:
            if spec.lists is None:
                raise UsageError(f"--nprobe applies to IVF indexes only; --index {spec.text} has no inverted lists")
            if not 1 <= self.nprobe <= spec.lists:
                raise UsageError(
                    f"--nprobe {self.nprobe}: --index {spec.text} has {spec.lists} lists; give 1..{spec.lists}"
                )
        if self.ef_search is not None:
            if spec.hnsw_m is None:
                raise UsageError(f"--ef-search applies to HNSW indexes only; --index {spec.text} has no HNSW graph")
            if not 1 <= self.ef_search <= MAX_EF_SEARCH:
                raise UsageError(f"--ef-search {self.ef_search}: give 1..{MAX_EF_SEARCH}")


def describe(built: BuiltIndex, dim: int, recalls: dict[int, float], ms_per_query: float, n_queries: int) -> dict:
    """What index.json (and the manifest's meta) say about the index."""
    return {
        "factory": built.spec.text,
        "metric": METRIC,
        "faiss_class": type(built.index).__name__,
        "faiss_version": faiss.__version__,
        "dim": dim,
        "size": int(built.index.ntotal),
        "search_params": built.search_params,
        "build_seconds": round(built.build_seconds, 4),
        "recall_queries": n_queries,
        **{f"recall_at_{k}": recalls[k] for k in RECALL_KS},
        "search_ms_per_query": round(ms_per_query, 4),
        "recall_definition": (
            "fraction of queries for which one of the index's first k results is the exact "
            "(IndexFlatIP) nearest gallery vector, or one exactly as close"
        ),
    }


def run(paths: RunPaths, options: Options, log: Log) -> None:
    """Build the index over the train-split embeddings, measure it on the test split, publish it."""
    faiss.omp_set_num_threads(thread_count(options.threads))
    source, splits = read_embeddings(paths.embeddings)
    for name in (GALLERY, QUERIES):
        if name not in splits:
            raise ArtifactError(
                f"{paths.embeddings}: no {name!r} split (has {sorted(splits)}); rerun the embedding step"
            )
    gallery, queries = splits[GALLERY], splits[QUERIES]
    if gallery.vectors.shape[1] != queries.vectors.shape[1]:
        raise ArtifactError(
            f"{paths.embeddings}: train and test embeddings differ in dimension "
            f"({gallery.vectors.shape[1]} vs {queries.vectors.shape[1]}); rerun the embedding step"
        )
    dim = int(gallery.vectors.shape[1])
    with log.work():  # building the index (timing.py: the step's own work)
        built = build_index(np.asarray(gallery.vectors), options.factory, options.nprobe, options.ef_search)
    for line in built.warnings:
        log(f"faiss: {line}")
    recalls, ms_per_query = recall_at(built.index, np.asarray(gallery.vectors), np.asarray(queries.vectors))
    info = describe(built, dim, recalls, ms_per_query, len(queries))
    info["embeddings_manifest"] = source.digest

    with publish(paths.index, INDEX_KIND, Producer.of(STEP), inputs={"embeddings": source.digest}) as staging:
        # Through Python's own writes: faiss.write_index's errors lose the errno (a full disk is "write error").
        write_file(staging.path / "index.faiss", faiss.serialize_index(built.index).tobytes())
        write_file(staging.path / "labels.npy", npy_bytes(np.asarray(gallery.labels, dtype=np.int64)))
        write_file(staging.path / "index.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())
        staging.meta.update(_summary(info))
    log(
        f"index {built.spec.text} ({info['faiss_class']}): {info['size']} vectors of dim {dim}, "
        f"built in {built.build_seconds:.2f} s, recall@1 {recalls[1]:.4f}, recall@10 {recalls[10]:.4f} "
        f"on {len(queries)} queries -> {paths.index}"
    )


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path`; an OS error names the path (a failed write() alone does not say which file)."""
    with os_errors_named(path), open(path, "wb") as f:
        f.write(data)


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("factory", "metric", "dim", "size", "search_params", "build_seconds", "recall_at_1", "recall_at_10")
    return {k: info[k] for k in keys}
