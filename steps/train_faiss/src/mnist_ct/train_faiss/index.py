"""Build a FAISS index over unit-length embeddings and measure it against exact search.

Plain functions over numpy arrays; files are read and written in `step.py`, factory strings parsed
and checked in `factory.py`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import faiss
import numpy as np

from mnist_ct.artifacts import UsageError

from .factory import FactorySpec, default_nprobe, faiss_reason

METRIC = "inner_product"
DEFAULT_EF_SEARCH = 64
RECALL_KS = (1, 10)
# Recomputed inner products of the same pair differ by float rounding only; a neighbour this close
# to the exact nearest one is as good as it (ties are not misses).
TIE_TOLERANCE = 1e-5


@contextlib.contextmanager
def native_stderr(lines: list[str]) -> Iterator[None]:
    """Collect what FAISS's C++ code prints to stderr (one warning per sub-quantizer) into `lines`."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if line.strip() and line.strip() not in lines:
                    lines.append(line.strip())


def make_index(spec: FactorySpec, dim: int) -> faiss.Index:
    """An empty inner-product index; a string FAISS refuses for this dimension is a UsageError."""
    try:
        return faiss.index_factory(dim, spec.text, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UsageError(f"--index {spec.text}: FAISS cannot make it for dimension {dim} ({faiss_reason(e)})") from None


def search_params(spec: FactorySpec, nprobe: int | None, ef_search: int | None) -> dict[str, int]:
    """The search-time parameters of `spec`: the ones given, else nprobe about sqrt(nlist), efSearch 64."""
    params: dict[str, int] = {}
    if spec.lists is not None:
        params["nprobe"] = nprobe if nprobe is not None else default_nprobe(spec.lists)
    if spec.hnsw_m is not None:
        params["efSearch"] = ef_search if ef_search is not None else DEFAULT_EF_SEARCH
    return params


def apply_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Set them on the index (they are saved with it)."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


@dataclass
class BuiltIndex:
    index: faiss.Index
    spec: FactorySpec
    build_seconds: float
    search_params: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def build_index(
    gallery: np.ndarray, spec: FactorySpec, nprobe: int | None = None, ef_search: int | None = None
) -> BuiltIndex:
    """Train (when the index type needs it) and fill an inner-product index with `gallery`.

    `spec.check_fits` has refused what depends on the data; a FAISS error left is still one UsageError.
    """
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    spec.check_fits(gallery.shape[1], len(gallery))
    index = make_index(spec, gallery.shape[1])
    params = search_params(spec, nprobe, ef_search)
    apply_search_params(index, params)
    warnings: list[str] = []
    start = time.perf_counter()
    try:
        with native_stderr(warnings):
            if not index.is_trained:
                index.train(gallery)
            index.add(gallery)
    except RuntimeError as e:
        raise UsageError(
            f"--index {spec.text} cannot be built over {len(gallery)} gallery vectors of dimension "
            f"{gallery.shape[1]}: {faiss_reason(e)}"
        ) from None
    seconds = time.perf_counter() - start
    return BuiltIndex(index, spec, seconds, params, warnings)


def exact_neighbours(gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-1 (score, id) of every query by brute-force inner product (IndexFlatIP)."""
    exact = faiss.IndexFlatIP(gallery.shape[1])
    exact.add(np.ascontiguousarray(gallery, dtype=np.float32))
    scores, ids = exact.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return scores[:, 0], ids[:, 0]


def recall_at(
    index: faiss.Index, gallery: np.ndarray, queries: np.ndarray, ks: tuple[int, ...] = RECALL_KS
) -> tuple[dict[int, float], float]:
    """Recall@k of `index` against exact search, and its search time per query in milliseconds.

    Recall@k is the fraction of queries for which one of the index's first k results is the exact
    nearest gallery vector (or one exactly as close: ties are not misses). Scores are recomputed
    exactly, so an index that stores compressed vectors gains nothing from its approximate scores.
    """
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_score, _ = exact_neighbours(gallery, queries)
    k_max = min(max(ks), len(gallery))
    start = time.perf_counter()
    _, ids = index.search(queries, k_max)
    ms_per_query = (time.perf_counter() - start) * 1000.0 / max(len(queries), 1)
    found = ids >= 0
    scores = np.einsum("qkd,qd->qk", gallery[np.where(found, ids, 0)], queries)
    hits = found & (scores >= best_score[:, None] - TIE_TOLERANCE)
    recalls = {k: float(hits[:, : min(k, k_max)].any(axis=1).mean()) for k in ks}
    return recalls, ms_per_query
