"""`mnist-ct run-local` as a whole, with the fake step packages (fake_steps.py): fast, in process mode."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_local

from mnist_ct.artifacts import VERSIONS_ENV, Producer
from mnist_ct.orchestration.pipeline import ORDER
from mnist_ct.orchestration.spec import load

GATED = ["validate", "train-model", "embedding", "train-faiss", "analysis", "deploy"]


def test_a_run_checks_runs_and_summarises_what_it_made(fake_steps, tmp_path, capsys):
    work = tmp_path / "work"
    assert run_local(work, "--epochs", "2", "-p", "model_name=digits") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"run-local: run r1 of {work / 'kfp' / 'r1' / 'pipeline.yaml'}"
    assert "  options of 7 steps checked by their own parsers" in out
    assert "accuracy: challenger 0.9000, no champion; baseline 0.8" in out
    assert "blessed: above the baseline, no champion" in out
    assert f"report: {work / 'model' / 'runs' / 'r1' / 'analysis' / 'report.html'} (missing!)" in out  # fakes
    assert "deploy: ran" in out
    assert f"model archive: {work / 'deploy-model' / 'model-store' / 'digits.mar'} (missing!)" in out
    assert f"KServe model: {work / 'deploy-model' / 'kserve' / 'digits' / 'live'} (missing!)" in out
    saved = json.loads((work / "kfp" / "r1" / "run.json").read_text())
    assert saved["arguments"]["epochs"] == 2 and saved["arguments"]["model_name"] == "digits"
    assert [t["status"] for t in saved["tasks"]] == ["succeeded"] * 9  # 7 steps, 2 conditions
    check_timing(saved["tasks"], out)
    assert saved["outcome"] == {
        "proceed": True, "proceed_reason": "true (changed)", "challenger_accuracy": 0.9, "champion": None,
        "blessed": True, "reason": "above the baseline, no champion", "deployed": True, "skipped": [],
    }  # fmt: skip
    assert (work / "model" / "runs" / "r1" / "train-model" / "manifest.json").is_file()
    state = work / "kfp" / "r1"
    assert sorted(p.name for p in state.iterdir()) == ["artifacts", "outputs", "pipeline.yaml", "run.json"]
    # The typed artifacts: each step's files under the run's folder, their metadata from its ExecutorOutput.
    kept = {(t["task"], a["name"]): a for t in saved["tasks"] for a in t.get("artifacts", [])}
    assert {k: a["type"] for k, a in kept.items()} == {
        ("preprocess", "dataset"): "system.Dataset",
        ("condition-1/train-model", "model"): "system.Model",
        ("condition-1/analysis", "confusion_matrix"): "system.ClassificationMetrics",
        ("condition-1/analysis", "metrics"): "system.Metrics",
        ("condition-1/analysis", "report"): "system.HTML",
        ("condition-1/condition-2/deploy", "model"): "system.Model",
    }
    metrics = kept[("condition-1/analysis", "metrics")]
    assert metrics["path"] == str(state / "artifacts" / "condition-1" / "analysis" / "metrics")
    assert metrics["uri"] == (state / "artifacts" / "condition-1" / "analysis" / "metrics").as_uri()
    assert Path(metrics["path"]).read_text() == "analysis metrics\n"
    container = load(state / "pipeline.yaml").executors["exec-analysis"]["container"]
    # Every task gets every step's version (a dev build: the steps' pyproject versions), as JSON.
    versions = json.loads(next(e["value"] for e in container["env"] if e["name"] == VERSIONS_ENV))
    # image: from MNIST_CT_IMAGES, the compiled images; step_version: the installed distribution's (none for
    # these fake steps in orchestration's own venv: 0+unknown; the real one where the steps are installed)
    assert metrics["metadata"] == {
        "step": "analysis", "step_version": Producer.of("analysis").version, "image": container["image"],
        "run_id": "r1",
        "accuracy": 0.9,
    }  # fmt: skip
    assert sorted(versions) == sorted(ORDER) and all(v.count(".") == 2 for v in versions.values())
    assert "artifacts:" in out
    dataset = kept[("preprocess", "dataset")]
    assert (
        f"  preprocess.dataset           system.Dataset                {dataset['path']} (data_version=fake0123, "
        f"image={dataset['metadata']['image']})" in out
    )


def check_timing(tasks, out):
    """Each step's own account of its time (mnist_ct.artifacts.timing, through MNIST_CT_TIMING_DIR) is in run.json
    as the task's `timing`, and in the summary's columns: wall, work, overhead (wall - work), start-up."""
    steps = [t for t in tasks if t["task"] not in ("condition-1", "condition-1/condition-2")]
    assert len(steps) == 7 and all("timing" not in t for t in tasks if t not in steps)  # a condition is no step
    for t in steps:
        timing = t["timing"]
        assert timing["step"] == t["task"].rsplit("/", 1)[-1].replace("-", "_") and timing["exit_code"] == 0
        # `python -m mnist_ct.<step>` is its process: the start-up is measured, and all of it fits in the wall time,
        # give or take the process start's resolution (/proc/self/stat counts clock ticks: 10 ms) and rounding
        assert 0 < timing["startup_s"] <= timing["total_s"] <= t["seconds"] + 0.011
        assert timing["work_s"] == 0.0  # the fakes mark no work: all of their time is overhead
    assert f"  {'':<9} {'task':<32} {'wall s':>7} {'work':>7} {'overhead':>8} {'start-up':>8}" in out
    validate = next(t for t in steps if t["task"] == "condition-1/validate")
    figures = (
        f"{validate['seconds']:7.1f} {0.0:7.1f}  {validate['seconds']:7.1f}  {validate['timing']['startup_s']:7.1f}"
    )
    assert f"  succeeded {'condition-1/validate':<32} {figures}" in out


def test_a_run_below_the_baseline_is_not_blessed_and_says_why_deploy_was_skipped(
    fake_steps, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("MNIST_CT_FAKE_ACCURACY", "0.5")
    assert run_local(tmp_path / "work", "--baseline", "0.75") == 0
    out = capsys.readouterr().out.splitlines()
    assert "condition challenger-blessed: false (analysis.blessed = false)" in out
    assert "not blessed: accuracy 0.5 is not above the baseline 0.75" in out
    why = "condition challenger-blessed is false (analysis.blessed = false)"
    assert f"skipped deploy: {why}" in out
    assert f"deploy: skipped ({why})" in out
    assert not (tmp_path / "work" / "deploy-model" / "runs").exists()


def test_a_challenger_below_the_champion_is_not_blessed_and_both_accuracies_are_shown(
    fake_steps, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("MNIST_CT_FAKE_CHAMPION", "0.95")
    assert run_local(tmp_path / "work", "-p", "min_improvement=0.01") == 0
    out = capsys.readouterr().out.splitlines()
    assert "accuracy: challenger 0.9000, champion 0.9500 (v-champion, on this run's test split); baseline 0.8" in out
    assert "not blessed: accuracy 0.9 is below the champion's 0.95" in out
    outcome = json.loads((tmp_path / "work" / "kfp" / "r1" / "run.json").read_text())["outcome"]
    assert outcome["champion"] == {"version": "v-champion", "accuracy": 0.95}
    assert (outcome["blessed"], outcome["deployed"]) == (False, False)
    assert outcome["skipped"] == [
        {
            "task": "condition-1/condition-2/deploy",
            "reason": "condition challenger-blessed is false (analysis.blessed = false)",
        }
    ]


def test_nothing_changed_skips_everything_after_preprocess_and_says_which_condition(
    fake_steps, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("MNIST_CT_FAKE_PROCEED", "false")
    work = tmp_path / "work"
    assert run_local(work) == 0
    out = capsys.readouterr().out.splitlines()
    why = "condition data-or-steps-changed is false (preprocess.proceed = false)"
    assert "condition data-or-steps-changed: false (preprocess.proceed = false)" in out
    assert f"skipped {', '.join(GATED)}: {why}" in out  # in the order they would have run
    assert "preprocess: proceed: false (nothing changed)" in out  # its own line saying why
    saved = json.loads((work / "kfp" / "r1" / "run.json").read_text())
    assert saved["outcome"]["proceed"] is False and saved["outcome"]["challenger_accuracy"] is None
    assert [s["task"].rsplit("/", 1)[-1] for s in saved["outcome"]["skipped"]] == GATED
    assert sorted(p.name for p in (work / "model").iterdir()) == []  # nothing trained
    # A bool parameter from the command line: only_if_changed=false makes preprocess say proceed.
    assert run_local(work, "-p", "only_if_changed=false", run_id="r2") == 0
    out = capsys.readouterr().out.splitlines()
    assert "only_if_changed=false" in out[2]
    assert "condition data-or-steps-changed: true (preprocess.proceed = true)" in out
    assert "deploy: ran" in out


def test_option_checks_that_passed_are_not_repeated_until_the_sources_change(fake_steps, tmp_path, capsys):
    work = tmp_path / "work"
    assert run_local(work) == 0
    assert "  options of 7 steps checked by their own parsers" in capsys.readouterr().out.splitlines()
    assert run_local(work, run_id="r2") == 0
    assert "  options of 7 steps checked by their own parsers (7 as passed before, unchanged)" in (
        capsys.readouterr().out.splitlines()
    )
    assert run_local(work, "--epochs", "3", run_id="r3") == 0  # train_model's command line changed
    assert "(6 as passed before, unchanged)" in capsys.readouterr().out
    source = fake_steps / "mnist_ct" / "validate" / "__main__.py"
    source.write_text(source.read_text() + "\n")  # a step's source changed: every check again
    try:
        assert run_local(work, "--epochs", "3", run_id="r4") == 0
        assert "  options of 7 steps checked by their own parsers" in capsys.readouterr().out.splitlines()
        assert run_local(work, "--epochs", "-1", run_id="r5") == 2  # a refusal is never taken from the cache
    finally:
        source.write_text(source.read_text()[:-1])


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
