"""Who runs a task of a local run: an `Executor` gets the container the pod would run and returns its exit code.

- `ProcessExecutor` (process mode, the default) runs `python -m mnist_ct.<step>` with the installed step
  packages: this Python, or with `venvs` each step's own venv (`<venvs>/<step>/bin/python`). An argument
  equal to a mount path or under one (`/data`, `/model/x`) is rewritten to the host folder behind it.
- `containers.ContainerExecutor` (`--containers`) runs the task in its image, its mounts bind-mounted,
  its command line unchanged.

Both check every task's options before the run starts (`check_options`, with the step's own parser in
the Python that will run it: step_options.py). A process executor also says what that check's verdict
depends on (`fingerprints`: the Python and every mnist_ct source file it would import), so run-local can
keep a passed check and skip it next time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mnist_ct.artifacts import EnvironmentProblem, UsageError
from mnist_ct.orchestration import step_options
from mnist_ct.orchestration.errors import OrchestrationError

OPTION_CHECK_TIMEOUT_S = 300.0
# Run in the step's Python: its version and every mnist_ct source file it sees (path, size, mtime), hashed.
# What a step's parser decides depends on nothing else (its options' types and rules are in those files).
FINGERPRINT_SOURCE = """
import hashlib, os, sys
import mnist_ct
h = hashlib.sha256(f"{sys.executable} {sys.version}".encode())
for root in sorted(set(mnist_ct.__path__)):
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                h.update(f"{folder}/{name} {st.st_size} {st.st_mtime_ns}\\n".encode())
print(h.hexdigest())
"""
STOP_TIMEOUT_S = 30.0


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


OptionCheck = dict[str, str | None]  # step_options.check's result: {"refused": ..., "unchecked": ...}


class Executor(Protocol):
    description: str
    # True when the task sees this machine's paths (process mode): the engine then writes host paths
    # into what only it resolves (the executor input `{{$}}`, `--output-artifact NAME=<path>`); False
    # when the task sees the container paths of its mounts.
    sees_host_paths: bool

    def run(self, task: ContainerTask, log: Callable[[str], None]) -> int:
        """Run the task to completion, passing each output line to `log`; return its exit code."""
        ...

    def check_options(self, tasks: list[ContainerTask]) -> list[OptionCheck]:
        """Each task's command line checked by its step's own parser, without running the step (same order)."""
        ...


def host_path(arg: str, mounts: list[Mount]) -> str:
    """`arg` with a leading mount path replaced by its host folder (`/data/x` -> `<workdir>/data/x`)."""
    for mount in sorted(mounts, key=lambda m: len(m.container_path), reverse=True):
        prefix = mount.container_path.rstrip("/")
        if arg == prefix or arg.startswith(prefix + "/"):
            return str(mount.host) + arg[len(prefix) :]
    return arg


def step_module(command: list[str]) -> str | None:
    """`mnist_ct.<step>` of a `python -m mnist_ct.<step>` command; None for any other command."""
    if len(command) != 3 or command[0] not in ("python", "python3") or command[1] != "-m":
        return None
    module = command[2]
    step = module.removeprefix("mnist_ct.")
    return module if module.startswith("mnist_ct.") and step.isidentifier() else None


class ProcessExecutor:
    """Run `python -m mnist_ct.<step>` with the installed step packages, mount paths mapped to folders.

    The Python is this one (every step installed beside orchestration), or with `venvs` each step's own
    venv, `<venvs>/<step>/bin/python` (the layout of `nox -s tests`' .nox/packages): each step then
    runs with only what its own pyproject installs, as in its image.
    """

    sees_host_paths = True

    def __init__(self, python: str = sys.executable, venvs: Path | None = None) -> None:
        self.python = python
        self.venvs = Path(venvs).resolve() if venvs else None
        self.description = f"process mode, per-step venvs under {self.venvs}" if venvs else f"process mode ({python})"

    def python_for(self, command: list[str]) -> str:
        if self.venvs is None:
            return self.python
        module = step_module(command)
        if module is None:
            raise OrchestrationError(f"per-step venvs: cannot tell the step of command {command}")
        return str(self.venvs / module.removeprefix("mnist_ct.") / "bin" / "python")

    def _argv(self, task: ContainerTask) -> list[str]:
        python = self.python_for(task.command)
        command = [python if c in ("python", "python3") else c for c in task.command]
        return [command[0], *(host_path(a, task.mounts) for a in [*command[1:], *task.args])]

    def run(self, task: ContainerTask, log: Callable[[str], None]) -> int:
        argv = self._argv(task)
        env = {**os.environ, **task.env, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        except OSError as e:
            log(f"cannot start {argv[0]}: {e.strerror}")
            return 127
        with proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log(line.rstrip("\n"))
            except BaseException:  # SIGINT/SIGTERM to run-local: the step gets SIGTERM and cleans up as it ends
                stop(proc)
                raise
        return proc.returncode

    def fingerprints(self, tasks: list[ContainerTask]) -> list[str | None]:
        """Per task, a hash of what its option check depends on (FINGERPRINT_SOURCE, in the Python that runs
        it); None where that cannot be told (then the check runs)."""
        pythons: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            if step_module(task.command) is not None:
                pythons.setdefault(self.python_for(task.command), []).append(i)
        found: list[str | None] = [None] * len(tasks)
        with ThreadPoolExecutor(max_workers=len(pythons) or 1) as pool:
            for python, fingerprint in zip(pythons, pool.map(_fingerprint, pythons), strict=True):
                for i in pythons[python]:
                    found[i] = fingerprint
        return found

    def check_options(self, tasks: list[ContainerTask]) -> list[OptionCheck]:
        checks: list[OptionCheck] = [{"refused": None, "unchecked": None} for _ in tasks]
        by_python: dict[str, list[int]] = {}
        for i, task in enumerate(tasks):
            if step_module(task.command) is None:
                checks[i]["unchecked"] = f"command {task.command} is not `python -m mnist_ct.<step>`"
            else:
                by_python.setdefault(self.python_for(task.command), []).append(i)
        requests = {
            python: [
                {"module": tasks[i].command[2], "argv": [host_path(a, tasks[i].mounts) for a in tasks[i].args]}
                for i in indexes
            ]
            for python, indexes in by_python.items()
        }
        # One Python per venv: start them side by side (each imports its step, torch or faiss included).
        with ThreadPoolExecutor(max_workers=len(requests) or 1) as pool:
            found = dict(zip(requests, pool.map(run_option_check, requests, requests.values()), strict=True))
        for python, indexes in by_python.items():
            for i, result in zip(indexes, found[python], strict=True):
                checks[i] = result
        return checks


def _fingerprint(python: str) -> str | None:
    if not Path(python).is_file():
        return None
    try:
        done = subprocess.run(
            [python, "-c", FINGERPRINT_SOURCE], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.split()
    return lines[-1] if done.returncode == 0 and lines else None


def run_option_check(python: str, requests: list[dict[str, object]]) -> list[OptionCheck]:
    """step_options.py's results for `requests`, run by `python`; every request unchecked if that fails."""
    if not Path(python).is_file():
        return [{"refused": None, "unchecked": f"no Python {python}"} for _ in requests]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            [python, *step_options.command(requests)],
            capture_output=True,
            text=True,
            env=env,
            timeout=OPTION_CHECK_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise ValueError((done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1])
        return step_options.results(done.stdout, len(requests))
    except (OSError, subprocess.TimeoutExpired, ValueError, json.JSONDecodeError) as e:
        return [{"refused": None, "unchecked": f"the check with {python} failed: {e}"} for _ in requests]


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM a child (the step's error boundary removes what it was publishing), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load_executor(containers: bool, venvs: Path | None = None) -> Executor:
    """Process mode, or (`containers`) the step images through a container engine."""
    if not containers:
        return ProcessExecutor(venvs=venvs)
    if venvs is not None:
        raise UsageError("--venvs is for process mode; --containers runs the images")
    from mnist_ct.orchestration.containers import ContainerError, ContainerExecutor

    try:
        return ContainerExecutor()
    except ContainerError as e:
        raise EnvironmentProblem(f"container mode: {e}") from None
