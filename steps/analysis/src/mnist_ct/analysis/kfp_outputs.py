"""What Kubeflow Pipelines reads back from analysis: its typed artifacts' metadata, the output parameter, v1 files.

- The KFP v2 artifacts (written through mnist_ct.artifacts.kfp, ARTIFACTS): the UI shows a `system.Metrics`
  artifact's scalar metrics and a `system.ClassificationMetrics` artifact's `confusionMatrix` from the
  artifacts' metadata (the ExecutorOutput), not from their files.
- The output parameters `accuracy`, `champion_accuracy` (`dsl.OutputPath(float)`: a file holding the bare number)
  and `blessed` (`dsl.OutputPath(bool)`: `true` or `false`).
- `mlpipeline-metrics` (KFP v1 and v1-compatible UIs): {"metrics": [{"name", "numberValue", "format"}]}.
- `mlpipeline-ui-metadata` (KFP v1 output viewers): {"outputs": [...]} with an inline confusion
  matrix (CSV rows target,predicted,count), a markdown summary and the report as a web app.
"""

from __future__ import annotations

import io
from typing import Any

from .metrics import CLASSES, Evaluation

# The typed output artifacts analysis writes (--output-artifact NAME=PATH): name -> KFP schema title.
ARTIFACTS = {
    "metrics": "system.Metrics",
    "confusion_matrix": "system.ClassificationMetrics",
    "report": "system.HTML",
}


def accuracy_text(accuracy: float) -> bytes:
    """The output parameter file's content: the bare float, no newline."""
    return repr(float(accuracy)).encode()


def bool_text(value: bool) -> bytes:
    """A boolean output parameter file's content: `true` or `false`, no newline."""
    return b"true" if value else b"false"


def scalar_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The headline figures, by KFP-safe name (letters, digits, dashes; the v2 metadata uses underscores)."""
    macro = evaluation.macro()
    return {
        "accuracy": evaluation.accuracy,
        "macro-precision": macro["precision"],
        "macro-recall": macro["recall"],
        "macro-f1": macro["f1"],
        "errors": float(evaluation.errors),
        "queries": float(len(evaluation.y_true)),
    }


def mlpipeline_metrics(evaluation: Evaluation) -> dict[str, Any]:
    metrics = []
    for name, value in scalar_metrics(evaluation).items():
        fmt = "PERCENTAGE" if name == "accuracy" else "RAW"
        metrics.append({"name": name, "numberValue": value, "format": fmt})
    return {"metrics": metrics}


def metrics_metadata(evaluation: Evaluation) -> dict[str, float]:
    """The `system.Metrics` artifact's metadata: the scalar figures, which the KFP v2 UI lists."""
    return {name.replace("-", "_"): value for name, value in scalar_metrics(evaluation).items()}


def confusion_matrix_struct(evaluation: Evaluation) -> dict[str, Any]:
    """The `confusionMatrix` metadata of a KFP v2 system.ClassificationMetrics artifact."""
    return {
        "annotationSpecs": [{"displayName": str(c)} for c in CLASSES],
        "rows": [{"row": [int(v) for v in evaluation.confusion[c]]} for c in CLASSES],
    }


def confusion_rows_csv(evaluation: Evaluation) -> str:
    """One `target,predicted,count` row per cell, as the KFP v1 confusion-matrix viewer reads it."""
    out = io.StringIO()
    for t in CLASSES:
        for p in CLASSES:
            out.write(f"{t},{p},{int(evaluation.confusion[t, p])}\n")
    return out.getvalue()


def summary_markdown(evaluation: Evaluation, k: int, vote: str) -> str:
    macro = evaluation.macro()
    lines = [
        f"## Accuracy {evaluation.accuracy:.2%}",
        "",
        f"{len(evaluation.y_true)} test digits classified by {k}-NN ({vote} vote) in the FAISS index: "
        f"{evaluation.errors} errors, macro F1 {macro['f1']:.4f}.",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for c in CLASSES:
        lines.append(
            f"| {c} | {evaluation.precision[c]:.4f} | {evaluation.recall[c]:.4f} | "
            f"{evaluation.f1[c]:.4f} | {int(evaluation.support[c])} |"
        )
    return "\n".join(lines) + "\n"


def ui_metadata(evaluation: Evaluation, k: int, vote: str, report_html: str) -> dict[str, Any]:
    return {
        "version": 1,
        "outputs": [
            {
                "type": "confusion_matrix",
                "format": "csv",
                "schema": [
                    {"name": "target", "type": "CATEGORY"},
                    {"name": "predicted", "type": "CATEGORY"},
                    {"name": "count", "type": "NUMBER"},
                ],
                "storage": "inline",
                "source": confusion_rows_csv(evaluation),
                "labels": [str(c) for c in CLASSES],
            },
            {"type": "markdown", "storage": "inline", "source": summary_markdown(evaluation, k, vote)},
            {"type": "web-app", "storage": "inline", "source": report_html},
        ],
    }
