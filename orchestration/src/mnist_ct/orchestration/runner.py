"""`mnist-ct run-local`: execute a compiled pipeline YAML on one machine, without Kubernetes.

What a KFP v2 backend does for this pipeline, done here: the DAG's tasks in dependency order; each
task's inputs resolved (pipeline parameters, constants with run placeholders, upstream output
parameters); `triggerPolicy.condition` evaluated (cel.py: the comparisons KFP emits; anything else is
an error); each executor's command and args with their placeholders replaced, as KFP's launcher does
(`{{$.inputs.parameters['x']}}`, `{{$.outputs.parameters['x'].output_file}}`, `{{$.pipeline_job_uuid}}`
...), the parent folder of every output parameter file created, and output parameters read back from
their files, typed by the component's output definitions.

Volumes: each PVC of the platform spec is a folder under the work dir (data-pvc -> WORKDIR/data,
train-model-pvc -> WORKDIR/model, deploy-model-pvc -> WORKDIR/deploy-model). Output parameter files
live under WORKDIR/kfp/<run id>/outputs, seen by the task as /tmp/kfp/outputs.

Who runs a task is an `Executor`. `ProcessExecutor` runs the installed step packages with this
Python: an argument equal to a mount path or under one (`/data`, `/model/x`) is rewritten to the host
folder. Container mode (the built images, folders bind-mounted) is the image tooling's to provide:
`--containers` loads `mnist_ct.orchestration.containers.ContainerExecutor`, which receives the same
`ContainerTask` (container paths unchanged, plus its mounts).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from mnist_ct.orchestration import cel
from mnist_ct.orchestration.errors import OrchestrationError, StepFailed
from mnist_ct.orchestration.pipeline import VOLUMES
from mnist_ct.orchestration.spec import PLACEHOLDER, CompiledPipeline, topological_order

OUTPUTS_MOUNT = "/tmp/kfp/outputs"


@dataclass(frozen=True)
class Mount:
    host: Path
    container_path: str


@dataclass
class ContainerTask:
    """One container to run, as the pod would: container paths, plus which host folder backs each mount."""

    name: str
    display_name: str
    image: str
    command: list[str]
    args: list[str]
    mounts: list[Mount]
    env: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    description: str

    def run(self, task: ContainerTask, log: Callable[[str], None]) -> int:
        """Run the task to completion, passing each output line to `log`; return its exit code."""
        ...


def host_path(arg: str, mounts: list[Mount]) -> str:
    """`arg` with a leading mount path replaced by its host folder (`/data/x` -> `<workdir>/data/x`)."""
    for mount in sorted(mounts, key=lambda m: len(m.container_path), reverse=True):
        prefix = mount.container_path.rstrip("/")
        if arg == prefix or arg.startswith(prefix + "/"):
            return str(mount.host) + arg[len(prefix) :]
    return arg


class ProcessExecutor:
    """Run `python -m mnist_ct.<step>` with the installed step packages, mount paths mapped to folders.

    The Python is this one (every step installed beside orchestration), or with `venvs` each step's own
    venv, `<venvs>/<step>/bin/python` (the layout of `nox -s tests`' .nox/packages): each step then
    runs with only what its own pyproject installs, as in its image.
    """

    def __init__(self, python: str = sys.executable, venvs: Path | None = None) -> None:
        self.python = python
        self.venvs = Path(venvs).resolve() if venvs else None
        self.description = f"process mode, per-step venvs under {self.venvs}" if venvs else f"process mode ({python})"

    def python_for(self, command: list[str]) -> str:
        if self.venvs is None:
            return self.python
        module = command[2] if len(command) == 3 and command[1] == "-m" else ""
        step = module.removeprefix("mnist_ct.")
        if not module.startswith("mnist_ct.") or not step.isidentifier():
            raise OrchestrationError(f"per-step venvs: cannot tell the step of command {command}")
        return str(self.venvs / step / "bin" / "python")

    def missing(self, commands: list[list[str]]) -> list[str]:
        """The interpreters these commands would need that do not exist."""
        pythons = [self.python_for(c) for c in commands if c and c[0] in ("python", "python3")]
        return sorted({p for p in pythons if not Path(p).is_file()})

    def run(self, task: ContainerTask, log: Callable[[str], None]) -> int:
        python = self.python_for(task.command)
        command = [python if c in ("python", "python3") else c for c in task.command]
        argv = [host_path(a, task.mounts) for a in [*command[1:], *task.args]]
        env = {**os.environ, **task.env, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(
                [command[0], *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
        except OSError as e:
            log(f"cannot start {command[0]}: {e.strerror}")
            return 127
        with proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log(line.rstrip("\n"))
        return proc.returncode


def load_executor(containers: bool, venvs: Path | None = None) -> Executor:
    if not containers:
        return ProcessExecutor(venvs=venvs)
    if venvs is not None:
        raise OrchestrationError("--venvs is for process mode; --containers runs the images")
    from mnist_ct.orchestration import containers as engines

    executor_class = getattr(engines, "ContainerExecutor", None)
    if executor_class is None:
        raise OrchestrationError(
            "container mode (--containers) is not available yet: it comes with the image build tooling, as "
            "mnist_ct.orchestration.containers.ContainerExecutor; run without --containers (process mode)"
        )
    try:
        return executor_class()
    except engines.ContainerError as e:
        raise OrchestrationError(f"container mode: {e}") from None


def new_run_id() -> str:
    return f"local-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def text_value(value: object) -> str:
    """A parameter value as KFP's launcher writes it into a command line (Go's FormatFloat 'f', -1)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def typed_value(value: object, parameter_type: str, what: str) -> object:
    """A value (from YAML, a file or the command line) converted to the declared parameter type."""
    try:
        if parameter_type == "STRING":
            if not isinstance(value, str):
                raise ValueError("not a string")
            return value
        if parameter_type == "NUMBER_INTEGER":
            if isinstance(value, str):
                value = float(value) if any(c in value for c in ".eE") else int(value)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("not an integer")
            return value
        if parameter_type == "NUMBER_DOUBLE":
            if isinstance(value, bool):
                raise ValueError("not a number")
            return float(value)  # type: ignore[arg-type]
        if parameter_type == "BOOLEAN":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in ("true", "false"):
                return str(value).strip().lower() == "true"
            raise ValueError("not true/false")
        if parameter_type in ("LIST", "STRUCT"):
            parsed = json.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, list if parameter_type == "LIST" else dict):
                raise ValueError(f"not a {parameter_type.lower()}")
            return parsed
    except (ValueError, TypeError) as e:
        raise OrchestrationError(f"{what}: {value!r} is not a valid {parameter_type} ({e})") from None
    raise OrchestrationError(f"{what}: unsupported parameter type {parameter_type}")


@dataclass
class TaskResult:
    path: str  # "analysis", "condition-1/deploy"
    display_name: str
    status: str  # "succeeded", "skipped", "failed"
    seconds: float = 0.0
    outputs: dict[str, object] = field(default_factory=dict)
    reason: str = ""
    executor: bool = True  # False for a DAG (condition group)


@dataclass
class RunResult:
    run_id: str
    workdir: Path
    arguments: dict[str, object]
    tasks: list[TaskResult]
    folders: dict[str, Path]  # PVC name -> host folder

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
                    "reason": t.reason,
                }
                for t in self.tasks
            ],
        }


class LocalRun:
    """One execution of a compiled pipeline under a work dir."""

    def __init__(
        self,
        pipeline: CompiledPipeline,
        workdir: Path,
        executor: Executor,
        arguments: Mapping[str, object] | None = None,
        run_id: str | None = None,
        out: Callable[[str], None] = print,
    ) -> None:
        self.pipeline = pipeline
        self.workdir = Path(workdir).resolve()
        self.executor = executor
        self.run_id = run_id or new_run_id()
        self.out = out
        self.arguments = self._arguments(arguments or {})
        designed = {v.pvc: self.workdir / v.mount_path.strip("/") for v in VOLUMES}
        self.folders: dict[str, Path] = {}
        for label in pipeline.executors:
            for pvc, _ in pipeline.pvc_mounts(label):
                self.folders[pvc] = designed.get(pvc, self.workdir / pvc)
        self.state_dir = self.workdir / "kfp" / self.run_id
        self.results: list[TaskResult] = []

    def _arguments(self, given: Mapping[str, object]) -> dict[str, object]:
        declared = self.pipeline.pipeline_parameters()
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise OrchestrationError(
                f"unknown pipeline parameter(s) {', '.join(unknown)}; the pipeline takes {', '.join(sorted(declared))}"
            )
        values: dict[str, object] = {}
        for name, definition in declared.items():
            kind = definition["parameterType"]
            if name in given:
                values[name] = typed_value(given[name], kind, f"pipeline parameter {name}")
            elif "defaultValue" in definition:
                values[name] = typed_value(definition["defaultValue"], kind, f"default of {name}")
            elif not definition.get("isOptional"):
                raise OrchestrationError(f"pipeline parameter {name} has no default: give it a value")
        return values

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
        self, task: dict[str, Any], scope: Mapping[str, object], outputs: Mapping[str, TaskResult], name: str
    ) -> dict[str, object]:
        component = self.pipeline.components[task["componentRef"]["name"]]
        definitions = component.get("inputDefinitions", {}).get("parameters", {})
        values: dict[str, object] = {}
        for pname, source in task.get("inputs", {}).get("parameters", {}).items():
            if "componentInputParameter" in source:
                value = scope[source["componentInputParameter"]]
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                produced = outputs[ref["producerTask"]].outputs
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
            values[pname] = typed_value(value, kind, f"task {name} input {pname}") if kind else value
        for pname, definition in definitions.items():
            if pname not in values and "defaultValue" in definition:
                values[pname] = typed_value(definition["defaultValue"], definition["parameterType"], pname)
        return values

    def _substitute(self, text: str, inputs: Mapping[str, object], output_files: Mapping[str, str], name: str) -> str:
        text = self._runtime(text, name)
        for pname, value in inputs.items():
            text = text.replace(f"{{{{$.inputs.parameters['{pname}']}}}}", text_value(value))
        for pname, path in output_files.items():
            text = text.replace(f"{{{{$.outputs.parameters['{pname}'].output_file}}}}", path)
        left = PLACEHOLDER.findall(text)
        if left:
            raise OrchestrationError(f"task {name}: cannot resolve {left[0]} (unsupported placeholder or input)")
        return text

    # -- execution ----------------------------------------------------------------------------------

    def run(self) -> RunResult:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for folder in self.folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        try:
            self._run_dag(self.pipeline.root, self.arguments, "")
        finally:
            result = self.result()
            tmp = self.state_dir / ".run.json.tmp"
            tmp.write_text(json.dumps(result.to_json(), indent=2) + "\n")
            os.replace(tmp, self.state_dir / "run.json")
        return result

    def result(self) -> RunResult:
        return RunResult(self.run_id, self.workdir, self.arguments, list(self.results), dict(self.folders))

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
        return source.get("componentInputParameter", parameter)

    def _skip(self, path: str, display: str, reason: str, executor: bool) -> TaskResult:
        result = TaskResult(path, display, "skipped", reason=reason, executor=executor)
        self.results.append(result)
        if executor:
            self.out(f"skip {path}: {reason}")
        return result

    def _skip_inside(self, component: dict[str, Any], prefix: str, reason: str) -> None:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            child = self.pipeline.components[task["componentRef"]["name"]]
            display = task.get("taskInfo", {}).get("name", name)
            self._skip(f"{prefix}{name}", display, reason, "dag" not in child)
            self._skip_inside(child, f"{prefix}{name}/", reason)

    def _execute(
        self, path: str, name: str, display: str, component: dict[str, Any], inputs: Mapping[str, object]
    ) -> TaskResult:
        label = component["executorLabel"]
        container = self.pipeline.executors[label]["container"]
        outputs_host = self.state_dir / "outputs"
        mounts = [Mount(self.folders[pvc], mount_path) for pvc, mount_path in self.pipeline.pvc_mounts(label)]
        mounts.append(Mount(outputs_host, OUTPUTS_MOUNT))
        declared = component.get("outputDefinitions", {}).get("parameters", {})
        output_files = {p: f"{OUTPUTS_MOUNT}/{path}/{p}" for p in declared}
        for container_file in output_files.values():
            Path(host_path(container_file, mounts)).parent.mkdir(parents=True, exist_ok=True)
        spec = ContainerTask(
            name=path,
            display_name=display,
            image=container["image"],
            command=[self._substitute(c, inputs, output_files, name) for c in container.get("command", [])],
            args=[self._substitute(a, inputs, output_files, name) for a in container.get("args", [])],
            mounts=mounts,
            env={
                e["name"]: self._substitute(e.get("value", ""), inputs, output_files, name)
                for e in container.get("env", [])
            },
        )
        self.out(f"==> {path}: {display}")
        tail: deque[str] = deque(maxlen=20)

        def log(line: str) -> None:
            tail.append(line)
            self.out(f"    | {line}")

        started = time.monotonic()
        code = self.executor.run(spec, log)
        seconds = time.monotonic() - started
        if code != 0:
            last = next((line for line in reversed(tail) if line.strip()), "(no output)")
            result = TaskResult(path, display, "failed", seconds, reason=f"exit code {code}: {last}")
            self.results.append(result)
            self.out(f"FAIL {path} after {seconds:.1f} s (exit code {code})")
            raise StepFailed(f"step {path} failed (exit code {code}): {last}", code)
        values: dict[str, object] = {}
        for pname, definition in declared.items():
            file = Path(host_path(output_files[pname], mounts))
            try:
                text = file.read_text()
            except OSError:
                result = TaskResult(path, display, "failed", seconds, reason=f"no output parameter {pname}")
                self.results.append(result)
                raise StepFailed(
                    f"step {path} exited 0 but did not write its output parameter {pname} ({file})", 1
                ) from None
            kind = definition["parameterType"]
            values[pname] = typed_value(text.strip() if kind != "STRING" else text, kind, f"{path} output {pname}")
        result = TaskResult(path, display, "succeeded", seconds, values)
        self.results.append(result)
        shown = "".join(f", {k} = {text_value(v)}" for k, v in values.items())
        self.out(f"ok   {path} in {seconds:.1f} s{shown}")
        return result
