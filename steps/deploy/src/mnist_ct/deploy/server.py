"""A local TorchServe on 127.0.0.1 serving a deploy root's live archive (for `serve`, tests, benchmarks).

TorchServe keeps its pid file and worker sockets in the temporary folder and writes logs/ into
its working directory, so each LocalServer gets a private, short temporary folder (TMPDIR, TEMP,
and the JVM's java.io.tmpdir, where it also unpacks the archive) and its own work folder:
several can run on one machine, each on its own ports.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mnist_ct.artifacts import ArtifactError, Log, UsageError

from . import serving_config
from .archive import inspect_archive
from .serving_config import ServingOptions

CONFIG_RELATIVE = Path("config") / "config.properties"
PORT_NAMES = ("inference", "management", "metrics", "grpc_inference", "grpc_management")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _torchserve_launcher() -> list[str]:
    exe = Path(sys.executable).with_name("torchserve")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ts.model_server"]


@dataclass
class LocalServer:
    """TorchServe serving `<deploy_root>/model-store/<model>.mar` as configured in config/config.properties.

    `ports`: 0 (the default) picks a free port. `overrides`: ServingOptions fields to change
    (e.g. batch_size=1 to compare batching off).
    """

    deploy_root: Path
    ports: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, int] = field(default_factory=dict)
    workdir: Path | None = None
    ready_timeout_s: float = 180.0
    model_name: str = ""
    version: str = ""
    options: ServingOptions = field(default_factory=ServingOptions)
    _tmp: Path | None = None
    _pid: int | None = None
    _own_workdir: bool = False
    _log_file: Any = None

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['inference']}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['management']}"

    @property
    def predict_url(self) -> str:
        return f"{self.inference_url}/predictions/{self.model_name}"

    def _prepare(self) -> list[str]:
        root = Path(self.deploy_root).resolve()
        config = root / CONFIG_RELATIVE
        if not config.is_file():
            raise ArtifactError(f"{config}: missing; run deploy first (it writes the TorchServe configuration)")
        props = serving_config.parse(config.read_text(), config)
        self.model_name, options = serving_config.snapshot_of(props, config)
        self.options = replace(options, **self.overrides)
        mar = root / "model-store" / f"{self.model_name}.mar"
        self.version = inspect_archive(mar).version
        if importlib.util.find_spec("ts") is None:
            raise ArtifactError("torchserve is not installed here: pip install 'mnist-ct-deploy[serve]'")
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise ArtifactError("java not found: TorchServe needs a Java 17 runtime (openjdk-17-jre-headless)")
        self.ports = {name: self.ports.get(name) or free_port() for name in PORT_NAMES}
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="mnist-ct-serve-"))
            self._own_workdir = True
        self.workdir = Path(self.workdir).resolve()
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        # Unix socket paths are limited to ~107 bytes: keep this one short, whatever the workdir.
        self._tmp = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
        local = serving_config.local_properties(self.model_name, self.options, root / "model-store", self.ports)
        local["vmargs"] = f"-Xmx1g -Djava.io.tmpdir={self._tmp}"
        (self.workdir / "config.properties").write_text(serving_config.render(local, ["local mnist-ct serve"]))
        return [
            *_torchserve_launcher(),
            "--start",
            "--ncs",
            "--disable-token-auth",
            "--ts-config",
            str(self.workdir / "config.properties"),
            "--model-store",
            str(root / "model-store"),
        ]

    def _env(self) -> dict[str, str]:
        assert self._tmp is not None and self.workdir is not None
        return {
            **os.environ,
            "TMPDIR": str(self._tmp),
            "TEMP": str(self._tmp),
            "LOG_LOCATION": str(self.workdir / "logs"),
            "METRICS_LOCATION": str(self.workdir / "logs"),
            "OMP_NUM_THREADS": "1",
        }

    def start(self) -> LocalServer:
        """Start TorchServe and wait until a worker of the model is READY (not just /ping)."""
        cmd = self._prepare()
        assert self.workdir is not None
        self._log_file = open(self.workdir / "logs" / "console.log", "ab")  # noqa: SIM115 - closed in stop()
        done = subprocess.run(cmd, cwd=self.workdir, env=self._env(), stdout=self._log_file, stderr=self._log_file)
        self._pid = self.pid()
        if done.returncode != 0 or self._pid is None:
            self.stop()
            raise ArtifactError(f"torchserve --start failed (exit {done.returncode}); see {self.workdir}/logs")
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def pid(self) -> int | None:
        """The TorchServe frontend's (JVM's) pid, from the pid file its launcher wrote."""
        if self._tmp is None:
            return None
        pid_file = self._tmp / ".model_server.pid"
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        return self._pid is not None and _running(self._pid)

    def model_status(self) -> list[dict[str, Any]]:
        """GET /models/<model> on the management API: one entry per version, with its workers."""
        return _http_json(f"{self.management_url}/models/{self.model_name}")

    def ready_workers(self) -> int:
        try:
            status = self.model_status()
        except (OSError, ValueError):
            return 0
        return sum(w.get("status") == "READY" for entry in status for w in entry.get("workers", []))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.ready_workers() >= 1:
                return
            if not self.alive():
                raise ArtifactError(f"TorchServe exited while loading the model; see {self._log_hint()}")
            time.sleep(0.25)
        raise ArtifactError(f"no READY worker after {self.ready_timeout_s:.0f} s; see {self._log_hint()}")

    def _log_hint(self) -> str:
        return f"{self.workdir}/logs/ts_log.log and model_log.log"

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop TorchServe (as `torchserve --stop` does: SIGTERM to the frontend), wait until the
        frontend and its workers are gone (SIGKILL after `timeout_s`), remove its temporary folder."""
        if self._pid is not None and _running(self._pid):
            _stop_tree(self._pid, timeout_s)
        self._pid = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LocalPredictor:
    """`python -m mnist_ct.deploy serve --runtime kserve` on a deploy root, as a child process (tests, benchmarks).

    KServe's parent process spawns `workers` worker processes and restarts one that dies; `worker_pids()` names
    them. Its output goes to `log_path` (default: <deploy root>/../kserve-<port>.log).
    """

    deploy_root: Path
    model_name: str = "mnist"
    port: int = 0
    workers: int = 2
    poll_s: float = 1.0
    ready_timeout_s: float = 180.0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def predict_path(self) -> str:
        return f"/v1/models/{self.model_name}:predict"

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{self.model_name}/infer"

    def start(self) -> LocalPredictor:
        self.port = self.port or free_port()
        if self.log_path is None:
            self.log_path = Path(self.deploy_root).resolve().parent / f"kserve-{self.port}.log"
        cmd = [sys.executable, "-m", "mnist_ct.deploy", "serve", "--runtime", "kserve", "--deploy-root",
               str(self.deploy_root), "--model-name", self.model_name, "--port", str(self.port), "--workers",
               str(self.workers), "--poll-interval", str(self.poll_s)]  # fmt: skip
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Until the model answers ready (a worker still loading holds the request until it is loaded)."""
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise ArtifactError(f"the KServe predictor exited while starting; see {self.log_path}")
            try:
                status, _ = fetch(f"{self.url}/v2/models/{self.model_name}/ready", timeout=30)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise ArtifactError(
            f"the KServe predictor was not ready after {self.ready_timeout_s:.0f} s; see {self.log_path}"
        )

    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def worker_pids(self) -> list[int]:
        """The serving worker processes (KServe spawns them; multiprocessing's resource tracker is not one)."""
        import psutil

        if self._proc is None:
            return []
        try:
            children = psutil.Process(self._proc.pid).children()
        except psutil.Error:
            return []
        return [c.pid for c in children if "resource_tracker" not in " ".join(_cmdline(c))]

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (KServe stops its workers), SIGKILL to whatever is left after `timeout_s`."""
        if self._proc is not None:
            _stop_tree(self._proc.pid, timeout_s)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)  # reap it
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> LocalPredictor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cmdline(process: Any) -> list[str]:
    import psutil

    try:
        return list(process.cmdline())
    except psutil.Error:
        return []


def _stop_tree(pid: int, timeout_s: float) -> None:
    """SIGTERM to `pid` (the server stops its own workers), wait until it and its descendants are gone, SIGKILL
    whatever is left after `timeout_s`."""
    processes = _process_tree(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in processes:
        if _running(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped does not count)."""
    import psutil  # comes with torchserve (the `serve` extra; _prepare checks it is installed)

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # NoSuchProcess, AccessDenied: not ours to wait for
        return False


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (TorchServe's Python workers)."""
    import psutil

    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:  # gone already: what we know
        return [pid]


def fetch(
    url: str, data: bytes | None = None, content_type: str = "image/png", timeout: float = 30.0
) -> tuple[int, Any]:
    """POST `data` (GET if None) and return (status, parsed JSON or text): a tiny client for tests and tools."""
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if data is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


@dataclass(frozen=True)
class ServeOptions:
    """`serve`'s options: which deploy root, on which ports, with which overrides of the deployed batching."""

    deploy_root: Path
    port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    overrides: dict[str, int] = field(default_factory=dict)  # ServingOptions fields
    workdir: Path | None = None
    ready_timeout_s: float = 180.0

    def __post_init__(self) -> None:
        ports = {"--port": self.port, "--management-port": self.management_port, "--metrics-port": self.metrics_port}
        for option, port in ports.items():
            if not 0 <= port <= 65535:
                raise UsageError(f"{option} must be a port number 0..65535 (0 picks a free one), got {port}")
        chosen = [p for p in ports.values() if p != 0]
        if len(set(chosen)) != len(chosen):
            raise UsageError(f"--port, --management-port and --metrics-port must differ (0 picks a free one): {ports}")
        if not 0 < self.ready_timeout_s <= 3600:
            raise UsageError(f"--ready-timeout must be in (0, 3600] seconds, got {self.ready_timeout_s}")
        unknown = set(self.overrides) - set(ServingOptions.__dataclass_fields__)
        if unknown:
            raise UsageError(f"unknown serving overrides {sorted(unknown)}")
        replace(ServingOptions(), **self.overrides)  # each override in TorchServe's range (UsageError)


def serve(options: ServeOptions, log: Log) -> int:
    """Start TorchServe on the deploy root, serve until SIGINT or SIGTERM, stop it; 0 when stopped cleanly."""
    server = LocalServer(
        options.deploy_root,
        ports={"inference": options.port, "management": options.management_port, "metrics": options.metrics_port},
        overrides=dict(options.overrides),
        workdir=options.workdir,
        ready_timeout_s=options.ready_timeout_s,
    )
    server.start()  # a signal while it starts unwinds (entry.py), and start() stops what it started
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        o = server.options
        log(
            f"serving {server.model_name} version {server.version} at {server.predict_url} "
            f"({o.workers} workers, batch {o.batch_size}/{o.max_batch_delay_ms} ms; management "
            f"{server.management_url}; logs {server.workdir}/logs); Ctrl-C stops"
        )
        while not stop.wait(1.0):
            if not server.alive():
                raise ArtifactError(f"TorchServe stopped by itself; see {server.workdir}/logs")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("stopped")
    return 0
