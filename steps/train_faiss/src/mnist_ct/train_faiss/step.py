"""The step's edges: read the embeddings artifact, build and measure the index, publish it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from mnist_ct.artifacts import (
    ArtifactError,
    Log,
    Manifest,
    Producer,
    RunPaths,
    publish,
    read_embeddings,
    thread_count,
)

from .index import METRIC, RECALL_KS, BuiltIndex, build_index, recall_at

STEP = "train_faiss"
INDEX_KIND = "index"
GALLERY, QUERIES = "train", "test"


@dataclass
class Options:
    index: str = "Flat"
    nprobe: int | None = None
    ef_search: int | None = None
    threads: int = 0  # 0: FAISS's own default (every core OpenMP sees)


def describe(built: BuiltIndex, dim: int, recalls: dict[int, float], ms_per_query: float, n_queries: int) -> dict:
    """What index.json (and the manifest's meta) say about the index."""
    return {
        "factory": built.spec,
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


def train_faiss(paths: RunPaths, options: Options, log: Log) -> Manifest:
    """Build the index over the train-split embeddings, measure it on the test split, publish it."""
    if options.threads > 0:
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
    built = build_index(np.asarray(gallery.vectors), options.index, options.nprobe, options.ef_search)
    for line in built.warnings:
        log(f"faiss: {line}")
    recalls, ms_per_query = recall_at(built.index, np.asarray(gallery.vectors), np.asarray(queries.vectors))
    info = describe(built, dim, recalls, ms_per_query, len(queries))
    info["embeddings_manifest"] = source.digest

    with publish(paths.index, INDEX_KIND, Producer.of(STEP), inputs={"embeddings": source.digest}) as staging:
        faiss.write_index(built.index, str(staging.path / "index.faiss"))
        np.save(staging.path / "labels.npy", np.asarray(gallery.labels, dtype=np.int64))
        (staging.path / "index.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        staging.meta.update(_summary(info))
    assert staging.manifest is not None
    log(
        f"index {built.spec} ({info['faiss_class']}): {info['size']} vectors of dim {dim}, "
        f"built in {built.build_seconds:.2f} s, recall@1 {recalls[1]:.4f}, recall@10 {recalls[10]:.4f} "
        f"on {len(queries)} queries -> {paths.index}"
    )
    return staging.manifest


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    keys = ("factory", "metric", "dim", "size", "search_params", "build_seconds", "recall_at_1", "recall_at_10")
    return {k: info[k] for k in keys}
