"""`mnist-ct run-local`: compile (--dev), run with the local runner, then summarise what this run made."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mnist_ct.orchestration import spec
from mnist_ct.orchestration.compiling import compile_pipeline
from mnist_ct.orchestration.errors import OrchestrationError, StepFailed
from mnist_ct.orchestration.lock import read_lock
from mnist_ct.orchestration.pipeline import DEPLOY, MODEL
from mnist_ct.orchestration.runner import (
    LocalRun,
    ProcessExecutor,
    RunResult,
    load_executor,
    new_run_id,
    text_value,
)


def summary(result: RunResult) -> list[str]:
    """The lines a person wants after a run: steps and times, accuracy, deploy or not, where the files are."""
    lines = ["", f"run {result.run_id}:"]
    for t in result.tasks:
        if t.executor:
            detail = f"{t.seconds:7.1f} s" if t.status != "skipped" else f"  ({t.reason})"
            lines.append(f"  {t.status:<9} {t.path:<28} {detail}")
    analysis, deploy = result.task("analysis"), result.task("deploy")
    baseline = result.arguments.get("baseline")
    if analysis and "accuracy" in analysis.outputs:
        accuracy = float(analysis.outputs["accuracy"])  # type: ignore[arg-type]
        lines.append(f"accuracy: {accuracy:.4f} (baseline {text_value(baseline)})")
        report = (
            result.folders.get(MODEL.pvc, result.workdir / "model")
            / "runs"
            / result.run_id
            / "analysis"
            / "report.html"
        )
        lines.append(f"report: {report}{'' if report.is_file() else ' (missing!)'}")
    if deploy is None or deploy.status == "skipped":
        why = deploy.reason if deploy else "not reached"
        lines.append(f"deploy: skipped ({why})")
    elif deploy.status == "succeeded":
        store = result.folders.get(DEPLOY.pvc, result.workdir / "deploy-model") / "model-store"
        name = str(result.arguments.get("model_name", "mnist"))
        mar = store / f"{name}.mar"
        lines.append("deploy: ran")
        lines.append(f"model archive: {mar}{'' if mar.is_file() else ' (missing!)'}")
    else:
        lines.append(f"deploy: {deploy.status}")
    return lines


def run_local(
    workdir: Path,
    lock_path: Path,
    params: Mapping[str, str],
    run_id: str | None = None,
    pipeline: Path | None = None,
    containers: bool = False,
    venvs: Path | None = None,
    out: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    workdir = Path(workdir).resolve()
    run_id = run_id or new_run_id()
    executor = load_executor(containers, venvs)
    if pipeline is None:
        pipeline = workdir / "kfp" / run_id / "pipeline.yaml"
        compiled = compile_pipeline(read_lock(lock_path), pipeline, dev=True)
    else:
        compiled = spec.load(pipeline)
    if isinstance(executor, ProcessExecutor):
        commands = [e["container"].get("command", []) for e in compiled.executors.values()]
        missing = executor.missing(commands)
        if missing:
            raise OrchestrationError(f"no Python for every step: {', '.join(missing)} missing", missing)
    run = LocalRun(compiled, workdir, executor, params, run_id=run_id, out=out)
    shown = ", ".join(f"{k}={text_value(v)}" for k, v in sorted(run.arguments.items()))
    out(f"run-local: run {run_id} of {pipeline}")
    out(f"  workdir {workdir}, {executor.description}")
    out(f"  parameters: {shown}")
    started = time.monotonic()
    try:
        result = run.run()
    except StepFailed as e:
        for line in summary(run.result()):
            out(line)
        print(f"mnist-ct run-local: error: {e}", file=sys.stderr)
        return e.exit_code
    for line in summary(result):
        out(line)
    out(f"total {time.monotonic() - started:.1f} s; task log {run.state_dir / 'run.json'}")
    return 0
