"""Checks that a compiled pipeline is *this* pipeline, as designed (see pipeline.py).

`spec.parse` already proved the file well-formed (strict protobuf parse, references resolve, CEL
parses); these checks compare it with the design: one executor per step, its image equal to the lock
(pinned by digest, or a `repo:version` tag in a dev build), the command line, the PVC mounts, the
resources, caching off, the run id, the order of the steps and the two nested conditions (validate ..
analysis under `preprocess.proceed == true`, deploy inside it under `analysis.blessed == true`); the
typed output artifacts (names and schema titles) and the options that hand them to the step
(`--executor-input {{$}}`, `--output-artifact NAME=<path>`), the output parameters (`proceed`,
`accuracy`, `champion_accuracy`, `blessed`) and the pipeline parameters the loop needs, `MNIST_CT_IMAGES`
equal to the lock's images and `MNIST_CT_STEP_VERSIONS` to its versions (a dev build: the steps'
pyproject versions), the retry policies.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from mnist_ct.orchestration import cel
from mnist_ct.orchestration.lock import DIGEST, LOCK_PATH, Lock, LockError
from mnist_ct.orchestration.pipeline import (
    BLESSED_CONDITION,
    DEV_MARKER,
    EXECUTOR_INPUT,
    GATED,
    IMAGES_ENV,
    ORDER,
    PROCEED_CONDITION,
    RETRY_BACKOFF,
    RETRY_BACKOFF_FACTOR,
    RETRY_BACKOFF_MAX,
    STEPS,
    VERSIONS_ENV,
    VOLUMES,
    Step,
    image_tag,
    output_artifact_arg,
)
from mnist_ct.orchestration.spec import CompiledPipeline, output_artifacts

PINNED_IMAGE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
RUN_ID_ARG = "{{$.inputs.parameters['run_id']}}"
REQUIRED_PARAMETERS = {
    "dataset": "STRING",
    "epochs": "NUMBER_INTEGER",
    "baseline": "NUMBER_DOUBLE",
    "index": "STRING",
    "model_name": "STRING",
    "min_improvement": "NUMBER_DOUBLE",
    "only_if_changed": "BOOLEAN",
}
# Output parameters the loop's conditions and run-local's summary read: step -> name -> type.
OUTPUT_PARAMETERS = {
    "preprocess": {"proceed": "BOOLEAN"},
    "analysis": {"accuracy": "NUMBER_DOUBLE", "champion_accuracy": "NUMBER_DOUBLE", "blessed": "BOOLEAN"},
}


def step_executors(p: CompiledPipeline) -> tuple[dict[str, str], list[str]]:
    """Executor label per step, found by its command `python -m mnist_ct.<step>`; and the problems."""
    found: dict[str, str] = {}
    problems: list[str] = []
    for label, executor in sorted(p.executors.items()):
        command = executor["container"].get("command", [])
        match = re.fullmatch(r"mnist_ct\.(\w+)", command[2]) if len(command) == 3 else None
        if command[:2] != ["python", "-m"] or not match or match.group(1) not in STEPS:
            problems.append(f"executor {label}: command {command} is not `python -m mnist_ct.<step>`")
            continue
        step = match.group(1)
        if step in found:
            problems.append(f"step {step}: two executors ({found[step]}, {label})")
        found[step] = label
    for step in ORDER:
        if step not in found:
            problems.append(f"step {step}: no executor runs it")
    return found, problems


def expected_image(lock: Lock, step: str, dev: bool) -> str:
    """The image a step must have: `repo@sha256:...` from the lock; a dev build may use `repo:version`."""
    try:
        return lock.image_ref(step)
    except LockError:
        if not dev:
            raise
        entry = lock.entry(step)
        if entry.image is None:
            raise LockError(f"step {step}: no image repository in the lock") from None
        return image_tag(entry.image, entry.version)


def lock_images(lock: Lock, dev: bool) -> dict[str, str | None]:
    """The image every step must have (None where the lock has none: its own check says why)."""
    found: dict[str, str | None] = {}
    for step in ORDER:
        try:
            found[step] = expected_image(lock, step, dev)
        except LockError:
            found[step] = None
    return found


def _repository_steps() -> Path | None:
    """The `steps/` folder of the checkout: the working directory's or one above it (as find_lock looks),
    else the one beside these sources (an editable install); None outside any checkout."""
    start = Path.cwd()
    for folder in (start, *start.resolve().parents, LOCK_PATH.parents[1]):
        if (folder / "steps").is_dir() and (folder / "orchestration").is_dir():
            return folder / "steps"
    return None


def step_versions(lock: Lock, dev: bool) -> dict[str, str]:
    """Every step's version, MNIST_CT_STEP_VERSIONS: the lock's (strict: the versions its images were built
    from); a dev build: the step's pyproject version in the checkout, which is what process mode runs and
    is ahead of the lock until the next image build (so a bumped step retrains), the lock's where the
    checkout has none."""
    steps = _repository_steps() if dev else None
    found: dict[str, str] = {}
    for step in ORDER:
        pyproject = steps / step / "pyproject.toml" if steps else None
        if pyproject is not None and pyproject.is_file():
            try:
                found[step] = str(tomllib.loads(pyproject.read_text())["project"]["version"])
                continue
            except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
                raise LockError(f"{pyproject}: no [project] version ({e.__class__.__name__}: {e})") from None
        if step in lock.packages:
            found[step] = lock.entry(step).version
    return found


def _check_json_env(
    container: dict[str, Any], where: str, name: str, expected: dict[str, str | None], what: str, dev: bool
) -> list[str]:
    values = [e.get("value", "") for e in container.get("env", []) if e.get("name") == name]
    if len(values) != 1:
        return [f"{where}: no {name} environment variable (the {what} of every step, for lineage)"]
    try:
        found = json.loads(values[0])
    except json.JSONDecodeError:
        return [f"{where}: {name} is not JSON: {values[0][:60]!r}"]
    if not isinstance(found, dict):
        return [f"{where}: {name} is not a JSON object of step -> {what.rstrip('s')}"]
    differ = sorted(
        s for s in set(found) | set(expected) if expected.get(s) is not None and found.get(s) != expected[s]
    )
    extra = sorted(set(found) - set(expected))
    if differ or extra:
        source = "the steps' pyproject versions" if what == "versions" and dev else f"the lock's {what}"
        return [f"{where}: {name} differs from {source} for {', '.join(differ + extra)}"]
    return []


def _check_artifacts(component: dict[str, Any], args: list[str], step: Step, where: str) -> list[str]:
    problems: list[str] = []
    declared = output_artifacts(component)
    designed = {name: cls.schema_title for name, cls in step.outputs}
    pairs = set(zip(args, args[1:], strict=False))
    for name, title in designed.items():
        if name not in declared:
            problems.append(f"{where}: output artifact {name} ({title}) is not declared")
        elif declared[name] != title:
            problems.append(f"{where}: output artifact {name} is {declared[name] or 'untyped'}, designed {title}")
        elif ("--output-artifact", output_artifact_arg(name)) not in pairs:
            problems.append(f"{where}: no `--output-artifact {output_artifact_arg(name)}` argument")
    for name in sorted(set(declared) - set(designed)):
        problems.append(f"{where}: output artifact {name} ({declared[name]}) is not in the design")
    if designed and ("--executor-input", EXECUTOR_INPUT) not in pairs:
        problems.append(f"{where}: no `--executor-input {EXECUTOR_INPUT}` argument (its artifacts' metadata)")
    return problems


def _check_retry(task: dict[str, Any], step: Step, where: str) -> list[str]:
    found = task.get("retryPolicy")
    if not step.retries:
        return [f"{where}: has a retryPolicy; the design retries it never"] if found else []
    designed = {
        "maxRetryCount": step.retries,
        "backoffDuration": RETRY_BACKOFF,
        "backoffFactor": RETRY_BACKOFF_FACTOR,
        "backoffMaxDuration": RETRY_BACKOFF_MAX,
    }
    if found != designed:
        return [f"{where}: retryPolicy {found} is not the designed {designed}"]
    return []


def _check_executor(p: CompiledPipeline, step: Step, label: str, lock: Lock, dev: bool) -> list[str]:
    problems: list[str] = []
    container = p.executors[label]["container"]
    where = f"step {step.name} ({label})"
    component: dict[str, Any] = next((c for c in p.components.values() if c.get("executorLabel") == label), {})
    problems += _check_artifacts(component, container.get("args", []), step, where)
    problems += _check_json_env(container, where, IMAGES_ENV, lock_images(lock, dev), "images", dev)
    versions: dict[str, str | None] = {s: None for s in ORDER} | dict(step_versions(lock, dev))
    problems += _check_json_env(container, where, VERSIONS_ENV, versions, "versions", dev)

    image = container.get("image", "")
    try:
        want = expected_image(lock, step.name, dev)
    except LockError as e:
        problems.append(str(e))
    else:
        if image != want:
            problems.append(f"{where}: image {image} is not the lock's {want}")
    if not dev and not PINNED_IMAGE.match(image):
        problems.append(f"{where}: image {image} is not pinned by digest")

    args = container.get("args", [])
    roots = [x for v in step.volumes for x in (v.root_option, v.mount_path)]
    if args[:2] != ["--run-id", RUN_ID_ARG] or args[2 : 2 + len(roots)] != roots:
        problems.append(f"{where}: arguments must start with --run-id <run id> {' '.join(roots)}; found {args[:6]}")
    for arg in args[2 + len(roots) :]:
        for v in VOLUMES:
            if arg == v.mount_path or arg.startswith(v.mount_path + "/"):
                problems.append(
                    f"{where}: argument {arg} is a path on {v.pvc}; pass roots only through {v.root_option}"
                )

    mounts = sorted(p.pvc_mounts(label))
    designed = sorted((v.pvc, v.mount_path) for v in step.volumes)
    if mounts != designed:
        show = ", ".join(f"{n} at {m}" for n, m in designed) or "none"
        problems.append(f"{where}: PVC mounts {mounts} differ from the design ({show})")

    resources = container.get("resources", {})
    want_resources = {
        "resourceCpuRequest": step.cpu[0],
        "resourceCpuLimit": step.cpu[1],
        "resourceMemoryRequest": step.memory[0],
        "resourceMemoryLimit": step.memory[1],
    }
    for key, value in want_resources.items():
        if resources.get(key) != value:
            problems.append(f"{where}: {key} is {resources.get(key)!r}, designed {value!r}")
    return problems


def _task_of(p: CompiledPipeline, labels: dict[str, str]) -> dict[str, tuple[list[str], str, dict[str, Any]]]:
    by_component = {p.components[c].get("executorLabel"): c for c in p.components}
    tasks: dict[str, tuple[list[str], str, dict[str, Any]]] = {}
    for path, name, task in p.walk_tasks():
        for step, label in labels.items():
            if task["componentRef"]["name"] == by_component.get(label):
                tasks[step] = (path, name, task)
    return tasks


def _is_true(condition: str, inputs: dict[str, Any], producer: str, key: str) -> bool:
    """Whether `condition` is `<producer>.<key> == true` (kfp's form of `dsl.If(task.outputs[key] == True)`)."""
    node = cel.parse(condition)
    if not isinstance(node, cel.Binary) or node.op != "==":
        return False
    sides = (node.left, node.right)
    parameter = next((n for n in sides if isinstance(n, cel.Parameter)), None)
    literal = next((n for n in sides if isinstance(n, cel.Literal)), None)
    return (
        parameter is not None
        and literal is not None
        and literal.value is True
        and inputs.get(parameter.name, {}).get("taskOutputParameter")
        == {"producerTask": producer, "outputParameterKey": key}
    )


def _check_conditions(p: CompiledPipeline, tasks: dict[str, tuple[list[str], str, dict[str, Any]]]) -> list[str]:
    """preprocess in the root DAG; validate .. analysis in one condition of the root DAG on preprocess's
    `proceed == true` (after preprocess); deploy in a condition inside it on analysis' `blessed == true`."""
    problems: list[str] = []
    if "preprocess" in tasks and tasks["preprocess"][0]:
        problems.append(f"step preprocess: must be in the root DAG, found under {tasks['preprocess'][0]}")
    gated = {step: tasks[step][0] for step in GATED if step in tasks}
    outer = next(iter(gated.values()), None)
    for step, path in gated.items():
        if len(path) != 1 or path != outer:
            problems.append(f"step {step}: must run inside the one condition {PROCEED_CONDITION}, found under {path}")
    if not outer or len(outer) != 1 or "preprocess" not in tasks:
        return problems
    outer_task = p.root["dag"]["tasks"].get(outer[0], {})
    where = f"condition {outer[0]}"
    condition = outer_task.get("triggerPolicy", {}).get("condition")
    preprocess = tasks["preprocess"][1]
    if outer_task.get("taskInfo", {}).get("name") != PROCEED_CONDITION:
        shown = outer_task.get("taskInfo", {}).get("name")
        problems.append(f"{where}: display name {shown!r}, designed {PROCEED_CONDITION}")
    if not condition:
        problems.append(f"{where} (around validate .. analysis): no triggerPolicy.condition")
    elif not _is_true(condition, outer_task.get("inputs", {}).get("parameters", {}), preprocess, "proceed"):
        problems.append(f"{where}: condition {condition!r} is not `preprocess proceed == true`")
    if preprocess not in outer_task.get("dependentTasks", []):
        problems.append(f"{where}: does not run after preprocess")

    if "deploy" not in tasks or "analysis" not in tasks:
        return problems
    path = tasks["deploy"][0]
    if len(path) != 2 or path[0] != outer[0]:
        return [*problems, f"step deploy: must run in a condition inside {outer[0]}, found under {path or 'the root'}"]
    outer_component = p.components.get(outer_task.get("componentRef", {}).get("name", ""), {})
    inner_task = outer_component.get("dag", {}).get("tasks", {}).get(path[1], {})
    where = f"condition {path[1]}"
    condition = inner_task.get("triggerPolicy", {}).get("condition")
    analysis = tasks["analysis"][1]
    if inner_task.get("taskInfo", {}).get("name") != BLESSED_CONDITION:
        shown = inner_task.get("taskInfo", {}).get("name")
        problems.append(f"{where}: display name {shown!r}, designed {BLESSED_CONDITION}")
    if not condition:
        problems.append(f"step deploy: its enclosing task {path[1]} has no triggerPolicy.condition")
    elif not _is_true(condition, inner_task.get("inputs", {}).get("parameters", {}), analysis, "blessed"):
        problems.append(f"step deploy: condition {condition!r} is not `analysis blessed == true`")
    if analysis not in inner_task.get("dependentTasks", []):
        problems.append("step deploy: its condition does not run after analysis")
    return problems


def check(p: CompiledPipeline, lock: Lock, dev: bool) -> list[str]:
    """Every way the compiled pipeline departs from the design, one line each (empty: as designed)."""
    labels, problems = step_executors(p)
    for step, label in labels.items():
        problems += _check_executor(p, STEPS[step], label, lock, dev)

    tasks = _task_of(p, labels)
    for step in labels:
        if step not in tasks:
            problems.append(f"step {step}: no task runs it")
            continue
        path, name, task = tasks[step]
        where = f"step {step} (task {name})"
        run_id = task.get("inputs", {}).get("parameters", {}).get("run_id", {})
        if run_id.get("runtimeValue", {}).get("constant") != "{{$.pipeline_job_uuid}}":
            problems.append(f"{where}: run_id is not the pipeline job id")
        if task.get("cachingOptions", {}).get("enableCache"):
            problems.append(f"{where}: caching is on; its inputs are files on a volume, not content-addressed")
        if task.get("taskInfo", {}).get("name") != STEPS[step].display_name:
            problems.append(f"{where}: display name {task.get('taskInfo', {}).get('name')!r}")
        problems += _check_retry(task, STEPS[step], where)

    # Order: each gated step after the one before it (preprocess -> the condition: _check_conditions).
    for before, after in zip(GATED, GATED[1:], strict=False):
        if before in tasks and after in tasks and tasks[before][1] not in tasks[after][2].get("dependentTasks", []):
            problems.append(f"step {after}: does not run after {before}")
    problems += _check_conditions(p, tasks)

    for step, outputs in OUTPUT_PARAMETERS.items():
        if step not in labels:
            continue
        component = next(c for c in p.components.values() if c.get("executorLabel") == labels[step])
        declared = component.get("outputDefinitions", {}).get("parameters", {})
        for name, kind in outputs.items():
            if declared.get(name, {}).get("parameterType") != kind:
                problems.append(f"step {step}: no {kind} output parameter `{name}`")

    params = p.pipeline_parameters()
    for name, kind in REQUIRED_PARAMETERS.items():
        if params.get(name, {}).get("parameterType") != kind:
            problems.append(f"pipeline parameter {name} ({kind}) is missing")
    if params.get("baseline", {}).get("defaultValue") != 0.8:
        problems.append("pipeline parameter baseline must default to 0.8")

    if dev != p.description.startswith(DEV_MARKER):
        problems.append("a dev build must be marked not releasable" if dev else "marked as a dev build")
    return problems


def release_blockers(p: CompiledPipeline) -> list[str]:
    """Why a compiled pipeline must not be released (empty: it may)."""
    blockers = []
    if p.description.startswith(DEV_MARKER):
        blockers.append("it is a dev build (compile --dev): images by tag")
    for label, executor in sorted(p.executors.items()):
        image = executor["container"].get("image", "")
        if not PINNED_IMAGE.match(image) or not DIGEST.match(image.rsplit("@", 1)[-1]):
            blockers.append(f"{label}: image {image} is not pinned by digest")
    return blockers
