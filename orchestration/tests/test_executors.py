"""The executors: process mode (this Python or per-step venvs), container mode through a stand-in engine, and
the check of a step's options with its own parser (step_options.py)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from mnist_ct.artifacts import EnvironmentProblem, UsageError
from mnist_ct.orchestration import containers, step_options
from mnist_ct.orchestration.executors import ContainerTask, Mount, ProcessExecutor, load_executor, step_module

CORE = ["--run-id", "r1", "--data-root", "/data", "--model-root", "/model"]

# A stand-in `podman` (container_argv's podman command line): runs the command here, a mount's container
# path rewritten to its host folder, so container mode is tested without an engine.
FAKE_PODMAN = f"""#!{sys.executable}
import os, sys
args, env, volumes, entry = sys.argv[1:], dict(os.environ), {{}}, None
assert args.pop(0) == "run"
while args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("--rm",) or flag.startswith("--tls-verify="):
        continue
    value = args.pop(0)
    if flag == "--env":
        env.__setitem__(*value.split("=", 1))
    elif flag == "--volume":
        host, target = value.rsplit(":", 1)
        volumes[target] = host
    elif flag == "--entrypoint":
        entry = value
image, rest = args[0], args[1:]
if image.endswith(":missing"):
    sys.exit("Error: " + image + ": image not known")
def host(a):
    for target, path in volumes.items():
        if a == target or a.startswith(target + "/"):
            return path + a[len(target):]
    return a
argv = [sys.executable if entry == "python" else entry, *map(host, rest)]
os.execve(argv[0], argv, env)
"""


def task(args: list[str], command: list[str] | None = None, mounts: list[Mount] | None = None) -> ContainerTask:
    return ContainerTask("t", "t", "unused:1", command or ["python", "-m", "mnist_ct.train_model"], args, mounts or [])


@pytest.fixture
def fake_podman(tmp_path, fake_steps, monkeypatch) -> Path:
    folder = tmp_path / "engine"
    folder.mkdir()
    (folder / "podman").write_text(FAKE_PODMAN)
    (folder / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MNIST_CT_ENGINE", "podman")
    return folder


@pytest.fixture
def in_process_fake_steps(fake_step_packages, monkeypatch):
    """The fake steps importable in this process (step_options.check runs here), removed again after."""
    monkeypatch.syspath_prepend(str(fake_step_packages))
    yield
    for name in [
        m for m in sys.modules if m.startswith("mnist_ct.") and m.split(".")[1] not in ("artifacts", "orchestration")
    ]:
        del sys.modules[name]


def test_process_executor_runs_the_command_with_mount_paths_on_the_host(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    script = "import sys, pathlib; pathlib.Path(sys.argv[2]).write_text(sys.argv[1]); print('wrote', sys.argv[2])"
    written = ContainerTask(
        "t", "t", "unused:1", ["python", "-c", script], ["/datax/not-a-mount", "/data/out.txt"], [Mount(data, "/data")]
    )
    lines: list[str] = []
    assert ProcessExecutor(sys.executable).run(written, lines.append) == 0
    assert (data / "out.txt").read_text() == "/datax/not-a-mount"
    assert lines == [f"wrote {data / 'out.txt'}"]
    failing = ContainerTask("f", "f", "unused:1", ["python", "-c", "raise SystemExit(4)"], [], [])
    assert ProcessExecutor(sys.executable).run(failing, lines.append) == 4
    missing = ContainerTask("m", "m", "unused:1", ["/nonexistent/bin/tool"], [], [])
    assert ProcessExecutor(sys.executable).run(missing, lines.append) == 127
    assert lines[-1] == "cannot start /nonexistent/bin/tool: No such file or directory"


def test_an_interrupted_run_stops_the_step_with_sigterm_and_goes_on(tmp_path):
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (open(sys.argv[1], 'w').write('terminated'), sys.exit(143)))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    marker = tmp_path / "marker"
    sleeper = ContainerTask("s", "s", "unused:1", ["python", "-c", script], [str(marker)], [])

    def log(line: str) -> None:
        raise KeyboardInterrupt  # what SIGINT raises in run-local's main thread while it reads the step's output

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor(sys.executable).run(sleeper, log)
    assert marker.read_text() == "terminated"
    assert time.monotonic() - started < 30


def test_per_step_venvs_run_each_step_with_its_own_python(tmp_path):
    venvs = tmp_path / "venvs"
    (venvs / "orchestration" / "bin").mkdir(parents=True)
    python = venvs / "orchestration" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # stands for the venv's interpreter
    python.chmod(0o755)
    executor = ProcessExecutor(venvs=venvs)
    help_task = ContainerTask("t", "t", "unused:1", ["python", "-m", "mnist_ct.orchestration"], ["--help"], [])
    lines: list[str] = []
    assert executor.run(help_task, lines.append) == 0
    assert lines[0].startswith("usage: mnist-ct")
    assert executor.python_for(["python", "-m", "mnist_ct.train_model"]) == str(
        venvs.resolve() / "train_model" / "bin" / "python"
    )
    [check] = executor.check_options([task(CORE)])
    assert check == {"refused": None, "unchecked": f"no Python {venvs.resolve() / 'train_model' / 'bin' / 'python'}"}
    with pytest.raises(Exception, match="cannot tell the step"):
        executor.python_for(["python", "-c", "pass"])


def test_a_step_command_is_python_m_mnist_ct_step():
    assert step_module(["python", "-m", "mnist_ct.train_model"]) == "mnist_ct.train_model"
    assert step_module(["python3", "-m", "mnist_ct.deploy"]) == "mnist_ct.deploy"
    for command in (
        ["python", "-m", "os"],
        ["python", "-c", "x"],
        ["sh", "-m", "mnist_ct.x"],
        ["python", "-m", "mnist_ct.a-b"],
    ):
        assert step_module(command) is None


def test_options_are_checked_by_each_steps_own_parser_in_its_python(fake_steps, tmp_path):
    checks = ProcessExecutor(sys.executable).check_options(
        [
            task([*CORE, "--epochs", "3"]),
            task([*CORE, "--epochs", "-1"]),
            task([*CORE, "--index", "HNSW0"], ["python", "-m", "mnist_ct.train_faiss"]),
            task([*CORE], ["python", "-m", "mnist_ct.no_such_step"]),
            task([], ["sh", "-c", "true"]),
            task(["--run-id", "r1", "--data-root", "/data/runs"], mounts=[Mount(tmp_path / "absent", "/data")]),
        ]
    )
    assert checks[0] == {"refused": None, "unchecked": None}
    assert checks[1] == {"refused": "argument --epochs: must be from 1 to 10000, got -1", "unchecked": None}
    assert checks[2] == {"refused": "--index 'HNSW0': not a FAISS index factory string", "unchecked": None}
    assert str(checks[3]["unchecked"]).startswith("cannot import mnist_ct.no_such_step.__main__ (ModuleNotFoundError: ")
    assert checks[4] == {
        "refused": None,
        "unchecked": "command ['sh', '-c', 'true'] is not `python -m mnist_ct.<step>`",
    }
    assert checks[5] == {"refused": None, "unchecked": None}  # the host folder does not exist yet: fine


def test_a_volume_root_that_is_a_file_is_refused_by_the_steps_parser(fake_steps, tmp_path):
    (tmp_path / "data").write_text("not a folder")
    [check] = ProcessExecutor(sys.executable).check_options([task(CORE, mounts=[Mount(tmp_path / "data", "/data")])])
    assert (
        check["refused"]
        == f"argument --data-root: {tmp_path / 'data'}: is a file, not a folder; pass the volume's folder"
    )


def test_the_option_check_reports_a_python_that_fails(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'Fatal Python error: no encodings' >&2\nexit 1\n")
    broken.chmod(0o755)
    [check] = ProcessExecutor(str(broken)).check_options([task(CORE)])
    assert check == {"refused": None, "unchecked": f"the check with {broken} failed: Fatal Python error: no encodings"}


def test_the_step_option_check_runs_in_this_process_too(in_process_fake_steps, tmp_path):
    assert step_options.check("mnist_ct.train_model", CORE) == {"refused": None, "unchecked": None}
    assert step_options.check("mnist_ct.train_model", [*CORE, "--epochs", "x"])["refused"] == (
        "argument --epochs: invalid integer value: 'x'"
    )
    assert step_options.check("mnist_ct.train_model", [])["refused"] == "the following arguments are required: --run-id"
    no_parser = tmp_path / "noparser"
    (no_parser / "mnist_ct" / "bare").mkdir(parents=True)
    (no_parser / "mnist_ct" / "bare" / "__main__.py").write_text("")
    (no_parser / "mnist_ct" / "crashing").mkdir(parents=True)
    (no_parser / "mnist_ct" / "crashing" / "__main__.py").write_text(
        "import argparse\ndef build_parser():\n    return argparse.ArgumentParser()\n"
        "def options_from_args(args):\n    raise KeyError('threads')\n"
    )
    sys.path.insert(0, str(no_parser))
    try:
        assert step_options.check("mnist_ct.bare", []) == {
            "refused": None,
            "unchecked": "mnist_ct.bare.__main__ has no build_parser()",
        }
        assert step_options.check("mnist_ct.crashing", []) == {"refused": "KeyError: 'threads'", "unchecked": None}
    finally:
        sys.path.remove(str(no_parser))
    with pytest.raises(ValueError, match="expected 2 results"):
        step_options.results("[]\n", 2)


def test_process_mode_is_the_default_and_container_mode_needs_an_engine(monkeypatch):
    assert isinstance(load_executor(containers=False), ProcessExecutor)
    with pytest.raises(UsageError, match="--venvs is for process mode"):
        load_executor(containers=True, venvs=Path("x"))
    monkeypatch.setenv("MNIST_CT_ENGINE", "rocket")
    with pytest.raises(EnvironmentProblem, match="container mode: unknown container engine 'rocket'"):
        load_executor(containers=True)


def test_the_engine_is_the_one_asked_for_or_the_first_installed(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_CT_ENGINE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(containers.ContainerError, match="no container engine: install buildah"):
        containers.detect_engine()
    with pytest.raises(containers.ContainerError, match="container engine podman is not installed"):
        containers.detect_engine("podman")
    with pytest.raises(containers.ContainerError, match="image builder podman is not installed"):
        containers.detect_engine(variable="MNIST_CT_BUILDER", what="image builder", prefer="podman")
    for name in ("docker", "buildah"):
        (tmp_path / name).write_text("#!/bin/sh\nexit 1\n")  # a docker client without a daemon
        (tmp_path / name).chmod(0o755)
    assert containers.detect_engine() == "buildah"
    assert containers.detect_engine(docker_probes=()) == "docker"
    monkeypatch.setenv("MNIST_CT_BUILDER", "docker")
    assert containers.detect_engine(variable="MNIST_CT_BUILDER") == "docker"


def test_container_mode_runs_the_task_in_its_image_with_its_mounts(fake_podman, tmp_path):
    executor = load_executor(containers=True)
    assert isinstance(executor, containers.ContainerExecutor) and executor.description == "container mode (podman)"
    data = tmp_path / "data"
    script = "import os, sys; open(sys.argv[1], 'w').write(os.environ['HOME']); print('wrote', sys.argv[1])"
    written = ContainerTask(
        "t", "t", "ghcr.io/x/y@sha256:0", ["python", "-c", script], ["/data/out.txt"], [Mount(data, "/data")]
    )
    lines: list[str] = []
    assert executor.run(written, lines.append) == 0
    assert (data / "out.txt").read_text() == "/tmp"  # HOME=/tmp in the container; /data bind-mounted from `data`
    assert lines == [f"wrote {data / 'out.txt'}"]


def test_container_mode_checks_each_steps_options_in_its_image(fake_podman):
    executor = containers.ContainerExecutor()
    image = "ghcr.io/mnist-ct/mnist-ct-train-model@sha256:0"
    tasks = [
        ContainerTask("a", "a", image, ["python", "-m", "mnist_ct.train_model"], [*CORE, "--epochs", "2"], []),
        ContainerTask("b", "b", image, ["python", "-m", "mnist_ct.train_model"], [*CORE, "--seed", "-3"], []),
        ContainerTask("c", "c", "ghcr.io/x:missing", ["python", "-m", "mnist_ct.train_model"], CORE, []),
        ContainerTask("d", "d", image, ["sh", "-c", "true"], [], []),
    ]
    a, b, c, d = executor.check_options(tasks)
    assert a == {"refused": None, "unchecked": None}
    assert b == {"refused": "argument --seed: must be from 0 to 4294967295, got -3", "unchecked": None}
    assert c == {
        "refused": None,
        "unchecked": "the check in ghcr.io/x:missing failed: Error: ghcr.io/x:missing: image not known",
    }
    assert d["unchecked"] == "command ['sh', '-c', 'true'] is not `python -m mnist_ct.<step>`"


def test_a_stopped_step_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    from mnist_ct.orchestration import executors

    monkeypatch.setattr(executors, "STOP_TIMEOUT_S", 0.5)
    script = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    stubborn = ContainerTask("s", "s", "unused:1", ["python", "-c", script], [], [])

    def log(line: str) -> None:
        raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor(sys.executable).run(stubborn, log)
    assert time.monotonic() - started < 20  # SIGKILLed after the grace period, and reaped
