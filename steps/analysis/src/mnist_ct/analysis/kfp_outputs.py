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

import contextlib
import errno
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import UsageError, fsync_dir, os_errors_named

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


def check_output_file(option: str, path: Path) -> Path:
    """An output file path given on the command line: not a folder, and no file where a folder must be."""
    path = Path(path)
    named = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise UsageError(f"{named}: is a folder; give the path of the file to write")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{named}: {parent} is a file, not a folder; give a path in a folder")
            break
    return path


def check_writable(path: Path) -> None:
    """Refuse, before any work, an output file whose volume is read-only or not ours (OSError naming it)."""
    existing = next(p for p in (Path(path).parent, *Path(path).parent.parents) if p.exists())
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))


@contextlib.contextmanager
def staged(files: dict[Path, bytes]) -> Iterator[None]:
    """Write every file beside its place (fsynced) first; move them all into place when the block succeeds.

    On any failure, in the writes or in the block, no file is left: neither the temporary ones nor the
    parent folders made for them.
    """
    made: list[Path] = []
    temporary: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
            with os_errors_named(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                made.extend(missing)
                temporary[path] = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
                with open(temporary[path], "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        yield
        for path, temp in temporary.items():
            with os_errors_named(path):
                os.replace(temp, path)
                fsync_dir(path.parent)
        made.clear()
    finally:
        for temp in temporary.values():
            temp.unlink(missing_ok=True)
        for folder in sorted(set(made), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()


def parse_executor_input(text: str) -> dict[str, Any]:
    """KFP's ExecutorInput, checked whole before any work (UsageError naming --executor-input)."""
    placeholder = "pass KFP's executor input placeholder {{$}}"
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        reason = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise UsageError(f"--executor-input is not JSON ({reason}); {placeholder}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--executor-input must be a JSON object (KFP's ExecutorInput); {placeholder}")
    outputs = doc.get("outputs")
    if outputs is not None and not isinstance(outputs, dict):
        raise UsageError(f"--executor-input: outputs must be an object; {placeholder}")
    artifacts = (outputs or {}).get("artifacts")
    if artifacts is None:
        artifacts = {}
    if not isinstance(artifacts, dict) or not all(_artifact_list(listed) for listed in artifacts.values()):
        raise UsageError(
            '--executor-input: outputs.artifacts must map each name to {"artifacts": [{"type": {...}}, ...]}; '
            + placeholder
        )
    check_output_file("--executor-input outputs.outputFile", executor_output_path(doc))
    return doc


def _artifact_list(listed: Any) -> bool:
    if listed is None:
        return True
    if not isinstance(listed, dict) or not isinstance(listed.get("artifacts", []), list):
        return False
    return all(isinstance(a, dict) and isinstance(a.get("type") or {}, dict) for a in listed.get("artifacts", []))


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
