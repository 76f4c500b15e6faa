"""The files Kubeflow Pipelines reads back: metrics, UI metadata, executor output, HTML."""

from __future__ import annotations

import json

import pytest
from analysis_testdata import last_usage_line, run_args
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from mnist_ct.analysis.__main__ import main


def test_metrics_out_lists_accuracy_as_a_percentage_metric(crafted, tmp_path):
    out = tmp_path / "kfp" / "mlpipeline-metrics.json"

    assert main(run_args(crafted.paths, "--metrics-out", str(out))) == 0

    metrics = {m["name"]: m for m in json.loads(out.read_text())["metrics"]}
    assert metrics["accuracy"] == {"name": "accuracy", "numberValue": 0.92, "format": "PERCENTAGE"}
    assert metrics["errors"]["numberValue"] == 4.0
    assert set(metrics) == {"accuracy", "macro-precision", "macro-recall", "macro-f1", "errors", "queries"}


def test_ui_metadata_has_an_inline_confusion_matrix_summary_and_the_report(crafted, tmp_path):
    out = tmp_path / "kfp" / "mlpipeline-ui-metadata.json"

    assert main(run_args(crafted.paths, "--ui-metadata-out", str(out))) == 0

    outputs = {o["type"]: o for o in json.loads(out.read_text())["outputs"]}
    matrix = outputs["confusion_matrix"]
    assert matrix["storage"] == "inline" and matrix["labels"] == [str(c) for c in range(10)]
    assert [s["name"] for s in matrix["schema"]] == ["target", "predicted", "count"]
    cells = {(int(t), int(p)): int(n) for t, p, n in (line.split(",") for line in matrix["source"].splitlines())}
    assert len(cells) == 100
    assert {cell: n for cell, n in cells.items() if n} == {
        (t, p): int(crafted.expected_confusion[t, p])
        for t in range(10)
        for p in range(10)
        if crafted.expected_confusion[t, p]
    }
    assert "Accuracy 92.00%" in outputs["markdown"]["source"]
    assert outputs["web-app"]["source"] == (crafted.paths.analysis / "report.html").read_text(encoding="utf-8")


def _executor_input(output_file) -> str:
    """An ExecutorInput as the KFP v2 launcher substitutes it for {{$}}: three output artifacts."""
    message = pipeline_spec_pb2.ExecutorInput()
    message.outputs.output_file = str(output_file)
    for name, schema in (
        ("scores", "system.Metrics"),
        ("matrix", "system.ClassificationMetrics"),
        ("page", "system.HTML"),
    ):
        artifact = message.outputs.artifacts[name].artifacts.add()
        artifact.name = name
        artifact.type.schema_title = schema
        artifact.uri = f"minio://mlpipeline/v2/artifacts/run/analysis/{name}"
    message.outputs.parameters["accuracy"].output_file = "/tmp/outputs/accuracy/data"
    return json_format.MessageToJson(message)


def test_executor_output_sets_the_metadata_of_the_metrics_artifacts(crafted, tmp_path):
    out = tmp_path / "tmp" / "kfp_outputs" / "output_metadata.json"

    assert main(run_args(crafted.paths, "--executor-input", _executor_input(out))) == 0

    message = json_format.Parse(out.read_text(), pipeline_spec_pb2.ExecutorOutput(), ignore_unknown_fields=False)
    assert set(message.artifacts) == {"scores", "matrix"}
    scores = json_format.MessageToDict(message.artifacts["scores"].artifacts[0].metadata)
    assert scores["accuracy"] == 0.92 and scores["errors"] == 4 and scores["queries"] == 50
    matrix = json_format.MessageToDict(message.artifacts["matrix"].artifacts[0].metadata)["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == [str(c) for c in range(10)]
    assert [row["row"] for row in matrix["rows"]] == crafted.expected_confusion.tolist()
    assert not message.parameter_values  # the accuracy parameter stays with --accuracy-out


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "argument --executor-input: is not JSON (Expecting property name"),
        ("[" * 100_000, "argument --executor-input: is not JSON (nested too deeply)"),
        ('{"outputs": {}}', "argument --executor-input: has no outputs.outputFile"),
        ("[1]", "argument --executor-input: must be a JSON object"),
        ('{"outputs": []}', "argument --executor-input: outputs must be an object"),
        ('{"outputs": {"outputFile": "/tmp/x", "artifacts": []}}', "outputs.artifacts must map each name"),
        ('{"outputs": {"outputFile": "/tmp/x", "artifacts": {"m": {"artifacts": [{"type": "x"}]}}}}', "must map"),
        ('{"outputs": {"outputFile": "/"}}', "argument --executor-input: outputs.outputFile /: is a folder"),
    ],
)
def test_bad_input_executor_input_is_a_usage_error_before_any_work(crafted, capsys, text, needle):
    assert main(run_args(crafted.paths, "--executor-input", text)) == 2

    assert needle in last_usage_line(capsys.readouterr().err)
    assert not crafted.paths.analysis.exists()


def test_html_out_is_the_report(crafted, tmp_path):
    out = tmp_path / "kfp" / "report.html"

    assert main(run_args(crafted.paths, "--html-out", str(out))) == 0

    assert out.read_bytes() == (crafted.paths.analysis / "report.html").read_bytes()


def test_no_kfp_file_is_written_when_the_analysis_fails(paths, tmp_path):
    outs = [tmp_path / "kfp" / name for name in ("accuracy", "metrics.json", "ui.json", "report.html")]
    flags = ["--accuracy-out", "--metrics-out", "--ui-metadata-out", "--html-out"]
    executor_output = tmp_path / "kfp" / "output_metadata.json"
    args = [a for pair in zip(flags, map(str, outs), strict=True) for a in pair]

    assert main(run_args(paths, *args, "--executor-input", _executor_input(executor_output))) == 3

    assert not any(out.exists() for out in [*outs, executor_output])
