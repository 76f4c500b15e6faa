"""k-nearest-neighbour classification of the queries through the FAISS index."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from mnist_ct.artifacts import NUM_CLASSES

VOTES = ("majority", "distance")
UNANSWERED = -1  # a query the index returned no neighbour for (possible with IVF and few probes)
_MIN_DISTANCE = 1e-6


@dataclass
class Neighbours:
    ids: np.ndarray  # int64 [N,k]; -1 where the index found fewer than k
    scores: np.ndarray  # float32 [N,k]: inner products, best first
    labels: np.ndarray  # int64 [N,k]; -1 where ids is -1


def search(index: faiss.Index, gallery_labels: np.ndarray, queries: np.ndarray, k: int) -> Neighbours:
    """The k nearest gallery items of every query, with their labels."""
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    labels = np.where(ids >= 0, gallery_labels[np.maximum(ids, 0)], -1)
    return Neighbours(ids.astype(np.int64), scores, labels.astype(np.int64))


def vote_weights(scores: np.ndarray, vote: str) -> np.ndarray:
    """Weight of each neighbour: 1 for a majority vote; 1/(Euclidean distance) for a distance vote.

    On unit vectors the Euclidean distance is sqrt(2 - 2 * inner product), so the distance vote
    weighs neighbours as scikit-learn's KNeighborsClassifier(weights="distance") does.
    """
    if vote == "majority":
        return np.ones_like(scores, dtype=np.float64)
    if vote == "distance":
        distance = np.sqrt(np.clip(2.0 - 2.0 * scores.astype(np.float64), 0.0, None))
        return 1.0 / np.maximum(distance, _MIN_DISTANCE)
    raise ValueError(f"unknown vote {vote!r}; choose one of {VOTES}")


def predict(neighbours: Neighbours, vote: str) -> np.ndarray:
    """The label each query gets: the class with the largest vote, ties to the class met first.

    A tie (equal counts, or equal weight sums) goes to the class of the nearest neighbour among
    the tied classes, so k=1 and every vote agree with the nearest neighbour. A query with no
    neighbour at all gets UNANSWERED.
    """
    n, k = neighbours.labels.shape
    valid = neighbours.labels >= 0
    weights = np.where(valid, vote_weights(neighbours.scores, vote), 0.0)
    totals = np.zeros((n, NUM_CLASSES), dtype=np.float64)
    first_rank = np.full((n, NUM_CLASSES), k, dtype=np.int64)
    rows = np.arange(n)
    for rank in range(k - 1, -1, -1):
        cls = np.where(valid[:, rank], neighbours.labels[:, rank], 0)
        np.add.at(totals, (rows, cls), weights[:, rank])
        first_rank[rows[valid[:, rank]], cls[valid[:, rank]]] = rank
    # Largest total first; among equal totals the class whose first neighbour ranks highest.
    best = np.lexsort((first_rank, -totals), axis=1)[:, 0]
    return np.where(valid.any(axis=1), best, UNANSWERED).astype(np.int64)
