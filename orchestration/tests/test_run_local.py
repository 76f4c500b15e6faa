"""`mnist-ct run-local` end to end with the real step packages on mnist-5k (small: --limit-per-class), with
the typed artifacts they write.

Needs the real steps (conftest.py: installed beside orchestration, or per-step venvs under .nox/packages);
skips without them, unless MNIST_CT_REQUIRE_STEPS=1.
"""

import json
import time
from pathlib import Path

import pytest
from conftest import RUNNER_OPTIONS, needs_real_steps

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.spec import load

pytestmark = [pytest.mark.slow, needs_real_steps]


def run_local(workdir, run_id, *options):
    return main(["run-local", "--workdir", str(workdir), "--run-id", run_id, *RUNNER_OPTIONS, *options])


def tasks(workdir, run_id):
    saved = json.loads((workdir / "kfp" / run_id / "run.json").read_text())
    return {t["task"].rsplit("/", 1)[-1]: t for t in saved["tasks"]}


def test_the_pipeline_runs_end_to_end_and_deploys_above_the_baseline(tmp_path, capsys):
    assert run_local(tmp_path, "above", "--epochs", "3", "--limit-per-class", "100", "--baseline", "0.8") == 0
    out = capsys.readouterr().out
    done = tasks(tmp_path, "above")
    assert [t for t, r in done.items() if r["status"] != "succeeded"] == []
    accuracy = done["analysis"]["outputs"]["accuracy"]
    assert 0.8 < accuracy <= 1.0
    metrics = json.loads((tmp_path / "model" / "runs" / "above" / "analysis" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(accuracy)
    report = tmp_path / "model" / "runs" / "above" / "analysis" / "report.html"
    mar = tmp_path / "deploy-model" / "model-store" / "mnist.mar"
    assert report.is_file() and mar.is_file() and mar.stat().st_size > 10_000
    assert f"report: {report}\n" in out
    assert f"model archive: {mar}\n" in out
    assert "deploy: ran\n" in out
    assert f"accuracy: challenger {accuracy:.4f}, no champion; baseline 0.8\n" in out
    assert "\nblessed: " in out
    check_artifacts(tmp_path, "above", done, out)
    # Each real step's account of its time: its start-up, and the work it marks (mnist_ct.artifacts.timing).
    for task in ("preprocess", "validate", "train-model", "embedding", "train-faiss", "analysis", "deploy"):
        timing = done[task]["timing"]
        assert timing["step"] == task.replace("-", "_") and 0 < timing["startup_s"] < timing["total_s"], task
        assert timing["total_s"] <= done[task]["seconds"] and timing["work_s"] >= 0, task
    assert all(done[t]["timing"]["work_s"] > 0 for t in ("preprocess", "validate", "embedding", "train-faiss"))
    assert "torch" in done["embedding"]["timing"]["heavy_imports_s"]  # `import torch`, its own figure
    outcome = json.loads((tmp_path / "kfp" / "above" / "run.json").read_text())["outcome"]
    assert (outcome["proceed"], outcome["champion"], outcome["blessed"], outcome["deployed"]) == (
        True,
        None,
        True,
        True,
    )

    # The same data and the same step versions as the champion just deployed: everything after preprocess
    # is skipped, saying on which condition, and the run takes seconds (the option checks remembered).
    started = time.monotonic()
    assert run_local(tmp_path, "same", "--epochs", "3", "--limit-per-class", "100", "--baseline", "0.8") == 0
    seconds = time.monotonic() - started
    out = capsys.readouterr().out
    assert "  options of 7 steps checked by their own parsers (7 as passed before, unchanged)\n" in out
    why = "condition data-or-steps-changed is false (preprocess.proceed = false)"
    gated = "validate, train-model, embedding, train-faiss, analysis, deploy"
    assert f"skipped {gated}: {why}\n" in out
    outcome = json.loads((tmp_path / "kfp" / "same" / "run.json").read_text())["outcome"]
    assert outcome["proceed"] is False and len(outcome["skipped"]) == 6 and not outcome["deployed"]
    assert seconds < 30, f"a run with nothing to do took {seconds:.1f} s"

    # only_if_changed=false (a bool parameter) retrains anyway; 1 epoch on the champion's data is not
    # blessed against the 3-epoch champion evaluated on the same test split: deploy is skipped.
    assert (
        run_local(tmp_path, "forced", "--epochs", "1", "--limit-per-class", "100", "-p", "only_if_changed=false") == 0
    )
    out = capsys.readouterr().out
    done = tasks(tmp_path, "forced")
    assert done["analysis"]["status"] == "succeeded"
    outcome = json.loads((tmp_path / "kfp" / "forced" / "run.json").read_text())["outcome"]
    assert outcome["champion"]["accuracy"] == pytest.approx(done["analysis"]["outputs"]["champion_accuracy"])
    assert outcome["champion"]["accuracy"] > 0.5
    if not outcome["blessed"]:
        assert done["deploy"]["status"] == "skipped" and outcome["reason"]
        assert f"\nnot blessed: {outcome['reason']}\n" in out


def check_artifacts(workdir, run_id, done, out):
    """The typed artifacts the real steps wrote (the step interface), as run.json keeps them and the summary
    shows them: the files, the metadata of their ExecutorOutputs, the images the pipeline was compiled with."""
    state = workdir / "kfp" / run_id
    images = {
        e["container"]["command"][2]: e["container"]["image"] for e in load(state / "pipeline.yaml").executors.values()
    }
    kept = {(task, a["name"]): a for task, t in done.items() for a in t["artifacts"]}
    assert {k: a["type"] for k, a in kept.items()} == {
        ("preprocess", "dataset"): "system.Dataset",
        ("train-model", "model"): "system.Model",
        ("analysis", "confusion_matrix"): "system.ClassificationMetrics",
        ("analysis", "metrics"): "system.Metrics",
        ("analysis", "report"): "system.HTML",
        ("deploy", "model"): "system.Model",
    }
    for (task, name), artifact in kept.items():
        step = task.replace("-", "_")
        assert Path(artifact["path"]).is_file() and Path(artifact["path"]).is_relative_to(state / "artifacts")
        metadata = artifact["metadata"]
        assert (metadata["step"], metadata["run_id"]) == (step, run_id) and metadata["step_version"]
        assert metadata["image"] == images[f"mnist_ct.{step}"], (task, name)  # MNIST_CT_IMAGES reached the step
    accuracy = done["analysis"]["outputs"]["accuracy"]
    metrics = kept[("analysis", "metrics")]
    assert metrics["metadata"]["accuracy"] == pytest.approx(accuracy)
    assert json.loads(Path(metrics["path"]).read_text())["accuracy"] == pytest.approx(accuracy)
    matrix = kept[("analysis", "confusion_matrix")]["metadata"]["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == [str(d) for d in range(10)]
    assert len(matrix["rows"]) == 10 and all(len(r["row"]) == 10 for r in matrix["rows"])
    assert "<html" in Path(kept[("analysis", "report")]["path"]).read_text().lower()
    assert kept[("preprocess", "dataset")]["metadata"]["data_version"]
    assert kept[("train-model", "model")]["metadata"]["framework"] == "pytorch"
    assert kept[("deploy", "model")]["metadata"]["live"] is True
    shown = f"  analysis.metrics             system.Metrics                {metrics['path']} (accuracy={accuracy:.4f}, "
    assert f"{shown}image={images['mnist_ct.analysis']})\n" in out


def test_deploy_is_skipped_when_accuracy_is_not_above_the_baseline(tmp_path, capsys):
    assert run_local(tmp_path, "below", "--epochs", "1", "--limit-per-class", "30", "--baseline", "1.0") == 0
    out = capsys.readouterr().out
    done = tasks(tmp_path, "below")
    assert done["analysis"]["status"] == "succeeded"
    assert done["deploy"]["status"] == "skipped"
    accuracy = done["analysis"]["outputs"]["accuracy"]
    assert done["analysis"]["outputs"]["blessed"] is False
    assert "condition challenger-blessed: false (analysis.blessed = false)\n" in out
    assert "deploy: skipped (condition challenger-blessed is false (analysis.blessed = false))\n" in out
    assert f"accuracy: challenger {accuracy:.4f}, no champion; baseline 1" in out
    assert "\nnot blessed: " in out
    assert not (tmp_path / "deploy-model" / "model-store" / "mnist.mar").exists()
    assert accuracy <= 1.0


def test_a_failing_step_stops_the_run_with_its_error_and_exit_code(tmp_path, capsys):
    # A file where train_model's run folder goes: preprocess and validate run, train_model fails (exit 3).
    (tmp_path / "model" / "runs").mkdir(parents=True)
    (tmp_path / "model" / "runs" / "failing").write_text("in the way")
    assert run_local(tmp_path, "failing", "--epochs", "1", "--limit-per-class", "30") == 3
    out, err = capsys.readouterr()
    assert err.startswith(
        "mnist-ct run-local: error: step condition-1/train-model failed (exit code 3): train_model: error: "
    )
    assert str(tmp_path / "model" / "runs" / "failing") in err and len(err.strip().splitlines()) == 1
    assert "FAIL condition-1/train-model" in out
    done = tasks(tmp_path, "failing")
    assert [(t, r["status"]) for t, r in done.items()] == [
        ("preprocess", "succeeded"),
        ("validate", "succeeded"),
        ("train-model", "failed"),
    ]
    assert (tmp_path / "model" / "runs" / "failing").read_text() == "in the way"


def test_options_a_step_refuses_stop_the_run_before_any_step_runs(tmp_path, capsys):
    # One image per class leaves preprocess an empty test split: its Options refuse that (exit 2).
    assert run_local(tmp_path / "work", "refused", "--limit-per-class", "1", "--epochs", "0") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "mnist-ct run-local: error: 2 steps refuse their options (nothing was run)"
    assert err[1].startswith("  - step preprocess: the test split would be empty (--limit-per-class 1")
    assert err[2] == "  - step train-model: argument --epochs: must be from 1 to 10000, got 0"
    assert not (tmp_path / "work").exists()
