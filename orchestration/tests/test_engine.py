"""The local runner's engine on the real compiled pipeline; the steps replaced by a recording executor.

(test_bad_input.py runs `mnist-ct run-local` with fake step packages; test_run_local.py with the real ones.)
"""

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from mnist_ct.orchestration.engine import LocalRun
from mnist_ct.orchestration.errors import OrchestrationError, StepFailed
from mnist_ct.orchestration.executors import ContainerTask, host_path
from mnist_ct.orchestration.spec import CompiledPipeline, load, parse


class Recording:
    """Plays the steps, seeing container paths as a container would: records each task, writes analysis's
    accuracy, its output artifacts and ExecutorOutput (`executor_output`: that text instead, for `broken`
    steps), fails where told to."""

    description = "recording"
    sees_host_paths = False

    def __init__(
        self,
        accuracy="0.9375",
        fail: dict[str, int] | None = None,
        skip_output=False,
        interrupt="",
        proceed="true",
        blessed="true",
        **broken,
    ):
        self.accuracy, self.fail, self.skip_output, self.interrupt = accuracy, fail or {}, skip_output, interrupt
        self.proceed, self.blessed = proceed, blessed  # what preprocess and analysis write
        self.broken = broken  # executor_output=(step, text) or no_artifact=(step, name)
        self.tasks: list[ContainerTask] = []

    def run(self, task, log):
        self.tasks.append(task)
        args = [host_path(a, task.mounts) for a in task.args]
        step = task.command[2].split(".")[-1]
        if step == self.interrupt:
            raise KeyboardInterrupt
        if step in self.fail:
            log(f"{step}: error: {args[args.index('--data-root') + 1]}/x.npy is broken")
            return self.fail[step]
        if "--accuracy-out" in args and not self.skip_output:
            Path(args[args.index("--accuracy-out") + 1]).write_text(self.accuracy + "\n")
        written = {"--proceed-out": self.proceed, "--blessed-out": self.blessed, "--champion-accuracy-out": "-1.0"}
        for option, text in written.items():
            if option in args:
                Path(args[args.index(option) + 1]).write_text(text)
        artifacts = dict(v.split("=", 1) for o, v in zip(args, args[1:], strict=False) if o == "--output-artifact")
        for name, path in artifacts.items():
            if self.broken.get("no_artifact") != (step, name):
                Path(host_path(path, task.mounts)).write_text(f"{step} {name}\n")
        if "--executor-input" in args:
            executor_input = json.loads(args[args.index("--executor-input") + 1])
            output = {"artifacts": {n: {"artifacts": [{"metadata": {"step": step}}]} for n in artifacts}}
            text = json.dumps(output)
            if self.broken.get("executor_output", ("",))[0] == step:
                text = self.broken["executor_output"][1]
            Path(host_path(executor_input["outputs"]["outputFile"], task.mounts)).write_text(text)
        log(f"{step}: done")
        return 0

    def check_options(self, tasks):
        return [{"refused": None, "unchecked": None} for _ in tasks]


def run(dev_yaml, tmp_path, executor, **params):
    lines: list[str] = []
    local = LocalRun(load(dev_yaml), tmp_path / "work", executor, params, run_id="r1", out=lines.append)
    return local, lines


def saved_tasks(tmp_path):
    return json.loads((tmp_path / "work" / "kfp" / "r1" / "run.json").read_text())["tasks"]


def test_tasks_run_in_order_with_placeholders_resolved_and_volumes_mapped(dev_yaml, tmp_path):
    executor = Recording()
    local, lines = run(dev_yaml, tmp_path, executor, epochs="3", limit_per_class="20")
    result = local.run()
    steps = [t.command[2] for t in executor.tasks]
    assert steps == [f"mnist_ct.{s}" for s in ("preprocess", "validate", "train_model", "embedding")] + [
        "mnist_ct.train_faiss",
        "mnist_ct.analysis",
        "mnist_ct.deploy",
    ]
    work = tmp_path / "work"
    pre, _, train = executor.tasks[:3]
    assert pre.args[:18] == [
        "--run-id", "r1", "--data-root", "/data", "--deploy-root", "/deploy-model",
        "--dataset", "mnist-5k", "--limit-per-class", "20", "--seed", "0", "--only-if-changed", "true",
        "--model-name", "mnist", "--proceed-out", "/tmp/kfp/outputs/preprocess/proceed",
    ]  # fmt: skip
    assert [host_path(a, train.mounts) for a in train.args if not a.startswith("{")] == [
        "--run-id", "r1", "--data-root", str(work / "data"), "--model-root", str(work / "model"),
        "--epochs", "3", "--seed", "0", "--threads", "4",
        "--executor-input", "--output-artifact", "model=/tmp/kfp/artifacts/condition-1/train-model/model",
    ]  # fmt: skip
    analysis = executor.tasks[5]
    out_file = analysis.args[analysis.args.index("--accuracy-out") + 1]
    assert out_file == "/tmp/kfp/outputs/condition-1/analysis/accuracy"
    outputs = work / "kfp" / "r1" / "outputs"
    assert host_path(out_file, analysis.mounts) == str(outputs / "condition-1" / "analysis" / "accuracy")
    # Output parameters read back from their files and typed: bools from "true"/"false".
    assert result.task("preprocess").outputs == {"proceed": True}
    assert result.task("analysis").outputs == {"accuracy": 0.9375, "champion_accuracy": -1.0, "blessed": True}
    assert result.task("deploy").status == "succeeded"
    assert "condition data-or-steps-changed: true (preprocess.proceed = true)" in lines
    assert "condition challenger-blessed: true (analysis.blessed = true)" in lines
    assert [t["status"] for t in saved_tasks(tmp_path)] == ["succeeded"] * 9  # 7 steps + the 2 conditions
    assert {m.container_path for m in executor.tasks[6].mounts} == {
        "/model", "/deploy-model", "/tmp/kfp/outputs", "/tmp/kfp/artifacts",
    }  # fmt: skip


def test_the_plan_holds_every_task_as_it_will_run_and_creates_nothing(dev_yaml, tmp_path):
    local, _ = run(dev_yaml, tmp_path, Recording(), epochs="3", model_name="digits")
    planned = local.planned()
    assert [t.name for t in planned] == [
        "preprocess", *(f"condition-1/{t}" for t in ("validate", "train-model", "embedding", "train-faiss")),
        "condition-1/analysis", "condition-1/condition-2/deploy",
    ]  # fmt: skip
    assert planned[2].args[8:12] == ["--seed", "0", "--threads", "4"] and "3" in planned[2].args
    # deploy sits under two conditions; its own inputs come from pipeline parameters, so it is planned too.
    assert planned[-1].args[6:8] == ["--model-name", "digits"]
    assert not (tmp_path / "work").exists()
    executor = Recording()
    local.executor = executor
    local.run()
    assert [(t.name, t.args) for t in executor.tasks] == [(t.name, t.args) for t in planned]


def test_a_challenger_not_blessed_skips_deploy(dev_yaml, tmp_path):
    executor = Recording(blessed="false")
    local, lines = run(dev_yaml, tmp_path, executor, baseline="0.99", min_improvement="0.01")
    result = local.run()
    assert [t.command[2] for t in executor.tasks][-1] == "mnist_ct.analysis"
    analysis = executor.tasks[-1]
    assert analysis.args[analysis.args.index("--baseline") + 1] == "0.99"
    assert analysis.args[analysis.args.index("--min-improvement") + 1] == "0.01"
    deploy = result.task("deploy")
    assert deploy.status == "skipped" and deploy.path == "condition-1/condition-2/deploy"
    assert deploy.reason == "condition challenger-blessed is false (analysis.blessed = false)"
    assert "condition challenger-blessed: false (analysis.blessed = false)" in lines


def test_preprocess_saying_nothing_changed_skips_the_nested_conditions_whole(dev_yaml, tmp_path):
    executor = Recording(proceed="false")
    local, lines = run(dev_yaml, tmp_path, executor, only_if_changed="false")
    assert local.arguments["only_if_changed"] is False  # a bool parameter, typed from the command line's text
    result = local.run()
    assert [t.command[2] for t in executor.tasks] == ["mnist_ct.preprocess"]
    assert executor.tasks[0].args[executor.tasks[0].args.index("--only-if-changed") + 1] == "false"
    why = "condition data-or-steps-changed is false (preprocess.proceed = false)"
    assert [(t.path, t.status, t.reason) for t in result.tasks[1:]] == [
        ("condition-1", "skipped", "condition false: preprocess.proceed = false"),
        *((f"condition-1/{t}", "skipped", why) for t in ("validate", "train-model", "embedding", "train-faiss")),
        ("condition-1/analysis", "skipped", why),
        ("condition-1/condition-2", "skipped", why),
        ("condition-1/condition-2/deploy", "skipped", why),
    ]
    assert "condition data-or-steps-changed: false (preprocess.proceed = false)" in lines


@pytest.mark.parametrize("written", ["yes", "1", ""])
def test_a_bool_output_that_is_not_true_or_false_fails_the_task(dev_yaml, tmp_path, written):
    local, _ = run(dev_yaml, tmp_path, Recording(proceed=written))
    with pytest.raises(OrchestrationError, match=f"preprocess output proceed: '{written}' is not a valid BOOLEAN"):
        local.run()
    assert saved_tasks(tmp_path)[-1]["status"] == "failed"


def test_a_failing_step_stops_the_run_with_its_exit_code_and_error(dev_yaml, tmp_path):
    executor = Recording(fail={"validate": 3})
    local, lines = run(dev_yaml, tmp_path, executor)
    with pytest.raises(StepFailed) as e:
        local.run()
    assert e.value.exit_code == 3
    assert str(e.value) == (
        f"step condition-1/validate failed (exit code 3): validate: error: {tmp_path}/work/data/x.npy is broken"
    )
    assert [t.command[2] for t in executor.tasks] == ["mnist_ct.preprocess", "mnist_ct.validate"]
    assert [(t["task"], t["status"]) for t in saved_tasks(tmp_path)] == [
        ("preprocess", "succeeded"),
        ("condition-1/validate", "failed"),
    ]


def test_a_step_killed_by_a_signal_fails_the_run_with_128_plus_the_signal(dev_yaml, tmp_path):
    local, lines = run(dev_yaml, tmp_path, Recording(fail={"train_model": -9}))
    with pytest.raises(StepFailed) as e:
        local.run()
    assert e.value.exit_code == 137
    assert str(e.value).startswith("step condition-1/train-model failed (killed by SIGKILL): train_model: error: ")
    assert "FAIL condition-1/train-model after" in lines[-1] and lines[-1].endswith("(killed by SIGKILL)")


def test_an_interrupted_step_is_recorded_and_the_interrupt_goes_on(dev_yaml, tmp_path):
    local, _ = run(dev_yaml, tmp_path, Recording(interrupt="embedding"))
    with pytest.raises(KeyboardInterrupt):
        local.run()
    assert saved_tasks(tmp_path)[-1] | {"seconds": 0} == {
        "task": "condition-1/embedding", "display_name": "Embedding: embed train and test splits", "status": "failed",
        "seconds": 0, "outputs": {}, "artifacts": [], "reason": "interrupted (KeyboardInterrupt)", "timing": None,
    }  # fmt: skip


def test_a_step_that_does_not_write_its_output_parameter_fails_the_run(dev_yaml, tmp_path):
    local, _ = run(dev_yaml, tmp_path, Recording(skip_output=True))
    with pytest.raises(
        StepFailed, match="step condition-1/analysis exited 0 but did not write its output parameter accuracy"
    ):
        local.run()
    assert saved_tasks(tmp_path)[-1]["reason"] == "no output parameter accuracy"


def test_an_output_parameter_of_the_wrong_type_fails_the_run(dev_yaml, tmp_path):
    local, _ = run(dev_yaml, tmp_path, Recording(accuracy="high"))
    with pytest.raises(OrchestrationError, match="analysis output accuracy: 'high' is not a valid NUMBER_DOUBLE"):
        local.run()
    assert saved_tasks(tmp_path)[-1]["status"] == "failed"


def test_parameters_are_typed_by_the_pipeline_and_unknown_ones_refused(dev_yaml, tmp_path):
    local, _ = run(dev_yaml, tmp_path, Recording(), epochs="2", baseline="0.5")
    assert local.arguments["epochs"] == 2 and local.arguments["baseline"] == 0.5
    assert local.arguments["dataset"] == "mnist-5k"
    with pytest.raises(OrchestrationError, match="pipeline parameter epochs: 'two' is not a valid NUMBER_INTEGER"):
        run(dev_yaml, tmp_path, Recording(), epochs="two")
    with pytest.raises(OrchestrationError, match="unknown pipeline parameter"):
        run(dev_yaml, tmp_path, Recording(), learning_rate="0.1")


def test_an_unsupported_placeholder_is_an_error_not_passed_through(dev_yaml, tmp_path):
    spec, platform = yaml.safe_load_all(dev_yaml.read_text())
    spec["deploymentSpec"]["executors"]["exec-preprocess"]["container"]["args"].append("{{$.pipeline_root}}")
    with pytest.raises(OrchestrationError) as e:
        parse(yaml.safe_dump_all([spec, platform]))
    index = len(spec["deploymentSpec"]["executors"]["exec-preprocess"]["container"]["args"]) - 1
    assert e.value.problems == [
        f"executor exec-preprocess args[{index}]: unsupported placeholder {{{{$.pipeline_root}}}}"
    ]
    # The runner refuses it too, should a pipeline reach it unchecked.
    unchecked = CompiledPipeline(spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"])
    executor = Recording()
    local = LocalRun(unchecked, tmp_path, executor, {}, run_id="r1", out=lambda line: None)
    with pytest.raises(OrchestrationError, match=r"task preprocess: cannot resolve \{\{\$\.pipeline_root\}\}"):
        local.run()
    assert executor.tasks == []


def test_output_artifacts_are_handed_over_as_kfps_launcher_does_and_read_back(dev_yaml, tmp_path):
    executor = Recording()
    local, lines = run(dev_yaml, tmp_path, executor, k="3")
    result = local.run()
    analysis = executor.tasks[5]
    state = tmp_path / "work" / "kfp" / "r1"
    # {{$}}: a strict ExecutorInput, with the paths the task sees (a container's: /tmp/kfp/...).
    given = analysis.args[analysis.args.index("--executor-input") + 1]
    json_format.Parse(given, pipeline_spec_pb2.ExecutorInput(), ignore_unknown_fields=False)
    executor_input = json.loads(given)
    assert executor_input["inputs"]["parameterValues"] == {
        "run_id": "r1", "k": 3, "baseline": 0.8, "min_improvement": 0.0, "model_name": "mnist",
    }  # fmt: skip
    assert executor_input["outputs"]["parameters"] == {
        name: {"outputFile": f"/tmp/kfp/outputs/condition-1/analysis/{name}"}
        for name in ("accuracy", "champion_accuracy", "blessed")
    }
    assert executor_input["outputs"]["outputFile"] == "/tmp/kfp/outputs/condition-1/analysis/executor_output.json"
    [metrics] = executor_input["outputs"]["artifacts"]["metrics"]["artifacts"]
    assert metrics == {
        "name": "metrics", "type": {"schemaTitle": "system.Metrics", "schemaVersion": "0.0.1"},
        "uri": (state / "artifacts" / "condition-1" / "analysis" / "metrics").as_uri(), "metadata": {},
    }  # fmt: skip
    assert "report=/tmp/kfp/artifacts/condition-1/analysis/report" in analysis.args
    # Read back: every artifact with its ExecutorOutput metadata, kept in run.json, shown on the ok line.
    kept = result.task("analysis").artifacts
    assert [(a.name, a.type, a.metadata) for a in kept] == [
        ("confusion_matrix", "system.ClassificationMetrics", {"step": "analysis"}),
        ("metrics", "system.Metrics", {"step": "analysis"}),
        ("report", "system.HTML", {"step": "analysis"}),
    ]
    assert kept[2].path == str(state / "artifacts" / "condition-1" / "analysis" / "report")
    assert Path(kept[2].path).read_text() == "analysis report\n"
    saved = {t["task"]: t for t in saved_tasks(tmp_path)}
    deploy = "condition-1/condition-2/deploy"
    assert saved[deploy]["artifacts"][0]["path"] == str(state / "artifacts" / deploy / "model")
    assert saved["condition-1/validate"]["artifacts"] == [] and "--executor-input" not in executor.tasks[1].args
    assert any(line.startswith("ok   condition-1/analysis in ") and line.endswith(
        ", accuracy = 0.9375, blessed = true, champion_accuracy = -1, artifacts confusion_matrix, metrics, report"
    ) for line in lines)  # fmt: skip


def test_a_process_sees_host_paths_in_its_executor_input(dev_yaml, tmp_path):
    class Process(Recording):
        sees_host_paths = True

    local, _ = run(dev_yaml, tmp_path, Process())
    analysis = next(t for t in local.planned() if t.name == "condition-1/analysis")
    executor_input = json.loads(analysis.args[analysis.args.index("--executor-input") + 1])
    state = tmp_path / "work" / "kfp" / "r1"
    outputs, artifacts = state / "outputs" / "condition-1", state / "artifacts" / "condition-1"
    assert executor_input["outputs"]["outputFile"] == str(outputs / "analysis" / "executor_output.json")
    assert f"metrics={artifacts / 'analysis' / 'metrics'}" in analysis.args


@pytest.mark.parametrize(
    ("broken", "error", "exit_code"),
    [
        ({"executor_output": ("analysis", "{not json")}, "not a valid KFP ExecutorOutput (Expecting", 3),
        ({"executor_output": ("analysis", '{"artifact": {}}')}, "not a valid KFP ExecutorOutput (Message type", 3),
        (
            {"executor_output": ("analysis", '{"artifacts": {"metrics": {"artifacts": [{"metadata": 3}]}}}')},
            "not a valid KFP ExecutorOutput (Struct must be in a dict which is 3 at ExecutorOutput.artifacts[metrics]",
            3,
        ),
        (
            {"executor_output": ("analysis", '{"artifacts": {"roc": {"artifacts": [{}]}}}')},
            "artifact roc is not an output of the task",
            3,
        ),
        ({"executor_output": ("train_model", "")}, "not a valid KFP ExecutorOutput (Expecting value", 3),
        ({"executor_output": ("train_model", "[]")}, "not a valid KFP ExecutorOutput (a JSON list, not an object)", 3),
        ({"no_artifact": ("analysis", "report")}, "exited 0 but did not write its output artifact report (", 1),
    ],
)
def test_a_bad_executor_output_or_a_missing_artifact_fails_the_task_naming_the_file(
    dev_yaml, tmp_path, broken, error, exit_code
):
    executor = Recording(**broken)
    local, _ = run(dev_yaml, tmp_path, executor)
    with pytest.raises(OrchestrationError) as e:
        local.run()
    step = "condition-1/" + ("train-model" if broken.get("executor_output", ("",))[0] == "train_model" else "analysis")
    file = "executor_output.json" if "executor_output" in broken else "report"
    assert str(e.value).startswith(f"step {step}") and error in str(e.value) and file in str(e.value)
    assert "\n" not in str(e.value) and e.value.exit_code == exit_code
    assert saved_tasks(tmp_path)[-1]["task"] == step and saved_tasks(tmp_path)[-1]["status"] == "failed"
