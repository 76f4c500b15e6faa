"""Checks that a compiled pipeline is *this* pipeline, as designed (see pipeline.py).

`spec.parse` already proved the file well-formed (strict protobuf parse, references resolve, CEL
parses); these checks compare it with the design: one executor per step, its image equal to the lock
(pinned by digest, or a `repo:version` tag in a dev build), the command line, the PVC mounts, the
resources, caching off, the run id, the order of the steps and the deploy condition; the typed output
artifacts (names and schema titles) and the options that hand them to the step (`--executor-input {{$}}`,
`--output-artifact NAME=<path>`), `MNIST_CT_IMAGES` equal to the lock's images, the retry policies.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mnist_ct.orchestration import cel
from mnist_ct.orchestration.lock import DIGEST, Lock, LockError
from mnist_ct.orchestration.pipeline import (
    DEV_MARKER,
    EXECUTOR_INPUT,
    IMAGES_ENV,
    ORDER,
    RETRY_BACKOFF,
    RETRY_BACKOFF_FACTOR,
    RETRY_BACKOFF_MAX,
    STEPS,
    VOLUMES,
    Step,
    image_tag,
    output_artifact_arg,
)
from mnist_ct.orchestration.spec import CompiledPipeline, output_artifacts

PINNED_IMAGE = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
RUN_ID_ARG = "{{$.inputs.parameters['run_id']}}"
REQUIRED_PARAMETERS = {"dataset": "STRING", "epochs": "NUMBER_INTEGER", "baseline": "NUMBER_DOUBLE", "index": "STRING"}


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


def _check_images_env(container: dict[str, Any], where: str, images: dict[str, str | None]) -> list[str]:
    values = [e.get("value", "") for e in container.get("env", []) if e.get("name") == IMAGES_ENV]
    if len(values) != 1:
        return [f"{where}: no {IMAGES_ENV} environment variable (the images of every step, for lineage)"]
    try:
        found = json.loads(values[0])
    except json.JSONDecodeError:
        return [f"{where}: {IMAGES_ENV} is not JSON: {values[0][:60]!r}"]
    if not isinstance(found, dict):
        return [f"{where}: {IMAGES_ENV} is not a JSON object of step -> image"]
    differ = sorted(s for s in set(found) | set(images) if images.get(s) is not None and found.get(s) != images.get(s))
    extra = sorted(set(found) - set(images))
    if differ or extra:
        return [f"{where}: {IMAGES_ENV} differs from the lock's images for {', '.join(differ + extra)}"]
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
    problems += _check_images_env(container, where, lock_images(lock, dev))

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


def _check_condition(p: CompiledPipeline, tasks: dict[str, tuple[list[str], str, dict[str, Any]]]) -> list[str]:
    if "deploy" not in tasks or "analysis" not in tasks:
        return []
    path, _, _ = tasks["deploy"]
    if len(path) != 1:
        return [f"step deploy: must run inside exactly one condition, found it under {path or 'the root'}"]
    condition_task = p.root["dag"]["tasks"].get(path[0], {})
    condition = condition_task.get("triggerPolicy", {}).get("condition")
    if not condition:
        return [f"step deploy: its enclosing task {path[0]} has no triggerPolicy.condition"]
    analysis_task = tasks["analysis"][1]
    node = cel.parse(condition)
    inputs = condition_task.get("inputs", {}).get("parameters", {})
    ok = (
        isinstance(node, cel.Binary)
        and node.op == ">"
        and isinstance(node.left, cel.Parameter)
        and isinstance(node.right, cel.Parameter)
        and inputs.get(node.left.name, {}).get("taskOutputParameter")
        == {"producerTask": analysis_task, "outputParameterKey": "accuracy"}
        and inputs.get(node.right.name, {}).get("componentInputParameter") == "baseline"
    )
    return [] if ok else [f"step deploy: condition {condition!r} is not `analysis accuracy > baseline`"]


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
        if step != "deploy" and path:
            problems.append(f"{where}: must be in the root DAG, found under {path}")
        problems += _check_retry(task, STEPS[step], where)

    # Order: each step after the one before it; deploy's condition after analysis.
    chain = [s for s in ORDER if s != "deploy"]
    for before, after in zip(chain, chain[1:], strict=False):
        if before in tasks and after in tasks and tasks[before][1] not in tasks[after][2].get("dependentTasks", []):
            problems.append(f"step {after}: does not run after {before}")
    if "deploy" in tasks and "analysis" in tasks and tasks["deploy"][0]:
        condition_task = p.root["dag"]["tasks"].get(tasks["deploy"][0][0], {})
        if tasks["analysis"][1] not in condition_task.get("dependentTasks", []):
            problems.append("step deploy: its condition does not run after analysis")
    problems += _check_condition(p, tasks)

    if "analysis" in labels:
        component = next(c for c in p.components.values() if c.get("executorLabel") == labels["analysis"])
        accuracy = component.get("outputDefinitions", {}).get("parameters", {}).get("accuracy", {})
        if accuracy.get("parameterType") != "NUMBER_DOUBLE":
            problems.append("step analysis: no float output parameter `accuracy`")

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
