"""The one k-NN vote (analysis and the serving handler both call it)."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_ct.artifacts.knn import UNANSWERED, knn_vote

# (neighbour labels nearest first, their inner products, vote) -> (label, score)
CASES = [
    ([3], [0.9], "majority", 3, 0.9),
    ([3, 5, 5], [0.9, 0.8, 0.7], "majority", 5, 0.8),  # two votes beat the nearest one
    ([2, 1], [0.9, 0.9], "majority", 2, 0.9),  # a tie goes to the nearest
    ([1, 2, 2, 1], [0.9, 0.8, 0.7, 0.6], "majority", 1, 0.9),  # tied classes: the one met first
    ([4, 7, 7], [0.99, 0.5, 0.5], "distance", 4, 0.99),  # one very near neighbour outweighs two far ones
    ([2, -1, -1], [0.9, 0.0, 0.0], "majority", 2, 0.9),  # -1: FAISS found no neighbour there
    ([-1, -1], [0.0, 0.0], "distance", UNANSWERED, 0.0),
]


@pytest.mark.parametrize(("labels", "scores", "vote", "label", "score"), CASES)
def test_the_vote_table(labels, scores, vote, label, score):
    predicted, best = knn_vote(np.array([labels]), np.array([scores], dtype=np.float32), vote)
    assert predicted.tolist() == [label]
    assert best.tolist() == pytest.approx([score], abs=1e-6)


def test_a_batch_votes_row_by_row_as_one_at_a_time():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 10, (200, 5))
    scores = -np.sort(-rng.random((200, 5)).astype(np.float32), axis=1)
    for vote in ("majority", "distance"):
        batch, batch_scores = knn_vote(labels, scores, vote)
        one = [knn_vote(labels[i : i + 1], scores[i : i + 1], vote) for i in range(200)]
        assert batch.tolist() == [int(p[0][0]) for p in one]
        assert batch_scores.tolist() == [float(p[1][0]) for p in one]


def test_an_unknown_vote_is_refused():
    with pytest.raises(ValueError, match="unknown vote"):
        knn_vote(np.array([[1]]), np.array([[0.5]]), "median")
