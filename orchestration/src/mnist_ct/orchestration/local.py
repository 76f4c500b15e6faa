"""`mnist-ct run-local`: check everything, compile (--dev), run with the local engine, summarise what the run made.

Before anything is created: the run id (whole), the work dir (workdir.py), the lock or `--pipeline` file,
every parameter's type, and every task's command line checked by its step's own parser (in the Python
or image that will run it), so `--epochs -1` fails before preprocess has run. A passed check is kept in
WORKDIR/.option-checks.json, keyed by the command line (the run id aside) and the fingerprint of the
Python and mnist_ct sources that decided it (process mode), so the next run of the same pipeline in the
same work dir skips it: the ~10 s of importing seven steps (torch and scikit-learn among them) would
otherwise be most of a run that preprocess ends at once (nothing changed).

At the end: the steps, the artifacts, and the loop's outcome (also in run.json as `outcome`): the
challenger's and the champion's accuracy, blessed or not and why (analysis' metrics.json `blessing`),
deployed or not, and what was skipped and on which condition.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import check_run_id
from mnist_ct.orchestration import spec
from mnist_ct.orchestration.compiling import compile_pipeline, load_lock
from mnist_ct.orchestration.engine import LocalRun, RunResult
from mnist_ct.orchestration.errors import OrchestrationError
from mnist_ct.orchestration.executors import ContainerTask, Executor, ProcessExecutor, load_executor
from mnist_ct.orchestration.parameters import text_value
from mnist_ct.orchestration.pipeline import DEPLOY, MODEL
from mnist_ct.orchestration.workdir import check_workdir, write_atomically

INSTALL_HINT = "install every step beside orchestration (`nox -s pipeline` builds that venv), or pass --venvs DIR"
VENVS_HINT = "--venvs DIR needs DIR/<step>/bin/python with the step installed (`nox -s tests` builds .nox/packages)"


class OptionsRefused(OrchestrationError):
    """A step's own parser refuses the command line run-local would give it: bad usage, exit 2."""

    exit_code = 2


def new_run_id() -> str:
    return f"local-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


OPTION_CACHE = ".option-checks.json"  # in WORKDIR: the keys of passed option checks
OPTION_CACHE_SIZE = 256


def _option_key(task: ContainerTask, fingerprint: str, run_id: str) -> str:
    argv = [a.replace(run_id, "{{run}}") for a in [*task.command, *task.args]]
    return hashlib.sha256(json.dumps([fingerprint, argv]).encode()).hexdigest()


def _name(task: ContainerTask) -> str:
    return task.name.rsplit("/", 1)[-1]


def _passed_checks(workdir: Path) -> list[str]:
    """The keys of the option checks passed before in this work dir (a cache: unreadable means none)."""
    try:
        found = json.loads((workdir / OPTION_CACHE).read_text())["passed"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [k for k in found if isinstance(k, str)] if isinstance(found, list) else []


def check_step_options(run: LocalRun, executor: Executor) -> tuple[int, int, list[str]]:
    """Every planned task's options checked by its step's parser: (tasks checked, of which passed before
    and skipped, the cache's keys to keep once the run starts). Raises when any is refused (exit 2) or
    cannot be checked (exit 3: the step is not installed, the image cannot start)."""
    planned = run.planned()
    passed = _passed_checks(run.workdir)
    keys: list[str | None] = [None] * len(planned)
    if isinstance(executor, ProcessExecutor):  # images by tag can change under the same name: no cache
        fingerprints = executor.fingerprints(planned)
        keys = [_option_key(t, f, run.run_id) if f else None for t, f in zip(planned, fingerprints, strict=True)]
    tasks = [t for t, k in zip(planned, keys, strict=True) if k is None or k not in passed]
    checks = executor.check_options(tasks) if tasks else []
    # A task by its name, not its path under the conditions (condition-1/train-model): the step is what is meant.
    unchecked = [f"{_name(t)}: {c['unchecked']}" for t, c in zip(tasks, checks, strict=True) if c["unchecked"]]
    if unchecked:
        hint = ""
        if isinstance(executor, ProcessExecutor):
            hint = f"; {VENVS_HINT if executor.venvs else INSTALL_HINT}"
        raise OrchestrationError(f"cannot check the options of {len(unchecked)} step(s){hint}", unchecked)
    refused = [f"step {_name(t)}: {c['refused']}" for t, c in zip(tasks, checks, strict=True) if c["refused"]]
    if len(refused) == 1:
        raise OptionsRefused(f"{refused[0]} (nothing was run)")
    if refused:
        raise OptionsRefused(f"{len(refused)} steps refuse their options (nothing was run)", refused)
    new = [k for k in keys if k is not None and k not in passed]
    return len(planned), len(planned) - len(tasks), (passed + new)[-OPTION_CACHE_SIZE:]


# The metadata figures shown for an artifact at the end of a run (run.json keeps all of it).
SHOWN_METADATA = ("accuracy", "data_version", "image")


def _figure(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if key == "data_version" and isinstance(value, str):
        return value[:12]  # a sha256: its first 12 hex digits tell versions apart (run.json has it whole)
    return text_value(value)


def artifact_lines(result: RunResult) -> list[str]:
    """One line per output artifact of the run: task, name, type, path, a few metadata figures."""
    lines = []
    for t in result.tasks:
        for a in t.artifacts:
            figures = [f"{k}={_figure(k, a.metadata[k])}" for k in SHOWN_METADATA if a.metadata.get(k) is not None]
            shown = f" ({', '.join(figures)})" if figures else ""
            name = f"{t.path.rsplit('/', 1)[-1]}.{a.name}"
            lines.append(f"  {name:<28} {a.type:<29} {a.path}{shown}")
    return ["artifacts:", *lines] if lines else []


def _metrics(result: RunResult) -> dict[str, Any]:
    """analysis' metrics.json of the run ({} when there is none, or it cannot be read: the summary says less)."""
    model = result.folders.get(MODEL.pvc, result.workdir / "model")
    try:
        found = json.loads((model / "runs" / result.run_id / "analysis" / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def loop_outcome(result: RunResult) -> dict[str, Any]:
    """What the run decided: proceed (preprocess), both accuracies, blessed and why (analysis), deployed,
    and every step skipped with its reason (run.json keeps it as `outcome`)."""
    preprocess, analysis, deploy = result.task("preprocess"), result.task("analysis"), result.task("deploy")
    outputs = analysis.outputs if analysis else {}
    metrics = _metrics(result) if analysis and analysis.status == "succeeded" else {}
    found = metrics.get("champion"), metrics.get("blessing")
    champion: dict[str, Any] = found[0] if isinstance(found[0], dict) else {}  # null in metrics.json: none
    blessing: dict[str, Any] = found[1] if isinstance(found[1], dict) else {}
    champion_accuracy = outputs.get("champion_accuracy")
    if isinstance(champion_accuracy, float) and champion_accuracy < 0:  # -1.0: no champion
        champion_accuracy = None
    # preprocess says why in one log line, `proceed: false (<why>)` (its README).
    logged = preprocess.log_tail if preprocess else []
    said = [line.split("proceed: ", 1)[1] for line in logged if "proceed: " in line]
    return {
        "proceed": preprocess.outputs.get("proceed") if preprocess else None,
        "proceed_reason": said[-1] if said else None,
        "challenger_accuracy": outputs.get("accuracy"),
        "champion": (
            {"version": champion.get("version"), "accuracy": champion_accuracy}
            if champion or champion_accuracy is not None
            else None
        ),
        "blessed": outputs.get("blessed"),
        "reason": blessing.get("reason"),
        "deployed": deploy is not None and deploy.status == "succeeded",
        "skipped": [{"task": t.path, "reason": t.reason} for t in result.tasks if t.status == "skipped" and t.executor],
    }


def outcome_lines(outcome: Mapping[str, Any], baseline: object) -> list[str]:
    """The loop's decision in a few lines: accuracies, blessing and why, what was skipped and why."""
    lines = []
    if outcome.get("proceed") is False:
        lines.append(f"preprocess: proceed: {outcome.get('proceed_reason') or 'false'}")
    challenger, champion = outcome.get("challenger_accuracy"), outcome.get("champion")
    if isinstance(challenger, float):
        if champion and isinstance(champion.get("accuracy"), float):
            versus = f"champion {champion['accuracy']:.4f} ({champion.get('version')}, on this run's test split)"
        else:
            versus = "no champion"
        lines.append(f"accuracy: challenger {challenger:.4f}, {versus}; baseline {text_value(baseline)}")
    if isinstance(outcome.get("blessed"), bool):
        verdict = "blessed" if outcome["blessed"] else "not blessed"
        lines.append(f"{verdict}: {outcome.get('reason') or '(analysis gave no reason)'}")
    by_reason: dict[str, list[str]] = {}
    for skipped in outcome.get("skipped", []):
        by_reason.setdefault(skipped["reason"], []).append(skipped["task"].rsplit("/", 1)[-1])
    for reason, tasks in by_reason.items():
        lines.append(f"skipped {', '.join(tasks)}: {reason}")
    return lines


def _seconds(value: object) -> str:
    return f"{value:7.1f}" if isinstance(value, int | float) else f"{'-':>7}"


def task_lines(result: RunResult) -> list[str]:
    """One line per task: its wall time here, and of it what the step measured (mnist_ct.artifacts.timing):
    its work, the overhead (wall - work: interpreter, imports, checks, export) and the start-up within it."""
    lines = [f"  {'':<9} {'task':<32} {'wall s':>7} {'work':>7} {'overhead':>8} {'start-up':>8}"]
    for t in result.tasks:
        if not t.executor:
            continue
        if t.status == "skipped":
            lines.append(f"  {t.status:<9} {t.path:<32}   ({t.reason})")
            continue
        timing = t.timing or {}
        figures = [_seconds(timing.get("work_s")), f" {_seconds(t.overhead)}", f" {_seconds(timing.get('startup_s'))}"]
        lines.append(f"  {t.status:<9} {t.path:<32} {t.seconds:7.1f} {' '.join(figures)}")
    return lines


def summary(result: RunResult) -> list[str]:
    """The lines a person wants after a run: steps and times, the artifacts, the loop's outcome (accuracies,
    blessed or not and why, what was skipped), deploy or not, where the files are."""
    lines = ["", f"run {result.run_id}:", *task_lines(result)]
    lines += artifact_lines(result)
    lines += outcome_lines(result.outcome or loop_outcome(result), result.arguments.get("baseline"))
    analysis, deploy = result.task("analysis"), result.task("deploy")
    if analysis is not None and analysis.status == "succeeded":
        model = result.folders.get(MODEL.pvc, result.workdir / "model")
        report = model / "runs" / result.run_id / "analysis" / "report.html"
        lines.append(f"report: {report}{'' if report.is_file() else ' (missing!)'}")
    if deploy is None or deploy.status == "skipped":
        why = deploy.reason if deploy else "not reached"
        lines.append(f"deploy: skipped ({why})")
    elif deploy.status == "succeeded":
        deploy_root = result.folders.get(DEPLOY.pvc, result.workdir / "deploy-model")
        name = result.arguments.get("model_name", "mnist")
        mar = deploy_root / "model-store" / f"{name}.mar"
        live = deploy_root / "kserve" / str(name) / "live"  # the KServe predictor's pointer (mnist_ct.deploy)
        lines.append("deploy: ran")
        lines.append(f"model archive: {mar}{'' if mar.is_file() else ' (missing!)'}")
        lines.append(f"KServe model: {live}{f' -> {os.readlink(live)}' if live.is_symlink() else ' (missing!)'}")
        lines.append(f"serve it: python -m mnist_ct.deploy serve --deploy-root {deploy_root}")
    else:
        lines.append(f"deploy: {deploy.status}")
    return lines


def run_local(
    workdir: Path,
    lock_path: Path | None,
    params: Mapping[str, str],
    run_id: str | None = None,
    pipeline: Path | None = None,
    containers: bool = False,
    venvs: Path | None = None,
    out: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    workdir = check_workdir(workdir, run_id)
    executor = load_executor(containers, venvs)
    with tempfile.TemporaryDirectory(prefix="mnist-ct-run-local-") as tmp:
        if pipeline is None:
            compiled_file = Path(tmp) / "pipeline.yaml"
            compiled = compile_pipeline(load_lock(lock_path), compiled_file, dev=True)
        else:
            compiled = spec.load(pipeline)
        run = LocalRun(compiled, workdir, executor, params, run_id=run_id, out=out, outcome=loop_outcome)
        before = _passed_checks(run.workdir)
        checked, cached, passed = check_step_options(run, executor)
        # Everything is known good: only now is anything created.
        if pipeline is None:
            pipeline = run.state_dir / "pipeline.yaml"
            keep_state = run.state_dir.is_dir()
            try:
                write_atomically(pipeline, compiled_file.read_bytes())
            except BaseException:  # a full or read-only disk: leave no empty run folder behind either
                if not keep_state:
                    shutil.rmtree(run.state_dir, ignore_errors=True)
                raise
        if passed != before:  # a cache: a full disk costs the next run its checks, and fails the step, not this
            with contextlib.suppress(OSError):
                write_atomically(run.workdir / OPTION_CACHE, (json.dumps({"passed": passed}) + "\n").encode())
    shown = ", ".join(f"{k}={text_value(v)}" for k, v in sorted(run.arguments.items()))
    out(f"run-local: run {run_id} of {pipeline}")
    out(f"  workdir {workdir}, {executor.description}")
    out(f"  parameters: {shown}")
    again = f" ({cached} as passed before, unchanged)" if cached else ""
    out(f"  options of {checked} steps checked by their own parsers{again}")
    started = time.monotonic()
    try:
        run.run()
    finally:
        for line in summary(run.result()):
            out(line)
    out(f"total {time.monotonic() - started:.1f} s; task log {run.state_dir / 'run.json'}")
    return 0
