"""The files Kubeflow Pipelines reads back: the typed artifacts and their metadata, the v1 metrics and UI metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from analysis_testdata import last_usage_line, run_args

from mnist_ct.analysis.__main__ import main
from mnist_ct.analysis.kfp_outputs import ARTIFACTS
from mnist_ct.artifacts import IMAGES_ENV, Producer, read_manifest
from mnist_ct.artifacts.testing import executor_input, read_executor_output


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


IMAGES = {
    step: f"127.0.0.1:5000/mnist-ct-{step}@sha256:{n:064x}"
    for n, step in enumerate(("preprocess", "validate", "train_model", "embedding", "train_faiss", "analysis"))
}


def _typed_outputs(tmp_path) -> tuple[Path, dict[str, Path], list[str]]:
    """An executor input declaring analysis's three artifacts, and a path for each (as the pipeline passes them)."""
    output_file = tmp_path / "tmp" / "kfp_outputs" / "output_metadata.json"
    files = {name: tmp_path / "artifacts" / name / "data" for name in ARTIFACTS}
    args = ["--executor-input", executor_input(output_file, ARTIFACTS, "analysis")]
    for name, path in files.items():
        args += ["--output-artifact", f"{name}={path}"]
    return output_file, files, args


def test_typed_artifacts_are_the_analysis_files_with_metrics_and_confusion_matrix_metadata(
    crafted, tmp_path, monkeypatch
):
    monkeypatch.setenv(IMAGES_ENV, json.dumps(IMAGES))
    output_file, files, args = _typed_outputs(tmp_path)

    assert main(run_args(crafted.paths, *args)) == 0

    for name, stored in (
        ("metrics", "metrics.json"),
        ("confusion_matrix", "confusion_matrix.csv"),
        ("report", "report.html"),
    ):
        assert files[name].read_bytes() == (crafted.paths.analysis / stored).read_bytes()
    metadata = read_executor_output(output_file)
    assert set(metadata) == {"metrics", "confusion_matrix", "report"}
    common = {"step": "analysis", "step_version": Producer.of("analysis").version, "image": IMAGES["analysis"]}
    for found in metadata.values():
        assert found.items() >= {**common, "run_id": crafted.paths.run_id}.items()
    scores = metadata["metrics"]
    assert scores["accuracy"] == 0.92 and scores["errors"] == 4 and scores["queries"] == 50
    assert scores["macro_f1"] == pytest.approx(json.loads(files["metrics"].read_text())["macro_avg"]["f1"])
    matrix = metadata["confusion_matrix"]["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == [str(c) for c in range(10)]
    assert [row["row"] for row in matrix["rows"]] == crafted.expected_confusion.tolist()
    assert metadata["report"]["uri"] == crafted.paths.analysis.absolute().as_uri()


def test_the_report_and_the_manifest_show_the_image_of_every_step(crafted, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, json.dumps(IMAGES))

    assert main(run_args(crafted.paths)) == 0

    page = (crafted.paths.analysis / "report.html").read_text()
    table = page[page.index('<h2 id="images">') :]
    for step, image in IMAGES.items():
        assert f'<tr><td>{step}</td><td class="l"><code>{image}</code></td></tr>' in table
    assert read_manifest(crafted.paths.analysis).meta["images"] == IMAGES  # deploy records them from here
    assert json.loads((crafted.paths.analysis / "metrics.json").read_text())["images"] == IMAGES


def test_run_by_hand_the_report_says_the_images_are_not_given(crafted, monkeypatch):
    monkeypatch.delenv(IMAGES_ENV, raising=False)

    assert main(run_args(crafted.paths)) == 0

    page = (crafted.paths.analysis / "report.html").read_text()
    assert "not given</span> (MNIST_CT_IMAGES is not set" in page[page.index('<h2 id="images">') :]
    assert read_manifest(crafted.paths.analysis).meta["images"] == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "argument --executor-input: is not JSON (Expecting property name"),
        ('{"outputs": {}}', "argument --executor-input: has no outputs.outputFile"),
        (
            '{"outputs": {"outputFile": "/tmp/x", "artifacts": {"scores": {"artifacts": [{"type": {}}]}}}}',
            "argument --executor-input: output artifact 'scores' is not one this step writes (it writes metrics "
            "(system.Metrics), confusion_matrix (system.ClassificationMetrics), report (system.HTML))",
        ),
        (
            '{"outputs": {"outputFile": "/tmp/x", "artifacts": {"report": {"artifacts": '
            '[{"type": {"schemaTitle": "system.Markdown"}}]}}}}',
            "output artifact 'report' has type 'system.Markdown', but this step writes a system.HTML",
        ),
        ('{"outputs": {"outputFile": "/"}}', "argument --executor-input: outputs.outputFile /: is a folder"),
    ],
)
def test_bad_input_executor_input_is_a_usage_error_before_any_work(crafted, capsys, text, needle):
    assert main(run_args(crafted.paths, "--executor-input", text)) == 2

    assert needle in last_usage_line(capsys.readouterr().err)
    assert not crafted.paths.analysis.exists()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("model=/tmp/m", "argument --output-artifact: 'model=/tmp/m': this step has no output artifact 'model'"),
        ("report=/", "argument --output-artifact: report /: is a folder"),
    ],
)
def test_bad_input_output_artifact_is_a_usage_error_before_any_work(crafted, capsys, value, needle):
    assert main(run_args(crafted.paths, "--output-artifact", value)) == 2

    assert needle in last_usage_line(capsys.readouterr().err)
    assert not crafted.paths.analysis.exists()


def test_bad_input_malformed_images_variable_exits_2_before_any_work(crafted, capsys, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, "preprocess=img")

    assert main(run_args(crafted.paths)) == 2

    assert f"analysis: error: environment variable {IMAGES_ENV} is not JSON" in last_usage_line(capsys.readouterr().err)
    assert not crafted.paths.analysis.exists()


def test_no_kfp_file_is_written_when_the_analysis_fails(paths, tmp_path):
    outs = [tmp_path / "kfp" / name for name in ("accuracy", "metrics.json", "ui.json")]
    flags = ["--accuracy-out", "--metrics-out", "--ui-metadata-out"]
    args = [a for pair in zip(flags, map(str, outs), strict=True) for a in pair]
    output_file, files, typed = _typed_outputs(tmp_path)

    assert main(run_args(paths, *args, *typed)) == 3

    assert not any(out.exists() for out in [*outs, output_file, *files.values()])
    assert not (tmp_path / "kfp").exists() and not (tmp_path / "artifacts").exists()
