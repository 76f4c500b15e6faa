"""k-NN voting and the metrics, on arrays."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from mnist_ct.analysis.classify import UNANSWERED, Neighbours, predicted_labels, search
from mnist_ct.analysis.metrics import confusion_csv, evaluate
from mnist_ct.artifacts.knn import knn_vote
from mnist_ct.artifacts.testing import KNN_VOTE_CASES


def _neighbours(labels: list[int], scores: list[float]) -> Neighbours:
    """One query's neighbours, as search() returns them (ids -1 where FAISS found none)."""
    lab = np.array([labels], dtype=np.int64)
    return Neighbours(np.where(lab >= 0, 0, -1), np.array([scores], dtype=np.float32), lab)


@pytest.mark.parametrize(("labels", "scores", "vote", "label", "score"), KNN_VOTE_CASES)
def test_the_vote_table(labels, scores, vote, label, score):
    """The one table of vote cases (the serving handler is checked against the same rows)."""
    neighbours = _neighbours(labels, scores)
    assert predicted_labels(neighbours, vote).tolist() == [label]
    voted, best = knn_vote(neighbours.labels, neighbours.scores, vote)
    assert (voted.tolist(), best.tolist()) == ([label], pytest.approx([score], abs=1e-6))


def _noisy_clusters(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(10, 12))
    train_y, test_y = rng.integers(0, 10, 400), rng.integers(0, 10, 150)
    train = centres[train_y] + 1.2 * rng.normal(size=(400, 12))
    test = centres[test_y] + 1.2 * rng.normal(size=(150, 12))
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(train), train_y.astype(np.int64), unit(test), test_y.astype(np.int64)


@pytest.mark.parametrize("k", [1, 5, 9])
def test_the_distance_vote_agrees_with_scikit_learn(k):
    train, train_y, test, _ = _noisy_clusters(seed=k)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)

    ours = predicted_labels(search(index, train_y, test, k), "distance")

    reference = KNeighborsClassifier(n_neighbors=k, weights="distance", algorithm="brute").fit(train, train_y)
    np.testing.assert_array_equal(ours, reference.predict(test))


@pytest.mark.parametrize("k", [1, 5, 9])
def test_the_majority_vote_agrees_with_scikit_learn_wherever_the_vote_is_not_tied(k):
    train, train_y, test, _ = _noisy_clusters(seed=10 + k)
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    neighbours = search(index, train_y, test, k)
    counts = np.stack([np.bincount(row, minlength=10) for row in neighbours.labels])
    untied = (counts == counts.max(axis=1, keepdims=True)).sum(axis=1) == 1

    ours = predicted_labels(neighbours, "majority")

    reference = KNeighborsClassifier(n_neighbors=k, weights="uniform", algorithm="brute").fit(train, train_y)
    assert untied.sum() > 100
    np.testing.assert_array_equal(ours[untied], reference.predict(test)[untied])


def test_an_unanswered_query_is_an_error_without_a_confusion_column():
    ev = evaluate(np.array([0, 1, 1, 2]), np.array([0, 1, UNANSWERED, 2]))
    assert ev.accuracy == 0.75
    assert (ev.errors, ev.unanswered) == (1, 1)
    assert ev.confusion[1].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert ev.recall[1] == 0.5


def test_macro_averages_cover_only_the_classes_present():
    ev = evaluate(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert ev.macro()["recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert ev.macro()["precision"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_confusion_csv_has_a_header_and_one_row_per_true_class():
    matrix = np.arange(100).reshape(10, 10)
    lines = confusion_csv(matrix).splitlines()
    assert lines[0] == "true\\predicted,0,1,2,3,4,5,6,7,8,9"
    assert lines[4] == "3," + ",".join(str(v) for v in range(30, 40))
    assert len(lines) == 11
