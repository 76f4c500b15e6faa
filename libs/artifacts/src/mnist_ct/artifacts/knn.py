"""The k-nearest-neighbour vote: the one implementation analysis and the serving handler both use.

Imports nothing but numpy, so deploy can copy this file into a self-contained model archive.
"""

from __future__ import annotations

import numpy as np

VOTES = ("majority", "distance")
UNANSWERED = -1  # a query the index returned no neighbour for (possible with IVF and few probes)
NUM_CLASSES = 10
_MIN_DISTANCE = 1e-6


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


def knn_vote(labels: np.ndarray, scores: np.ndarray, vote: str) -> tuple[np.ndarray, np.ndarray]:
    """Label and score of each query from its k neighbours' labels and inner products [N,k], nearest first.

    The class with the largest total weight wins; a tie goes to the class of the nearest neighbour among
    the tied classes, so k=1 and every vote agree with the nearest neighbour. Labels of -1 (FAISS's "no
    neighbour") do not vote; a query with none gets UNANSWERED and score 0. The score is the best inner
    product among the neighbours of the winning class.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(len(labels), -1)
    scores = np.asarray(scores).reshape(labels.shape)
    n, k = labels.shape
    valid = (labels >= 0) & (labels < NUM_CLASSES)
    weights = np.where(valid, vote_weights(scores, vote), 0.0)
    totals = np.zeros((n, NUM_CLASSES), dtype=np.float64)
    first_rank = np.full((n, NUM_CLASSES), k, dtype=np.int64)
    rows = np.arange(n)
    for rank in range(k - 1, -1, -1):
        cls = np.where(valid[:, rank], labels[:, rank], 0)
        np.add.at(totals, (rows, cls), weights[:, rank])
        first_rank[rows[valid[:, rank]], cls[valid[:, rank]]] = rank
    # Largest total first; among equal totals the class whose first neighbour ranks highest.
    best = np.lexsort((first_rank, -totals), axis=1)[:, 0]
    answered = valid.any(axis=1)
    predicted = np.where(answered, best, UNANSWERED).astype(np.int64)
    own = valid & (labels == predicted[:, None])
    score = np.where(own, scores.astype(np.float64), -np.inf).max(axis=1, initial=-np.inf)
    return predicted, np.where(answered, score, 0.0)
