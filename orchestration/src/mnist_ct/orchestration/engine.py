"""The local runner's engine: a compiled pipeline's DAG executed as the KFP v2 backend would, on one machine.

- the DAG's tasks in dependency order; a task whose upstream did not succeed is skipped;
- each task's inputs resolved (pipeline parameters, constants with run placeholders, upstream output
  parameters) and typed by its component's input definitions;
- `triggerPolicy.condition` evaluated (cel.py: the comparisons KFP emits; anything else is an error);
  a false condition skips the sub-DAG and every task inside it (nested sub-DAGs too), saying why;
- each executor's command and args with their placeholders replaced, as KFP's launcher does
  (`{{$.inputs.parameters['x']}}`, `{{$.outputs.parameters['x'].output_file}}`, `{{$.pipeline_job_uuid}}`
  ...), the parent folder of every output parameter file created, and output parameters read back from
  their files, typed by the component's output definitions;
- output artifacts, as KFP's launcher hands them over: `{{$.outputs.artifacts['NAME'].path}}` (and
  `.uri`) resolved to a file under the run's folder, `{{$}}` to the executor input JSON (inputs'
  parameterValues, outputs' parameters, artifacts and outputFile); after the task its ExecutorOutput is
  read back (strictly, as the launcher's protojson does) and every artifact kept: type, path, uri, metadata.

Volumes: each PVC of the platform spec is a folder under the work dir (data-pvc -> WORKDIR/data,
train-model-pvc -> WORKDIR/model, deploy-model-pvc -> WORKDIR/deploy-model). Output parameter files and
the ExecutorOutput live under WORKDIR/kfp/<run id>/outputs/<task>/, artifacts under
WORKDIR/kfp/<run id>/artifacts/<task>/<name>; a task in a container sees those folders as
/tmp/kfp/outputs and /tmp/kfp/artifacts, a process (`Executor.sees_host_paths`) the host paths. An
artifact's uri is `file://` + its host path: like KFP's `minio://...`, it names where the artifact is
kept, the path is where the task writes it.

Retries: a task's `retryPolicy` is not honoured; each task runs once. On a cluster it covers transient
faults (a volume's I/O error, a lost node); here a failure is almost always deterministic (bad input,
exit 3), and retrying it would only delay the error line.

Who runs a task is an `Executor` (executors.py). `planned()` gives every task's container before
anything runs, so run-local can check every step's options first; nothing is created on disk until `run()`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from mnist_ct.artifacts.timing import TIMING_DIR_ENV
from mnist_ct.orchestration import cel
from mnist_ct.orchestration.errors import OrchestrationError, StepFailed, describe_exit
from mnist_ct.orchestration.executors import ContainerTask, Executor, Mount, host_path
from mnist_ct.orchestration.parameters import text_value, typed_arguments, typed_value
from mnist_ct.orchestration.pipeline import VOLUMES
from mnist_ct.orchestration.spec import EXECUTOR_INPUT, PLACEHOLDER, CompiledPipeline, topological_order
from mnist_ct.orchestration.workdir import write_atomically

OUTPUTS_MOUNT = "/tmp/kfp/outputs"
ARTIFACTS_MOUNT = "/tmp/kfp/artifacts"
EXECUTOR_OUTPUT = "executor_output.json"  # in the task's outputs folder (KFP: /tmp/kfp_outputs/output_metadata.json)
TIMING_FOLDER = "timing"  # in the task's outputs folder: the step's <step>.json (mnist_ct.artifacts.timing)
TAIL_LINES = 20


@dataclass
class Artifact:
    """An output artifact of a task: where it is and what its ExecutorOutput said of it."""

    name: str
    type: str  # schema title, e.g. system.Metrics
    path: str  # on this machine
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "path": self.path, "uri": self.uri, "metadata": self.metadata}


@dataclass
class TaskResult:
    path: str  # "preprocess", "condition-1/analysis", "condition-1/condition-2/deploy"
    display_name: str
    status: str  # "succeeded", "skipped", "failed"
    seconds: float = 0.0
    outputs: dict[str, object] = field(default_factory=dict)
    reason: str = ""
    executor: bool = True  # False for a DAG (condition group)
    artifacts: list[Artifact] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)  # its last output lines (not in run.json: the log has them)
    # What the step said of its own time (mnist_ct.artifacts.timing: start-up, work, other); None if it said nothing.
    timing: dict[str, Any] | None = None

    @property
    def overhead(self) -> float | None:
        """Seconds of this task outside the step's own work: the wall time here minus the work it measured."""
        work = (self.timing or {}).get("work_s")
        return max(0.0, self.seconds - work) if isinstance(work, int | float) else None


@dataclass
class RunResult:
    run_id: str
    workdir: Path
    arguments: dict[str, object]
    tasks: list[TaskResult]
    folders: dict[str, Path]  # PVC name -> host folder
    outcome: dict[str, Any] = field(default_factory=dict)  # the caller's account of the run (run-local: the loop's)

    def task(self, name: str) -> TaskResult | None:
        return next((t for t in self.tasks if t.path.rsplit("/", 1)[-1] == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "arguments": self.arguments,
            "folders": {k: str(v) for k, v in self.folders.items()},
            "tasks": [
                {
                    "task": t.path,
                    "display_name": t.display_name,
                    "status": t.status,
                    "seconds": round(t.seconds, 3),
                    "outputs": t.outputs,
                    "artifacts": [a.to_json() for a in t.artifacts],
                    "reason": t.reason,
                    **({"timing": t.timing} if t.executor else {}),
                }
                for t in self.tasks
            ],
            **({"outcome": self.outcome} if self.outcome else {}),
        }


class _Unknown:
    """An upstream output parameter while planning: known only once its producer has run."""


UNKNOWN = _Unknown()


@dataclass
class _TaskOutputs:
    """A task's output files: parameters' and artifacts' as the task sees them (container or host paths),
    artifacts (host path, uri), the ExecutorOutput file (as seen, and on this machine)."""

    parameters: dict[str, str]
    artifacts: dict[str, Artifact]
    artifact_paths: dict[str, str]
    schema_versions: dict[str, str]
    executor_output: str
    host_executor_output: str
    timing_dir: str  # MNIST_CT_TIMING_DIR as the task sees it
    host_timing_dir: str

    def executor_input(self, inputs: Mapping[str, object]) -> str:
        """KFP's ExecutorInput as protobuf JSON, what `{{$}}` stands for."""
        artifacts = {
            name: {
                "artifacts": [
                    {
                        "name": name,
                        "type": {"schemaTitle": a.type, "schemaVersion": self.schema_versions[name]},
                        "uri": a.uri,
                        "metadata": {},
                    }
                ]
            }
            for name, a in self.artifacts.items()
        }
        return json.dumps(
            {
                "inputs": {"parameterValues": dict(inputs)},
                "outputs": {
                    "parameters": {p: {"outputFile": f} for p, f in self.parameters.items()},
                    "artifacts": artifacts,
                    "outputFile": self.executor_output,
                },
            },
            sort_keys=True,
        )


class LocalRun:
    """One execution of a compiled pipeline under a work dir (`run_id` already checked by the caller)."""

    def __init__(
        self,
        pipeline: CompiledPipeline,
        workdir: Path,
        executor: Executor,
        arguments: Mapping[str, object] | None,
        run_id: str,
        out: Callable[[str], None] = print,
        outcome: Callable[[RunResult], dict[str, Any]] | None = None,
    ) -> None:
        """`outcome`: what the caller makes of a run (kept in run.json as `outcome`, also when it failed)."""
        self.pipeline = pipeline
        self.outcome = outcome
        self.workdir = Path(workdir).resolve()
        self.executor = executor
        self.run_id = run_id
        self.out = out
        self.arguments = typed_arguments(pipeline.pipeline_parameters(), arguments or {}, defaults=True)
        designed = {v.pvc: self.workdir / v.mount_path.strip("/") for v in VOLUMES}
        self.folders: dict[str, Path] = {}
        for label in pipeline.executors:
            for pvc, _ in pipeline.pvc_mounts(label):
                self.folders[pvc] = designed.get(pvc, self.workdir / pvc)
        self.state_dir = self.workdir / "kfp" / self.run_id
        self.results: list[TaskResult] = []

    # -- placeholders -------------------------------------------------------------------------------

    def _runtime(self, text: str, task_name: str) -> str:
        replacements = {
            "{{$.pipeline_job_uuid}}": self.run_id,
            "{{$.pipeline_job_name}}": f"{self.pipeline.name}-{self.run_id}",
            "{{$.pipeline_task_name}}": task_name,
            "{{$.pipeline_task_uuid}}": f"{self.run_id}-{task_name}",
        }
        for placeholder, value in replacements.items():
            text = text.replace(placeholder, value)
        return text

    def _resolve_inputs(
        self, task: dict[str, Any], scope: Mapping[str, object], done: Mapping[str, TaskResult] | None, name: str
    ) -> dict[str, object]:
        """The task's input values; `done` None while planning: upstream outputs are then UNKNOWN."""
        component = self.pipeline.components[task["componentRef"]["name"]]
        definitions = component.get("inputDefinitions", {}).get("parameters", {})
        values: dict[str, object] = {}
        for pname, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                value = scope[source["componentInputParameter"]]
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                if done is None:
                    values[pname] = UNKNOWN
                    continue
                produced = done[ref["producerTask"]].outputs
                if ref["outputParameterKey"] not in produced:
                    raise OrchestrationError(
                        f"task {name}: input {pname} reads {ref['producerTask']}.{ref['outputParameterKey']}, which "
                        "run-local does not have (outputs of a sub-DAG are not supported)"
                    )
                value = produced[ref["outputParameterKey"]]
            elif "runtimeValue" in source:
                value = source["runtimeValue"].get("constant")
                if isinstance(value, str):
                    value = self._runtime(value, name)
            else:
                raise OrchestrationError(f"task {name}: input {pname}: unsupported source {sorted(source)}")
            kind = definitions.get(pname, {}).get("parameterType")
            if value is UNKNOWN or not kind:
                values[pname] = value
            else:
                values[pname] = typed_value(value, kind, f"task {name} input {pname}")
        for pname, definition in definitions.items():
            if pname not in values and "defaultValue" in definition:
                values[pname] = typed_value(definition["defaultValue"], definition["parameterType"], pname)
        return values

    def _substitute(self, text: str, inputs: Mapping[str, object], outputs: _TaskOutputs, name: str) -> str:
        text = self._runtime(text, name)
        for pname, value in inputs.items():
            text = text.replace(f"{{{{$.inputs.parameters['{pname}']}}}}", text_value(value))
        for pname, path in outputs.parameters.items():
            text = text.replace(f"{{{{$.outputs.parameters['{pname}'].output_file}}}}", path)
        for aname, artifact in outputs.artifacts.items():
            text = text.replace(f"{{{{$.outputs.artifacts['{aname}'].path}}}}", outputs.artifact_paths[aname])
            text = text.replace(f"{{{{$.outputs.artifacts['{aname}'].uri}}}}", artifact.uri)
        left = [p for p in PLACEHOLDER.findall(text) if p != EXECUTOR_INPUT]
        if left:
            raise OrchestrationError(f"task {name}: cannot resolve {left[0]} (unsupported placeholder or input)")
        # Last, so that nothing inside the JSON (a parameter's value) is taken for a placeholder.
        return text.replace(EXECUTOR_INPUT, outputs.executor_input(inputs)) if EXECUTOR_INPUT in text else text

    def _outputs(self, path: str, component: dict[str, Any], mounts: list[Mount]) -> _TaskOutputs:
        """Where the task writes its outputs, as the task sees them and on this machine."""
        seen = (lambda p: host_path(p, mounts)) if self.executor.sees_host_paths else (lambda p: p)
        definitions = component.get("outputDefinitions", {})
        kinds = {a: d.get("artifactType", {}) for a, d in definitions.get("artifacts", {}).items()}
        artifacts = {}
        for aname, kind in kinds.items():
            host = host_path(f"{ARTIFACTS_MOUNT}/{path}/{aname}", mounts)
            artifacts[aname] = Artifact(aname, kind.get("schemaTitle", ""), host, Path(host).as_uri())
        return _TaskOutputs(
            parameters={p: seen(f"{OUTPUTS_MOUNT}/{path}/{p}") for p in definitions.get("parameters", {})},
            artifacts=artifacts,
            artifact_paths={a: seen(f"{ARTIFACTS_MOUNT}/{path}/{a}") for a in artifacts},
            schema_versions={a: kind.get("schemaVersion", "") for a, kind in kinds.items()},
            executor_output=seen(f"{OUTPUTS_MOUNT}/{path}/{EXECUTOR_OUTPUT}"),
            host_executor_output=host_path(f"{OUTPUTS_MOUNT}/{path}/{EXECUTOR_OUTPUT}", mounts),
            timing_dir=seen(f"{OUTPUTS_MOUNT}/{path}/{TIMING_FOLDER}"),
            host_timing_dir=host_path(f"{OUTPUTS_MOUNT}/{path}/{TIMING_FOLDER}", mounts),
        )

    def _container(
        self, path: str, name: str, display: str, component: dict[str, Any], inputs: Mapping[str, object]
    ) -> ContainerTask | None:
        """The container a task runs; None when its command line needs an upstream output not known yet."""
        label = component["executorLabel"]
        container = self.pipeline.executors[label]["container"]
        unknown = [p for p, v in inputs.items() if v is UNKNOWN]
        parts = [*self._container_parts(component), *(e.get("value", "") for e in container.get("env", []))]
        if unknown and any(EXECUTOR_INPUT in part for part in parts):
            return None  # the executor input holds every input's value
        if any(f"{{{{$.inputs.parameters['{p}']}}}}" in part for p in unknown for part in parts):
            return None
        known = {p: v for p, v in inputs.items() if v is not UNKNOWN}
        mounts = [Mount(self.folders[pvc], mount_path) for pvc, mount_path in self.pipeline.pvc_mounts(label)]
        mounts.append(Mount(self.state_dir / "outputs", OUTPUTS_MOUNT))
        mounts.append(Mount(self.state_dir / "artifacts", ARTIFACTS_MOUNT))
        outputs = self._outputs(path, component, mounts)
        return ContainerTask(
            name=path,
            display_name=display,
            image=container["image"],
            command=[self._substitute(c, known, outputs, name) for c in container.get("command", [])],
            args=[self._substitute(a, known, outputs, name) for a in container.get("args", [])],
            mounts=mounts,
            env={
                e["name"]: self._substitute(e.get("value", ""), known, outputs, name) for e in container.get("env", [])
            },
        )

    # -- planning -----------------------------------------------------------------------------------

    def planned(self) -> list[ContainerTask]:
        """Every executor task's container, conditions not evaluated (each task could run); tasks whose
        command line reads an upstream output are left out. Creates nothing."""
        found: list[ContainerTask] = []

        def visit(component: dict[str, Any], scope: Mapping[str, object], prefix: str) -> None:
            tasks = component["dag"]["tasks"]
            for name in topological_order(tasks):
                task = tasks[name]
                child = self.pipeline.components[task["componentRef"]["name"]]
                inputs = self._resolve_inputs(task, scope, None, name)
                if "dag" in child:
                    visit(child, inputs, f"{prefix}{name}/")
                    continue
                display = task.get("taskInfo", {}).get("name", name)
                container = self._container(f"{prefix}{name}", name, display, child, inputs)
                if container is not None:
                    found.append(container)

        visit(self.pipeline.root, self.arguments, "")
        return found

    # -- execution ----------------------------------------------------------------------------------

    def run(self) -> RunResult:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for folder in self.folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        try:
            self._run_dag(self.pipeline.root, self.arguments, "")
        except BaseException:
            # The task log as far as it got; a full disk must not hide the step's failure behind run.json's.
            with contextlib.suppress(OSError):
                self._write_task_log()
            raise
        self._write_task_log()
        return self.result()

    def _write_task_log(self) -> None:
        write_atomically(self.state_dir / "run.json", (json.dumps(self.result().to_json(), indent=2) + "\n").encode())

    def result(self) -> RunResult:
        result = RunResult(self.run_id, self.workdir, self.arguments, list(self.results), dict(self.folders))
        if self.outcome is not None:
            result.outcome = self.outcome(result)
        return result

    def _run_dag(self, component: dict[str, Any], scope: Mapping[str, object], prefix: str) -> None:
        tasks = component["dag"]["tasks"]
        done: dict[str, TaskResult] = {}
        for name in topological_order(tasks):
            task = tasks[name]
            path = f"{prefix}{name}"
            display = task.get("taskInfo", {}).get("name", name)
            child = self.pipeline.components[task["componentRef"]["name"]]
            upstream = [d for d in task.get("dependentTasks", []) if done[d].status != "succeeded"]
            if upstream:
                done[name] = self._skip(path, display, f"upstream task {upstream[0]} did not run", "dag" not in child)
                continue
            inputs = self._resolve_inputs(task, scope, done, name)
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition:
                passed = cel.evaluate(condition, inputs)
                shown = ", ".join(
                    f"{self._describe(task, p)} = {text_value(inputs[p])}"
                    for p in sorted(cel.parameters(cel.parse(condition)))
                )
                self.out(f"condition {display}: {text_value(passed)} ({shown})")
                if not passed:
                    done[name] = self._skip(path, display, f"condition false: {shown}", False)
                    self._skip_inside(child, f"{path}/", f"condition {display} is false ({shown})")
                    continue
            if "dag" in child:
                started = time.monotonic()
                self._run_dag(child, inputs, f"{path}/")
                done[name] = TaskResult(path, display, "succeeded", time.monotonic() - started, executor=False)
                self.results.append(done[name])
            else:
                done[name] = self._execute(path, name, display, child, inputs)

    def _describe(self, task: dict[str, Any], parameter: str) -> str:
        source = task.get("inputs", {}).get("parameters", {}).get(parameter, {})
        if "taskOutputParameter" in source:
            ref = source["taskOutputParameter"]
            return f"{ref['producerTask']}.{ref['outputParameterKey']}"
        return str(source.get("componentInputParameter", parameter))

    def _skip(self, path: str, display: str, reason: str, executor: bool) -> TaskResult:
        result = TaskResult(path, display, "skipped", reason=reason, executor=executor)
        self.results.append(result)
        if executor:
            self.out(f"skip {path}: {reason}")
        return result

    def _skip_inside(self, component: dict[str, Any], prefix: str, reason: str) -> None:
        tasks = component.get("dag", {}).get("tasks", {})
        for name in topological_order(tasks):  # in the order they would have run
            task = tasks[name]
            child = self.pipeline.components[task["componentRef"]["name"]]
            display = task.get("taskInfo", {}).get("name", name)
            self._skip(f"{prefix}{name}", display, reason, "dag" not in child)
            self._skip_inside(child, f"{prefix}{name}/", reason)

    def _fail(self, path: str, display: str, seconds: float, reason: str, timing: dict[str, Any] | None = None) -> None:
        self.results.append(TaskResult(path, display, "failed", seconds, reason=reason, timing=timing))

    def _execute(
        self, path: str, name: str, display: str, component: dict[str, Any], inputs: Mapping[str, object]
    ) -> TaskResult:
        spec = self._container(path, name, display, component, inputs)
        assert spec is not None  # every input is known while running
        declared = component.get("outputDefinitions", {}).get("parameters", {})
        outputs = self._outputs(path, component, spec.mounts)
        output_files = {p: host_path(f"{OUTPUTS_MOUNT}/{path}/{p}", spec.mounts) for p in declared}
        # The parent folders of every output, as KFP's launcher makes them (prepareOutputFolders).
        for output_file in [*output_files.values(), outputs.host_executor_output]:
            Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        for artifact in outputs.artifacts.values():
            Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        # Where the step writes what it measured of its own time (a pod has no such variable: the step writes nothing).
        timing_dir = Path(outputs.host_timing_dir)
        timing_dir.mkdir(parents=True, exist_ok=True)
        for stale in timing_dir.glob("*.json"):  # an earlier attempt's figures are not this one's
            stale.unlink(missing_ok=True)
        spec.env[TIMING_DIR_ENV] = outputs.timing_dir
        self.out(f"==> {path}: {display}")
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        def log(line: str) -> None:
            tail.append(line)
            self.out(f"    | {line}")

        started = time.monotonic()
        try:
            code = self.executor.run(spec, log)
        except BaseException as e:  # interrupted (SIGINT/SIGTERM): the task log says so, then unwind
            self._fail(path, display, time.monotonic() - started, f"interrupted ({e.__class__.__name__})")
            raise
        seconds = time.monotonic() - started
        timing = read_timing(timing_dir)
        if code != 0:
            last = next((line for line in reversed(tail) if line.strip()), "(no output)")
            self._fail(path, display, seconds, f"{describe_exit(code)}: {last}", timing)
            self.out(f"FAIL {path} after {seconds:.1f} s ({describe_exit(code)})")
            raise StepFailed(f"step {path} failed ({describe_exit(code)}): {last}", code)
        values: dict[str, object] = {}
        for pname, definition in declared.items():
            file = Path(output_files[pname])
            try:
                text = file.read_text()
            except OSError:
                self._fail(path, display, seconds, f"no output parameter {pname}", timing)
                raise StepFailed(
                    f"step {path} exited 0 but did not write its output parameter {pname} ({file})", 1
                ) from None
            kind = definition["parameterType"]
            try:
                values[pname] = typed_value(text.strip() if kind != "STRING" else text, kind, f"{path} output {pname}")
            except OrchestrationError as e:
                self._fail(path, display, seconds, str(e), timing)
                raise
        expects_output = any(EXECUTOR_INPUT in part for part in self._container_parts(component))
        try:
            artifacts = self._read_artifacts(path, outputs, expects_output)
        except OrchestrationError as e:
            self._fail(path, display, seconds, str(e), timing)
            raise
        result = TaskResult(
            path, display, "succeeded", seconds, values, artifacts=artifacts, log_tail=list(tail), timing=timing
        )
        self.results.append(result)
        shown = "".join(f", {k} = {text_value(v)}" for k, v in values.items())
        if artifacts:
            shown += f", artifacts {', '.join(a.name for a in artifacts)}"
        self.out(f"ok   {path} in {seconds:.1f} s{shown}")
        return result

    def _container_parts(self, component: dict[str, Any]) -> list[str]:
        container = self.pipeline.executors[component["executorLabel"]]["container"]
        return [*container.get("command", []), *container.get("args", [])]

    def _read_artifacts(self, path: str, outputs: _TaskOutputs, expects_output: bool) -> list[Artifact]:
        """The task's output artifacts with the metadata of its ExecutorOutput (when its command line had
        `{{$}}`, the task must have written one); StepFailed for a missing file, OrchestrationError (one
        line naming the file) for an ExecutorOutput that is not one."""
        file = Path(outputs.host_executor_output)
        written: dict[str, Any] = {}
        if expects_output:
            try:
                text = file.read_text()
            except OSError:
                raise StepFailed(f"step {path} exited 0 but did not write its executor output ({file})", 1) from None
            try:
                written = json.loads(text)
                if not isinstance(written, dict):
                    raise json_format.ParseError(f"a JSON {type(written).__name__}, not an object")
                json_format.ParseDict(written, pipeline_spec_pb2.ExecutorOutput(), ignore_unknown_fields=False)
            except (json.JSONDecodeError, json_format.ParseError) as e:
                detail = str(e).splitlines()[0] if str(e) else e.__class__.__name__
                detail = re.sub(r"^(Failed to parse \w+ field: )+", "", detail)  # protobuf's nesting, once per level
                raise OrchestrationError(f"step {path}: {file}: not a valid KFP ExecutorOutput ({detail})") from None
        listed = written.get("artifacts") or {}  # null is valid protobuf JSON for an empty map
        unknown = sorted(set(listed) - set(outputs.artifacts))
        if unknown:
            raise OrchestrationError(f"step {path}: {file}: artifact {unknown[0]} is not an output of the task")
        found = []
        for name, artifact in outputs.artifacts.items():
            if not Path(artifact.path).exists():
                missing = f"step {path} exited 0 but did not write its output artifact {name} ({artifact.path})"
                raise StepFailed(missing, 1)
            entries = (listed.get(name) or {}).get("artifacts") or []
            metadata = (entries[0] or {}).get("metadata") or {} if entries else {}
            found.append(Artifact(name, artifact.type, artifact.path, artifact.uri, metadata))
        return found


def read_timing(folder: Path) -> dict[str, Any] | None:
    """The step's own account of its time (the one JSON object in `folder`); None when it wrote none or it does
    not read: the figures only inform, a broken file is no reason to fail the task."""
    try:
        found = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    except (OSError, ValueError):
        return None
    return found[0] if len(found) == 1 and isinstance(found[0], dict) else None
