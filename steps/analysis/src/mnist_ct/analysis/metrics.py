"""Accuracy, per-class precision/recall/F1 and the confusion matrix (numpy only), and their files.

The figures are scikit-learn's (`accuracy_score`, `confusion_matrix(labels=0..9)`,
`precision_recall_fscore_support(labels=0..9, average=None, zero_division=0)`), computed the same way so
that they agree to the last bit (tests/test_metrics.py checks them against scikit-learn); scikit-learn
itself is only a test dependency, which keeps it (and scipy) out of the image and off the start-up path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from mnist_ct.artifacts import NUM_CLASSES

CLASSES = list(range(NUM_CLASSES))


@dataclass
class Evaluation:
    y_true: np.ndarray  # int64 [N]
    y_pred: np.ndarray  # int64 [N]; -1 for an unanswered query
    accuracy: float
    confusion: np.ndarray  # int64 [10,10]: rows true class, columns predicted class
    precision: np.ndarray  # float [10]
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray  # int64 [10]: queries per true class

    @property
    def errors(self) -> int:
        return int(np.sum(self.y_true != self.y_pred))

    @property
    def unanswered(self) -> int:
        return int(np.sum(self.y_pred < 0))

    def macro(self) -> dict[str, float]:
        """Unweighted means over the classes present among the queries."""
        present = self.support > 0
        if not present.any():
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        return {
            "precision": float(self.precision[present].mean()),
            "recall": float(self.recall[present].mean()),
            "f1": float(self.f1[present].mean()),
        }

    def per_class(self) -> dict[str, dict[str, float | int]]:
        return {
            str(c): {
                "precision": float(self.precision[c]),
                "recall": float(self.recall[c]),
                "f1": float(self.f1[c]),
                "support": int(self.support[c]),
            }
            for c in CLASSES
        }


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> Evaluation:
    """Score predictions against the true labels over the ten digit classes.

    An unanswered query (-1) counts as an error in the accuracy and the recall of its class; it has
    no column in the confusion matrix, so that row sums to less than the class's support.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    tp, predicted, support = _counts(y_true, y_pred)
    # scikit-learn's formulas with zero_division=0: F1 = 2 tp / (support + predicted), not 2PR / (P + R).
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2.0 * tp, support.astype(np.float64) + predicted)
    return Evaluation(
        y_true=y_true,
        y_pred=y_pred,
        accuracy=float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        confusion=confusion_matrix(y_true, y_pred),
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
    )


def _known(labels: np.ndarray) -> np.ndarray:
    return labels[(labels >= 0) & (labels < NUM_CLASSES)]


def _counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: true positives, predictions of it, and queries of it (support); int64 [10] each."""
    tp = np.bincount(_known(y_true[y_true == y_pred]), minlength=NUM_CLASSES)
    predicted = np.bincount(_known(y_pred), minlength=NUM_CLASSES)
    support = np.bincount(_known(y_true), minlength=NUM_CLASSES)
    return tp.astype(np.int64), predicted.astype(np.int64), support.astype(np.int64)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, 0.0 where the denominator is 0 (zero_division=0)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """int64 [10,10], rows true class, columns predicted class; a pair with a label outside 0..9 is left out."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    both = (y_true >= 0) & (y_true < NUM_CLASSES) & (y_pred >= 0) & (y_pred < NUM_CLASSES)
    cells = np.bincount(y_true[both] * NUM_CLASSES + y_pred[both], minlength=NUM_CLASSES * NUM_CLASSES)
    return cells.reshape(NUM_CLASSES, NUM_CLASSES).astype(np.int64)


def confusion_csv(confusion: np.ndarray) -> str:
    """The matrix as CSV: a header of predicted classes, then one row per true class."""
    out = io.StringIO()
    out.write("true\\predicted," + ",".join(str(c) for c in CLASSES) + "\n")
    for c in CLASSES:
        out.write(f"{c}," + ",".join(str(int(v)) for v in confusion[c]) + "\n")
    return out.getvalue()


def top_confusion(evaluation: Evaluation, true_class: int) -> tuple[int, int] | None:
    """The class that `true_class` is most often mistaken for, and how often (None if never)."""
    row = evaluation.confusion[true_class].copy()
    row[true_class] = 0
    if row.max() == 0:
        return None
    return int(row.argmax()), int(row.max())
