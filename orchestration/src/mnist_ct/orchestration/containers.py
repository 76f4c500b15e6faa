"""Run one command in a container image, with host folders bind-mounted (standard library only).

The local runner's container mode calls `run_container(image, argv, mounts)` per task: `image` is the
pinned `repo@sha256:...` from the lock, `argv` the task's full command line (KFP `command` + `args`;
the image's ENTRYPOINT is not used, as on Kubernetes when a command is given), `mounts` maps host
folders to container paths ({workdir/"data": "/data", workdir/"model": "/model", ...}, plus the host
folders of the task's output parameters, ExecutorOutput and output artifacts: /tmp/kfp/outputs, /tmp/kfp/artifacts).

Engines, in order: Docker (when a daemon answers), buildah (`from` + `run --isolation chroot` + `rm`,
daemonless), podman. `MNIST_CT_ENGINE=docker|buildah|podman` forces one. `detect_engine` is the one
implementation of that choice; the image tooling (tools/oci.py) calls it with its own variable and probes.

The lock pins repositories of the project's registry; images built on a machine without access to it
are pushed to a local registry instead (same digests). `MNIST_CT_REGISTRY_MIRROR="ghcr.io/mnist-ct=
127.0.0.1:5000/mnist-ct"` (or the `mirrors` argument) makes the pull use the mirror, digest unchanged,
so the content is still exactly what the lock pins. Registries on localhost/127.0.0.1 are plain HTTP.

The command runs as the calling user's uid:gid (files it writes into the mounted folders belong to
you), with HOME=/tmp; pass `user=""` to keep the image's own user (10001).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

ENGINES = ("docker", "buildah", "podman")
OPTION_CHECK_TIMEOUT_S = 300.0


class ContainerError(Exception):
    """No engine, or the image could not be pulled or started (one line)."""


def _ok(argv: list[str], timeout: float = 20) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


DOCKER_RUNS = (("docker", "info", "--format", "{{.ServerVersion}}"),)  # a daemon answers


def detect_engine(
    prefer: str | None = None,
    *,
    variable: str = "MNIST_CT_ENGINE",
    docker_probes: tuple[tuple[str, ...], ...] = DOCKER_RUNS,
    what: str = "container engine",
) -> str:
    """The engine to use: `prefer`, else $`variable`, else docker (when every probe succeeds), buildah, podman.

    ContainerError (one line) when the asked-for engine is unknown or not installed, or none is there.
    """
    wanted = prefer or os.environ.get(variable) or None
    if wanted:
        if wanted not in ENGINES:
            raise ContainerError(f"unknown {what} {wanted!r}; use one of {', '.join(ENGINES)}")
        if shutil.which(wanted) is None:
            raise ContainerError(f"{what} {wanted} is not installed")
        return wanted
    if shutil.which("docker") and all(_ok(list(probe)) for probe in docker_probes):
        return "docker"
    for name in ("buildah", "podman"):
        if shutil.which(name):
            return name
    raise ContainerError(f"no {what}: install buildah (apt-get install buildah) or podman, or run Docker")


def parse_mirrors(text: str | None) -> dict[str, str]:
    """`FROM=TO[,FROM=TO...]` -> {FROM: TO}."""
    mirrors = {}
    for item in (text or "").split(","):
        if item.strip():
            source, sep, target = item.strip().partition("=")
            if not sep or not source or not target:
                raise ContainerError(f"registry mirror {item!r}: expected FROM=TO, e.g. ghcr.io/x=127.0.0.1:5000/x")
            mirrors[source.rstrip("/")] = target.rstrip("/")
    return mirrors


def pull_reference(image: str, mirrors: dict[str, str] | None = None) -> str:
    """`image` with its registry prefix replaced by a mirror's (longest prefix wins); digest kept."""
    table = parse_mirrors(os.environ.get("MNIST_CT_REGISTRY_MIRROR")) if mirrors is None else mirrors
    for source in sorted(table, key=len, reverse=True):
        if image.startswith(source + "/"):
            return table[source] + image[len(source) :]
    return image


def insecure(image: str) -> bool:
    host = image.split("/", 1)[0]
    return re.fullmatch(r"(localhost|127\.0\.0\.1|\[::1\])(:\d+)?", host) is not None


def container_argv(
    engine: str,
    image: str,
    argv: list[str],
    mounts: dict[str | Path, str],
    *,
    env: dict[str, str],
    user: str,
    name: str,
) -> list[list[str]]:
    """The engine command lines that run `argv` in `image` (buildah: from, run, rm)."""
    volumes = [f for host, target in mounts.items() for f in ("--volume", f"{Path(host).resolve()}:{target}")]
    envs = [f for k, v in sorted(env.items()) for f in ("--env", f"{k}={v}")]
    users = ["--user", user] if user else []
    if engine == "buildah":
        tls = [f"--tls-verify={'false' if insecure(image) else 'true'}"]
        return [
            ["buildah", "from", "--quiet", "--pull=false", *tls, "--name", name, image],
            ["buildah", "run", "--isolation", "chroot", *users, *volumes, *envs, name, "--", *argv],
        ]
    tls = [f"--tls-verify={'false' if insecure(image) else 'true'}"] if engine == "podman" else []
    if engine == "podman":
        # podman's default ulimits can exceed what runc may set here ("error setting rlimits"): ask for less.
        for flag, limit, cap in (("nofile", resource.RLIMIT_NOFILE, 65536), ("nproc", resource.RLIMIT_NPROC, 4096)):
            hard = resource.getrlimit(limit)[1]
            value = cap if hard == resource.RLIM_INFINITY else min(cap, hard)
            tls += ["--ulimit", f"{flag}={value}:{value}"]
    entry = ["--entrypoint", argv[0]] if argv else []
    return [[engine, "run", "--rm", *tls, "--name", name, *users, *volumes, *envs, *entry, image, *argv[1:]]]


def _execute(argv: list[str], log, capture_output: bool, timeout: float | None) -> subprocess.CompletedProcess:
    if log is None:
        return subprocess.run(argv, capture_output=capture_output, text=True, timeout=timeout, check=False)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log(line.rstrip("\n"))
    return subprocess.CompletedProcess(argv, proc.returncode)


def run_container(
    image: str,
    argv: list[str],
    mounts: dict[str | Path, str] | None = None,
    *,
    engine: str | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
    mirrors: dict[str, str] | None = None,
    timeout: float | None = None,
    capture_output: bool = False,
    log: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run `argv` in `image` with `mounts` ({host folder: container path}); the command's exit status.

    Host folders are created if missing. With `log`, each output line (stdout and stderr) goes to it.
    ContainerError if no engine works or the image cannot be had; the command's own failure is its
    returncode (the caller decides).
    """
    engine = detect_engine(engine)
    mounts = dict(mounts or {})
    for host in mounts:
        Path(host).mkdir(parents=True, exist_ok=True)
    user = f"{os.getuid()}:{os.getgid()}" if user is None else user
    env = {"HOME": "/tmp", **(env or {})}
    ref = pull_reference(image, mirrors)
    name = f"mnist-ct-{uuid.uuid4().hex[:12]}"
    commands = container_argv(engine, ref, argv, mounts, env=env, user=user, name=name)
    if engine != "buildah":
        return _execute(commands[0], log, capture_output, timeout)
    pulled = subprocess.run(commands[0], capture_output=True, text=True, check=False)
    if pulled.returncode != 0:
        last = (pulled.stderr.strip().splitlines() or ["failed"])[-1]
        raise ContainerError(f"buildah from {ref}: {last}")
    try:
        return _execute(commands[1], log, capture_output, timeout)
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


class ContainerExecutor:
    """The local runner's container mode (`mnist-ct run-local --containers`): the executors.Executor protocol.

    Each task runs in its image (the lock's pin; MNIST_CT_REGISTRY_MIRROR maps the registry), its
    command + args unchanged (container paths), each of its mounts a bind mount of the host folder.
    """

    sees_host_paths = False  # the task sees its mounts' container paths

    def __init__(self, engine: str | None = None, mirrors: dict[str, str] | None = None, user: str | None = None):
        self.engine = detect_engine(engine)
        self.mirrors = mirrors
        self.user = user
        self.description = f"container mode ({self.engine})"

    def run(self, task, log: Callable[[str], None]) -> int:
        mounts: dict[str | Path, str] = {Path(m.host): m.container_path for m in task.mounts}
        try:
            done = run_container(
                task.image, [*task.command, *task.args], mounts, engine=self.engine, env=dict(task.env),
                user=self.user, mirrors=self.mirrors, log=log,
            )  # fmt: skip
        except ContainerError as e:
            log(f"cannot start {task.image}: {e}")
            return 125
        return done.returncode

    def check_options(self, tasks) -> list[dict[str, str | None]]:
        """Each task's command line checked by its step's parser inside its own image (one container each,
        no volumes: the options are checked, not the folders)."""
        # Imported here: tools/oci.py loads this module by path, with the standard library alone.
        from mnist_ct.orchestration import step_options

        checks: list[dict[str, str | None]] = []
        for task in tasks:
            command = list(task.command)
            if len(command) != 3 or command[1] != "-m" or not command[2].startswith("mnist_ct."):
                checks.append({"refused": None, "unchecked": f"command {command} is not `python -m mnist_ct.<step>`"})
                continue
            argv = [command[0], *step_options.command([{"module": command[2], "argv": list(task.args)}])]
            try:
                done = run_container(
                    task.image, argv, {}, engine=self.engine, env=dict(task.env), user=self.user,
                    mirrors=self.mirrors, capture_output=True, timeout=OPTION_CHECK_TIMEOUT_S,
                )  # fmt: skip
                if done.returncode != 0:
                    raise ContainerError((done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1])
                checks += step_options.results(done.stdout, 1)
            except (ContainerError, ValueError, subprocess.TimeoutExpired) as e:
                checks.append({"refused": None, "unchecked": f"the check in {task.image} failed: {e}"})
        return checks
