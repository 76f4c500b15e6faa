"""Our numpy metrics against scikit-learn's (a test dependency only): the same numbers, to the last bit."""

from __future__ import annotations

import json
from typing import Any

import faiss
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from mnist_ct.analysis.classify import UNANSWERED, predicted_labels, search
from mnist_ct.analysis.metrics import CLASSES, Evaluation, evaluate
from mnist_ct.artifacts.testing import mnist5k


def _reference(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """What analysis computed with scikit-learn before it went numpy-only (the same calls, the same arguments)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=CLASSES, average=None, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "confusion": confusion_matrix(y_true, y_pred, labels=CLASSES).astype(np.int64),
        "precision": np.asarray(precision, dtype=np.float64),
        "recall": np.asarray(recall, dtype=np.float64),
        "f1": np.asarray(f1, dtype=np.float64),
        "support": np.asarray(support, dtype=np.int64),
    }


def _assert_same_as_scikit_learn(ev: Evaluation) -> None:
    ref = _reference(ev.y_true, ev.y_pred)
    assert ev.accuracy == ref["accuracy"]
    for name in ("confusion", "precision", "recall", "f1", "support"):
        ours = getattr(ev, name)
        assert ours.dtype == ref[name].dtype, name
        np.testing.assert_array_equal(ours, ref[name], err_msg=name)
    # The files: byte for byte what the scikit-learn figures gave.
    before = Evaluation(ev.y_true, ev.y_pred, **ref)
    assert json.dumps(ev.per_class()) == json.dumps(before.per_class())
    assert json.dumps(ev.macro()) == json.dumps(before.macro())
    assert ev.confusion.tolist() == before.confusion.tolist()


def _real_digit_vectors(per_class: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits as unit vectors of their pixels: a k-NN on them makes real, uneven mistakes."""
    digits = mnist5k()
    idx = np.concatenate([np.flatnonzero(digits.labels == c)[skip : skip + per_class] for c in CLASSES])
    x = digits.images[idx].reshape(len(idx), -1).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), digits.labels[idx].astype(np.int64)


@pytest.mark.parametrize(("k", "vote"), [(1, "majority"), (5, "majority"), (7, "distance")])
def test_the_figures_on_real_digits_are_scikit_learns(k, vote):
    gallery, gallery_y = _real_digit_vectors(60)
    queries, queries_y = _real_digit_vectors(40, skip=60)
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery)

    ev = evaluate(queries_y, predicted_labels(search(index, gallery_y, queries, k), vote))

    assert 0.6 < ev.accuracy < 1.0 and len(set(ev.recall.tolist())) > 3  # real, uneven errors
    _assert_same_as_scikit_learn(ev)


def test_random_predictions_are_scored_like_scikit_learn():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        y_true = rng.integers(0, 10, n)
        y_pred = np.where(rng.random(n) < 0.1, UNANSWERED, rng.integers(0, 10, n))
        _assert_same_as_scikit_learn(evaluate(y_true, y_pred))


EDGE_CASES = {
    "a class never predicted": ([0, 1, 2, 2, 3], [0, 1, 1, 1, 3]),
    "a class absent from the test split": ([0, 0, 1, 1], [0, 5, 1, 1]),
    "one class only, all right": ([4, 4, 4], [4, 4, 4]),
    "one class only, all wrong": ([4, 4, 4], [2, 3, 2]),
    "unanswered queries": ([0, 1, 1, 2], [0, UNANSWERED, 1, UNANSWERED]),
    "nothing answered": ([3, 6], [UNANSWERED, UNANSWERED]),
    "one query": ([9], [9]),
}


@pytest.mark.parametrize(("y_true", "y_pred"), EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_edge_cases_are_scored_like_scikit_learn(y_true, y_pred):
    ev = evaluate(np.array(y_true), np.array(y_pred))
    _assert_same_as_scikit_learn(ev)


def test_zero_division_gives_0_as_it_did():
    ev = evaluate(np.array([0, 0, 1, 1]), np.array([0, 5, 1, 1]))
    # 5 is predicted but absent: precision 0, recall 0 (no support), F1 0; 2 is neither: all 0.
    assert (ev.precision[5], ev.recall[5], ev.f1[5], ev.support[5]) == (0.0, 0.0, 0.0, 0)
    assert (ev.precision[2], ev.recall[2], ev.f1[2]) == (0.0, 0.0, 0.0)
    assert ev.macro() == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": (2 / 3 + 1.0) / 2})


def test_no_queries_score_0_without_a_warning():
    with np.errstate(all="raise"):
        ev = evaluate(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert ev.accuracy == 0.0 and not ev.confusion.any() and not ev.support.any()
    assert ev.macro() == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
