"""`mnist-ct run-local` as a whole, with the fake step packages (fake_steps.py): fast, in process mode."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_local

from mnist_ct.orchestration.spec import load


def test_a_run_checks_runs_and_summarises_what_it_made(fake_steps, tmp_path, capsys):
    work = tmp_path / "work"
    assert run_local(work, "--epochs", "2", "-p", "model_name=digits") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"run-local: run r1 of {work / 'kfp' / 'r1' / 'pipeline.yaml'}"
    assert "  options of 7 steps checked by their own parsers" in out
    assert "accuracy: 0.9000 (baseline 0.8)" in out
    assert f"report: {work / 'model' / 'runs' / 'r1' / 'analysis' / 'report.html'} (missing!)" in out  # fakes
    assert "deploy: ran" in out
    assert f"model archive: {work / 'deploy-model' / 'model-store' / 'digits.mar'} (missing!)" in out
    saved = json.loads((work / "kfp" / "r1" / "run.json").read_text())
    assert saved["arguments"]["epochs"] == 2 and saved["arguments"]["model_name"] == "digits"
    assert [t["status"] for t in saved["tasks"]] == ["succeeded"] * 8
    assert (work / "model" / "runs" / "r1" / "train-model" / "manifest.json").is_file()
    state = work / "kfp" / "r1"
    assert sorted(p.name for p in state.iterdir()) == ["artifacts", "outputs", "pipeline.yaml", "run.json"]
    # The typed artifacts: each step's files under the run's folder, their metadata from its ExecutorOutput.
    kept = {(t["task"], a["name"]): a for t in saved["tasks"] for a in t.get("artifacts", [])}
    assert {k: a["type"] for k, a in kept.items()} == {
        ("preprocess", "dataset"): "system.Dataset",
        ("train-model", "model"): "system.Model",
        ("analysis", "confusion_matrix"): "system.ClassificationMetrics",
        ("analysis", "metrics"): "system.Metrics",
        ("analysis", "report"): "system.HTML",
        ("condition-1/deploy", "model"): "system.Model",
    }
    metrics = kept[("analysis", "metrics")]
    assert metrics["path"] == str(state / "artifacts" / "analysis" / "metrics")
    assert metrics["uri"] == (state / "artifacts" / "analysis" / "metrics").as_uri()
    assert Path(metrics["path"]).read_text() == "analysis metrics\n"
    image = load(state / "pipeline.yaml").executors["exec-analysis"]["container"]["image"]
    assert metrics["metadata"] == {  # image: from MNIST_CT_IMAGES, the compiled images
        "step": "analysis", "step_version": "0+unknown", "image": image, "run_id": "r1", "accuracy": 0.9,
    }  # fmt: skip
    assert "artifacts:" in out
    dataset = kept[("preprocess", "dataset")]
    assert (
        f"  preprocess.dataset           system.Dataset                {dataset['path']} (data_version=fake0123, "
        f"image={dataset['metadata']['image']})" in out
    )


def test_a_run_below_the_baseline_says_why_deploy_was_skipped(fake_steps, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MNIST_CT_FAKE_ACCURACY", "0.5")
    assert run_local(tmp_path / "work", "--baseline", "0.75") == 0
    out = capsys.readouterr().out.splitlines()
    assert "condition accuracy-above-baseline: false (analysis.accuracy = 0.5, baseline = 0.75)" in out
    assert (
        "deploy: skipped (condition accuracy-above-baseline is false (analysis.accuracy = 0.5, baseline = 0.75))" in out
    )
    assert not (tmp_path / "work" / "deploy-model" / "runs").exists()


def test_a_compiled_pipeline_file_is_run_as_given(fake_steps, dev_yaml, tmp_path, capsys):
    assert run_local(tmp_path / "work", "--pipeline", str(dev_yaml), "--limit-per-class", "5") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"run-local: run r1 of {dev_yaml}"
    assert not (tmp_path / "work" / "kfp" / "r1" / "pipeline.yaml").exists()


def test_a_run_id_is_made_when_none_is_given_and_a_work_dir_is_reused(fake_steps, tmp_path, capsys):
    from mnist_ct.orchestration.__main__ import main

    work = tmp_path / "work"
    assert main(["run-local", "--workdir", str(work)]) == 0
    assert main(["run-local", "--workdir", str(work)]) == 0
    runs = sorted(p.name for p in (work / "kfp").iterdir())
    assert len(runs) == 2 and all(r.startswith("local-") for r in runs)
    assert sorted(p.name for p in (work / "model" / "runs").iterdir()) == runs
