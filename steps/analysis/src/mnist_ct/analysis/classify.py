"""k-nearest-neighbour classification of the queries through the FAISS index.

The vote itself is mnist_ct.artifacts.knn.knn_vote, the one the serving handler uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from mnist_ct.artifacts.knn import UNANSWERED, VOTES, knn_vote

__all__ = ["UNANSWERED", "VOTES", "Neighbours", "predicted_labels", "search"]


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


def predicted_labels(neighbours: Neighbours, vote: str) -> np.ndarray:
    """The label each query gets from its neighbours' vote (knn_vote); UNANSWERED for a query with none."""
    labels, _ = knn_vote(neighbours.labels, neighbours.scores, vote)
    return labels
