"""The one k-NN vote (analysis and the serving handler both call it)."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_ct.artifacts.knn import knn_vote
from mnist_ct.artifacts.testing import KNN_VOTE_CASES


@pytest.mark.parametrize(("labels", "scores", "vote", "label", "score"), KNN_VOTE_CASES)
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
