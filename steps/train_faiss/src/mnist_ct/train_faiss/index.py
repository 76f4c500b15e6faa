"""Build a FAISS index over unit-length embeddings and measure it against exact search.

Pure functions over numpy arrays; files are read and written in `step.py`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import faiss
import numpy as np

from mnist_ct.artifacts import UsageError

METRIC = "inner_product"
DEFAULT_EF_SEARCH = 64
RECALL_KS = (1, 10)
# Recomputed inner products of the same pair differ by float rounding only; a neighbour this close
# to the exact nearest one is as good as it (ties are not misses).
TIE_TOLERANCE = 1e-5

_FAISS_REASON = re.compile(r"at \S+:\d+: (?:Error: '.*?' failed: )?(.*)$", re.DOTALL)


def faiss_reason(err: BaseException) -> str:
    """The human part of a FAISS C++ exception message, on one line."""
    text = str(err).strip()
    match = _FAISS_REASON.search(text)
    reason = match.group(1) if match else text
    return " ".join(reason.split())


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


def make_index(spec: str, dim: int) -> faiss.Index:
    """An empty index from a factory string, inner-product metric; a bad string is a UsageError."""
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UsageError(
            f"--index {spec!r} is not a FAISS factory string faiss can build for dimension {dim} "
            f"({faiss_reason(e)}); try Flat, HNSW32, IVF64,Flat or IVF64,PQ8"
        ) from None


def ivf_lists(index: faiss.Index) -> int | None:
    """Number of inverted lists of an IVF index (also inside a pre-transform), else None."""
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        return None


def _set(index: faiss.Index, name: str, value: int) -> bool:
    try:
        faiss.ParameterSpace().set_index_parameter(index, name, value)
    except RuntimeError:
        return False
    return True


def set_search_params(index: faiss.Index, spec: str, nprobe: int | None, ef_search: int | None) -> dict[str, int]:
    """Apply the search-time parameters that fit the index; they are saved with it.

    Defaults: nprobe about sqrt(nlist) for IVF indexes, efSearch 64 for HNSW. A parameter given
    explicitly that the index does not have is a UsageError.
    """
    applied: dict[str, int] = {}
    nlist = ivf_lists(index)
    if nprobe is not None or nlist is not None:
        value = nprobe if nprobe is not None else max(1, round(math.sqrt(nlist or 1)))
        if nlist is not None:
            value = min(value, nlist)
        if _set(index, "nprobe", value):
            applied["nprobe"] = value
        elif nprobe is not None:
            raise UsageError(f"--nprobe applies to IVF indexes only; --index {spec!r} has no inverted lists")
    value = ef_search if ef_search is not None else DEFAULT_EF_SEARCH
    if _set(index, "efSearch", value):
        applied["efSearch"] = value
    elif ef_search is not None:
        raise UsageError(f"--ef-search applies to HNSW indexes only; --index {spec!r} has no HNSW graph")
    return applied


@dataclass
class BuiltIndex:
    index: faiss.Index
    spec: str
    build_seconds: float
    search_params: dict[str, int]
    warnings: list[str] = field(default_factory=list)


def build_index(gallery: np.ndarray, spec: str, nprobe: int | None = None, ef_search: int | None = None) -> BuiltIndex:
    """Train (when the index type needs it) and fill an inner-product index with `gallery`."""
    spec = spec.strip()
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    index = make_index(spec, gallery.shape[1])
    params = set_search_params(index, spec, nprobe, ef_search)
    warnings: list[str] = []
    start = time.perf_counter()
    try:
        with native_stderr(warnings):
            if not index.is_trained:
                index.train(gallery)
            index.add(gallery)
    except RuntimeError as e:
        raise UsageError(
            f"--index {spec!r} cannot be built over {len(gallery)} gallery vectors of dimension "
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
