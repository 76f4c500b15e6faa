"""A compiled pipeline YAML, loaded strictly: every document parsed into its protobuf type.

The KFP compiler writes one or two YAML documents: the `PipelineSpec`, then (with kfp-kubernetes)
a `PlatformSpec` holding per-executor Kubernetes settings. Both are parsed with unknown fields
refused; `deploymentSpec` and each platform executor are `Struct`s inside those messages, so they are
parsed again into `PipelineDeploymentConfig` and `KubernetesExecutorConfig`. Protobuf parsing does not
check that names resolve or that conditions are valid CEL, so `load` checks those too: component and
executor references, task dependencies (and that they form no cycle), parameter references, the
placeholders in container arguments (parameters, output artifacts' `.path`/`.uri`, the executor input
`{{$}}`; input artifacts are not supported), and every `triggerPolicy.condition` (see `cel.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2
from kfp.pipeline_spec import pipeline_spec_pb2

from mnist_ct.orchestration import cel
from mnist_ct.orchestration.errors import OrchestrationError

PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")
INPUT_PARAMETER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")
OUTPUT_PARAMETER_FILE = re.compile(r"^\{\{\$\.outputs\.parameters\['([^']+)'\]\.output_file\}\}$")
OUTPUT_ARTIFACT = re.compile(r"^\{\{\$\.outputs\.artifacts\['([^']+)'\]\.(path|uri)\}\}$")
EXECUTOR_INPUT = "{{$}}"  # the whole executor input, as JSON (KFP's launcher replaces it first)
# Run-level placeholders the KFP backend resolves (and so does the local runner).
RUNTIME_PLACEHOLDERS = (
    "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_job_name}}",
    "{{$.pipeline_task_name}}",
    "{{$.pipeline_task_uuid}}",
)


def _strict(doc: Any, message: Any, what: str) -> None:
    try:
        json_format.ParseDict(doc, message, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise OrchestrationError(f"{what} is not a valid {type(message).__name__}: {e}") from None


@dataclass
class CompiledPipeline:
    """Documents of a compiled pipeline, already checked to parse strictly and to resolve."""

    spec: dict[str, Any]
    platform: dict[str, Any] = field(default_factory=dict)  # executor label -> KubernetesExecutorConfig dict
    source: str = "pipeline"

    @property
    def components(self) -> dict[str, Any]:
        return self.spec.get("components", {})

    @property
    def executors(self) -> dict[str, Any]:
        return self.spec.get("deploymentSpec", {}).get("executors", {})

    @property
    def root(self) -> dict[str, Any]:
        return self.spec["root"]

    @property
    def description(self) -> str:
        return self.spec.get("pipelineInfo", {}).get("description", "")

    @property
    def name(self) -> str:
        return self.spec.get("pipelineInfo", {}).get("name", "")

    def pipeline_parameters(self) -> dict[str, dict[str, Any]]:
        return self.root.get("inputDefinitions", {}).get("parameters", {})

    def pvc_mounts(self, executor: str) -> list[tuple[str, str]]:
        """(PVC name, mount path) per mount of an executor; the PVC name must be a constant."""
        mounts = []
        for m in self.platform.get(executor, {}).get("pvcMount", []):
            name = m.get("constant") or m.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
            if not isinstance(name, str) or not name:
                raise OrchestrationError(f"{self.source}: {executor}: a PVC mount whose claim name is not a constant")
            mounts.append((name, m["mountPath"]))
        return mounts

    def walk_tasks(self) -> list[tuple[list[str], str, dict[str, Any]]]:
        """Every task of every DAG: (path of enclosing task names, task name, task spec)."""
        out: list[tuple[list[str], str, dict[str, Any]]] = []

        def visit(dag: dict[str, Any], path: list[str]) -> None:
            for name, task in dag.get("tasks", {}).items():
                out.append((path, name, task))
                component = self.components.get(task["componentRef"]["name"], {})
                if "dag" in component:
                    visit(component["dag"], [*path, name])

        visit(self.root["dag"], [])
        return out

    def to_yaml(self) -> str:
        docs = [self.spec]
        if self.platform:
            docs.append({"platforms": {"kubernetes": {"deploymentSpec": {"executors": self.platform}}}})
        return yaml.safe_dump_all(docs, sort_keys=True)


def parse(text: str, source: str = "pipeline") -> CompiledPipeline:
    """Parse and check a compiled pipeline; `OrchestrationError` listing every problem otherwise."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise OrchestrationError(f"{source}: not YAML ({e.__class__.__name__})") from None
    if not docs or len(docs) > 2 or not all(isinstance(d, dict) for d in docs):
        raise OrchestrationError(f"{source}: expected a PipelineSpec document and at most one PlatformSpec document")

    spec = docs[0]
    _strict(spec, pipeline_spec_pb2.PipelineSpec(), f"{source}: document 0")
    _strict(spec.get("deploymentSpec", {}), pipeline_spec_pb2.PipelineDeploymentConfig(), f"{source}: deploymentSpec")
    for label, executor in spec.get("deploymentSpec", {}).get("executors", {}).items():
        if "container" not in executor:
            raise OrchestrationError(f"{source}: executor {label} is not a container (importers/resolvers unsupported)")

    platform: dict[str, Any] = {}
    if len(docs) == 2:
        _strict(docs[1], pipeline_spec_pb2.PlatformSpec(), f"{source}: document 1")
        platforms = docs[1].get("platforms", {})
        unknown = sorted(set(platforms) - {"kubernetes"})
        if unknown:
            raise OrchestrationError(f"{source}: unsupported platform(s) {', '.join(unknown)}")
        kubernetes = platforms.get("kubernetes", {})
        _strict(
            kubernetes.get("deploymentSpec", {}), pipeline_spec_pb2.PlatformDeploymentConfig(), f"{source}: platform"
        )
        platform = kubernetes.get("deploymentSpec", {}).get("executors", {})
        for label, config in platform.items():
            what = f"{source}: kubernetes config of {label}"
            _strict(config, kubernetes_executor_config_pb2.KubernetesExecutorConfig(), what)

    compiled = CompiledPipeline(spec, platform, source)
    problems = references(compiled)
    if problems:
        raise OrchestrationError(f"{source}: {len(problems)} unresolved reference(s)", problems)
    return compiled


def load(path: Path | str) -> CompiledPipeline:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise OrchestrationError(f"{path}: cannot read the compiled pipeline ({e.strerror})") from None
    return parse(text, str(path))


def _required_inputs(component: dict[str, Any]) -> set[str]:
    params = component.get("inputDefinitions", {}).get("parameters", {})
    return {n for n, p in params.items() if not p.get("isOptional") and "defaultValue" not in p}


def _outputs(component: dict[str, Any]) -> set[str]:
    return set(component.get("outputDefinitions", {}).get("parameters", {}))


def output_artifacts(component: dict[str, Any]) -> dict[str, str]:
    """A component's output artifacts: name -> schema title."""
    found = component.get("outputDefinitions", {}).get("artifacts", {})
    return {name: a.get("artifactType", {}).get("schemaTitle", "") for name, a in found.items()}


def _inputs(component: dict[str, Any]) -> set[str]:
    return set(component.get("inputDefinitions", {}).get("parameters", {}))


def _check_placeholders(
    text: str, where: str, problems: list[str], inputs: set[str], outputs: set[str], artifacts: set[str] | None = None
) -> None:
    """`artifacts`: the output artifacts of a container's component (None: not a container's command line,
    where neither they nor the executor input `{{$}}` exist)."""
    for placeholder in PLACEHOLDER.findall(text):
        if placeholder in RUNTIME_PLACEHOLDERS or (placeholder == EXECUTOR_INPUT and artifacts is not None):
            continue
        if m := INPUT_PARAMETER.match(placeholder):
            if m.group(1) not in inputs:
                problems.append(f"{where}: {placeholder} names no input parameter of its component")
        elif m := OUTPUT_PARAMETER_FILE.match(placeholder):
            if m.group(1) not in outputs:
                problems.append(f"{where}: {placeholder} names no output parameter of its component")
        elif (m := OUTPUT_ARTIFACT.match(placeholder)) and artifacts is not None:
            if m.group(1) not in artifacts:
                problems.append(f"{where}: {placeholder} names no output artifact of its component")
        else:
            problems.append(f"{where}: unsupported placeholder {placeholder}")
    if text.lstrip().startswith('{"'):
        problems.append(f"{where}: structured placeholders (IfPresent/Concat) are not supported: {text[:60]}")


def references(p: CompiledPipeline) -> list[str]:
    """Every name that does not resolve, as one line each (empty: all resolve)."""
    problems: list[str] = []
    components, executors = p.components, p.executors
    used_executors: dict[str, str] = {}

    for cname, component in components.items():
        has_dag, label = "dag" in component, component.get("executorLabel")
        if has_dag == bool(label):
            problems.append(f"component {cname}: needs exactly one of dag or executorLabel")
        if label:
            if label not in executors:
                problems.append(f"component {cname}: executor {label} is not in deploymentSpec")
                continue
            used_executors[label] = cname
            container = executors[label]["container"]
            if not container.get("image"):
                problems.append(f"executor {label}: no image")
            for part in ("command", "args"):
                for i, item in enumerate(container.get(part, [])):
                    where = f"executor {label} {part}[{i}]"
                    artifacts = set(output_artifacts(component))
                    _check_placeholders(item, where, problems, _inputs(component), _outputs(component), artifacts)
            if component.get("inputDefinitions", {}).get("artifacts"):
                problems.append(f"component {cname}: input artifacts are not supported")

    for label in executors:
        if label not in used_executors:
            problems.append(f"executor {label} is used by no component")
    for label in p.platform:
        if label not in executors:
            problems.append(f"kubernetes config for {label}, which is not an executor")

    def check_dag(owner: str, owner_component: dict[str, Any], dag: dict[str, Any]) -> None:
        tasks = dag.get("tasks", {})
        owner_inputs = _inputs(owner_component)
        for tname, task in tasks.items():
            where = f"task {owner}/{tname}"
            cref = task.get("componentRef", {}).get("name")
            if cref not in components:
                problems.append(f"{where}: component {cref} does not exist")
                continue
            component = components[cref]
            deps = task.get("dependentTasks", [])
            for dep in deps:
                if dep not in tasks:
                    problems.append(f"{where}: depends on {dep}, which is not a task of the same DAG")
            given = task.get("inputs", {}).get("parameters", {})
            for pname in sorted(_required_inputs(component) - set(given)):
                problems.append(f"{where}: required input {pname} is not given")
            for pname, source in given.items():
                if pname not in _inputs(component):
                    problems.append(f"{where}: input {pname} is not an input of {cref}")
                if "componentInputParameter" in source:
                    if source["componentInputParameter"] not in owner_inputs:
                        problems.append(
                            f"{where}: input {pname} reads {source['componentInputParameter']}, not an input of {owner}"
                        )
                elif "taskOutputParameter" in source:
                    producer = source["taskOutputParameter"].get("producerTask")
                    key = source["taskOutputParameter"].get("outputParameterKey")
                    if producer not in tasks:
                        problems.append(f"{where}: input {pname} reads task {producer}, not a task of the same DAG")
                    elif producer not in deps:
                        problems.append(f"{where}: input {pname} reads task {producer} but does not depend on it")
                    elif key not in _outputs(components.get(tasks[producer]["componentRef"]["name"], {})):
                        problems.append(f"{where}: input {pname} reads {producer}.{key}, which it does not output")
                elif "runtimeValue" in source:
                    constant = source["runtimeValue"].get("constant")
                    if isinstance(constant, str):
                        _check_placeholders(constant, f"{where} input {pname}", problems, set(), set())
                else:
                    problems.append(f"{where}: input {pname}: unsupported source {sorted(source)}")
            if task.get("inputs", {}).get("artifacts"):
                problems.append(f"{where}: input artifacts are not supported")
            if "iterator" in task or "parameterIterator" in task or "artifactIterator" in task:
                problems.append(f"{where}: loops (dsl.ParallelFor) are not supported")
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition:
                try:
                    unknown = cel.parameters(cel.parse(condition)) - set(given)
                except cel.CelError as e:
                    problems.append(f"{where}: condition: {e}")
                else:
                    for name in sorted(unknown):
                        problems.append(f"{where}: condition reads {name}, which is not an input of the task")
            if "dag" in component:
                check_dag(tname, component, component["dag"])
        try:
            topological_order(tasks)
        except OrchestrationError as e:
            problems.append(f"DAG {owner}: {e}")

    check_dag("root", p.root, p.root.get("dag", {}))
    return problems


def topological_order(tasks: dict[str, Any]) -> list[str]:
    """Task names so that every task comes after the tasks it depends on (ties: by name)."""
    remaining = {name: set(task.get("dependentTasks", [])) & set(tasks) for name, task in tasks.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps - set(order))
        if not ready:
            raise OrchestrationError(f"dependency cycle among {', '.join(sorted(remaining))}")
        order.append(ready[0])
        del remaining[ready[0]]
    return order
