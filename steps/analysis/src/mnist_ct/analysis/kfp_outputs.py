"""What Kubeflow Pipelines reads back from the container: output parameter, metrics, UI metadata.

- The accuracy output parameter (`dsl.OutputPath(float)`): a file holding the bare number.
- KFP v2 shows a `system.Metrics` artifact's scalar metrics and a `system.ClassificationMetrics`
  artifact's `confusionMatrix` from the artifacts' metadata, not from the files. A container
  component sets that metadata by writing an `ExecutorOutput` message (JSON) to the executor
  output file named in its executor input (`{{$}}`, field `outputs.outputFile`); the KFP launcher
  merges it into the output artifacts it records.
- `mlpipeline-metrics` (KFP v1 and v1-compatible UIs): {"metrics": [{"name", "numberValue", "format"}]}.
- `mlpipeline-ui-metadata` (KFP v1 output viewers): {"outputs": [...]} with an inline confusion
  matrix (CSV rows target,predicted,count), a markdown summary and the report as a web app.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import UsageError

from .metrics import CLASSES, Evaluation


def accuracy_text(accuracy: float) -> bytes:
    """The output parameter file's content: the bare float, no newline."""
    return repr(float(accuracy)).encode()


def scalar_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The headline figures, by KFP-safe name (letters, digits, dashes)."""
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


def confusion_matrix_struct(evaluation: Evaluation) -> dict[str, Any]:
    """The `confusionMatrix` metadata of a KFP v2 system.ClassificationMetrics artifact."""
    return {
        "annotationSpecs": [{"displayName": str(c)} for c in CLASSES],
        "rows": [{"row": [int(v) for v in evaluation.confusion[c]]} for c in CLASSES],
    }


def executor_output_path(executor_input: dict[str, Any]) -> Path:
    """Where KFP wants this task's ExecutorOutput (the executor input's outputs.outputFile)."""
    outputs = executor_input.get("outputs") or {}
    path = outputs.get("outputFile") or outputs.get("output_file")
    if not isinstance(path, str) or not path:
        raise UsageError("--executor-input has no outputs.outputFile; pass KFP's executor input placeholder {{$}}")
    return Path(path)


def executor_output(evaluation: Evaluation, executor_input: dict[str, Any]) -> dict[str, Any]:
    """An ExecutorOutput that sets the metadata of this task's metrics artifacts.

    Every output artifact of type system.Metrics gets the scalar metrics, every one of type
    system.ClassificationMetrics the confusion matrix; other outputs are left alone, and no output
    parameter is set (the accuracy parameter is --accuracy-out's file).
    """
    scalars = {name.replace("-", "_"): value for name, value in scalar_metrics(evaluation).items()}
    metadata_by_type = {
        "system.Metrics": scalars,
        "system.ClassificationMetrics": {"confusionMatrix": confusion_matrix_struct(evaluation)},
    }
    artifacts: dict[str, Any] = {}
    for name, listed in ((executor_input.get("outputs") or {}).get("artifacts") or {}).items():
        for artifact in (listed or {}).get("artifacts", [])[:1]:
            kind = (artifact.get("type") or {}).get("schemaTitle") or (artifact.get("type") or {}).get("schema_title")
            if kind in metadata_by_type:
                artifacts[name] = {"artifacts": [{"metadata": metadata_by_type[kind]}]}
    return {"artifacts": artifacts}


def parse_executor_input(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(
            f"--executor-input is not JSON ({e}); pass KFP's executor input placeholder {{{{$}}}}"
        ) from None
    if not isinstance(doc, dict):
        raise UsageError("--executor-input must be a JSON object (KFP's ExecutorInput)")
    executor_output_path(doc)
    return doc


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
