"""`mnist-ct run-local`: check everything, compile (--dev), run with the local engine, summarise what the run made.

Before anything is created: the run id (whole), the work dir (workdir.py), the lock or `--pipeline` file,
every parameter's type, and every task's command line checked by its step's own parser (in the Python
or image that will run it), so `--epochs -1` fails before preprocess has run.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from mnist_ct.artifacts import check_run_id
from mnist_ct.orchestration import spec
from mnist_ct.orchestration.compiling import compile_pipeline, load_lock
from mnist_ct.orchestration.engine import LocalRun, RunResult
from mnist_ct.orchestration.errors import OrchestrationError
from mnist_ct.orchestration.executors import Executor, ProcessExecutor, load_executor
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


def check_step_options(run: LocalRun, executor: Executor) -> int:
    """Every planned task's options checked by its step's parser; the number checked. Raises when any is
    refused (exit 2) or cannot be checked (exit 3: the step is not installed, the image cannot start)."""
    tasks = run.planned()
    checks = executor.check_options(tasks)
    unchecked = [f"{t.name}: {c['unchecked']}" for t, c in zip(tasks, checks, strict=True) if c["unchecked"]]
    if unchecked:
        hint = ""
        if isinstance(executor, ProcessExecutor):
            hint = f"; {VENVS_HINT if executor.venvs else INSTALL_HINT}"
        raise OrchestrationError(f"cannot check the options of {len(unchecked)} step(s){hint}", unchecked)
    refused = [f"step {t.name}: {c['refused']}" for t, c in zip(tasks, checks, strict=True) if c["refused"]]
    if len(refused) == 1:
        raise OptionsRefused(f"{refused[0]} (nothing was run)")
    if refused:
        raise OptionsRefused(f"{len(refused)} steps refuse their options (nothing was run)", refused)
    return len(tasks)


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


def summary(result: RunResult) -> list[str]:
    """The lines a person wants after a run: steps and times, the artifacts, accuracy, deploy or not, where
    the files are."""
    lines = ["", f"run {result.run_id}:"]
    for t in result.tasks:
        if t.executor:
            detail = f"{t.seconds:7.1f} s" if t.status != "skipped" else f"  ({t.reason})"
            lines.append(f"  {t.status:<9} {t.path:<28} {detail}")
    lines += artifact_lines(result)
    analysis, deploy = result.task("analysis"), result.task("deploy")
    baseline = result.arguments.get("baseline")
    accuracy = analysis.outputs.get("accuracy") if analysis else None
    if isinstance(accuracy, float):
        lines.append(f"accuracy: {accuracy:.4f} (baseline {text_value(baseline)})")
        model = result.folders.get(MODEL.pvc, result.workdir / "model")
        report = model / "runs" / result.run_id / "analysis" / "report.html"
        lines.append(f"report: {report}{'' if report.is_file() else ' (missing!)'}")
    if deploy is None or deploy.status == "skipped":
        why = deploy.reason if deploy else "not reached"
        lines.append(f"deploy: skipped ({why})")
    elif deploy.status == "succeeded":
        store = result.folders.get(DEPLOY.pvc, result.workdir / "deploy-model") / "model-store"
        mar = store / f"{result.arguments.get('model_name', 'mnist')}.mar"
        lines.append("deploy: ran")
        lines.append(f"model archive: {mar}{'' if mar.is_file() else ' (missing!)'}")
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
        run = LocalRun(compiled, workdir, executor, params, run_id=run_id, out=out)
        checked = check_step_options(run, executor)
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
    shown = ", ".join(f"{k}={text_value(v)}" for k, v in sorted(run.arguments.items()))
    out(f"run-local: run {run_id} of {pipeline}")
    out(f"  workdir {workdir}, {executor.description}")
    out(f"  parameters: {shown}")
    out(f"  options of {checked} steps checked by their own parsers")
    started = time.monotonic()
    try:
        run.run()
    finally:
        for line in summary(run.result()):
            out(line)
    out(f"total {time.monotonic() - started:.1f} s; task log {run.state_dir / 'run.json'}")
    return 0
