"""Accuracy, per-class precision/recall/F1 and the confusion matrix (scikit-learn), and their files."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

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
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=CLASSES, average=None, zero_division=0
    )
    return Evaluation(
        y_true=y_true,
        y_pred=y_pred,
        accuracy=float(accuracy_score(y_true, y_pred)),
        confusion=confusion_matrix(y_true, y_pred, labels=CLASSES).astype(np.int64),
        precision=np.asarray(precision, dtype=np.float64),
        recall=np.asarray(recall, dtype=np.float64),
        f1=np.asarray(f1, dtype=np.float64),
        support=np.asarray(support, dtype=np.int64),
    )


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
