"""A local OCI registry on 127.0.0.1: Debian's `docker-registry` (distribution) with filesystem storage.

    python -m tools.registry start [--port 5000] [--storage .nox/registry]   prints 127.0.0.1:PORT
    python -m tools.registry stop | status

The process runs detached; its pid and address live in the storage folder (git-ignored under .nox/),
so `stop` ends exactly the process `start` began. Images pushed here keep the manifest digests they
would have anywhere: a digest does not depend on the registry's name.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORAGE = ROOT / ".nox" / "registry"

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: mnist-ct-local-registry
"""


class RegistryError(Exception):
    pass


@dataclass
class Registry:
    address: str  # 127.0.0.1:PORT
    pid: int
    storage: Path

    def stop(self) -> None:
        stop(self.storage)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code == 401  # up, and asks for credentials (htpasswd)
    except (urllib.error.URLError, OSError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0): reap it if it has exited.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def status(storage: Path = DEFAULT_STORAGE) -> Registry | None:
    try:
        pid = int((storage / "registry.pid").read_text())
        address = (storage / "registry.address").read_text().strip()
    except (FileNotFoundError, ValueError):
        return None
    return Registry(address, pid, storage) if _alive(pid) and answers(address) else None


def start(
    storage: Path = DEFAULT_STORAGE, port: int | None = None, timeout: float = 20.0, htpasswd: str | None = None
) -> Registry:
    """Start (or reuse) the registry whose data lives under `storage`.

    `htpasswd`: `user:<bcrypt hash>` lines; the registry then wants those credentials (Basic auth), as a
    project's registry does.
    """
    storage = Path(storage).resolve()
    running = status(storage)
    if running and (port is None or running.address.endswith(f":{port}")):
        return running
    if running:
        stop(storage)
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if binary is None:
        raise RegistryError("docker-registry is not installed: apt-get install docker-registry")
    port = port or free_port()
    (storage / "data").mkdir(parents=True, exist_ok=True)
    config = storage / "config.yml"
    text = CONFIG.format(data=storage / "data", port=port)
    if htpasswd:
        (storage / "htpasswd").write_text(htpasswd)
        text += f"auth:\n  htpasswd:\n    realm: mnist-ct-local-registry\n    path: {storage / 'htpasswd'}\n"
    config.write_text(text)
    log = (storage / "registry.log").open("ab")
    # docker-registry reads every REGISTRY_<SECTION>_<KEY> variable as configuration: REGISTRY_AUTH_FILE
    # (where buildah/skopeo keep logins) would be read as an `auth: file` section and refused.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    log.close()
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not answers(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (storage / "registry.log").read_text(errors="replace").strip().splitlines()[-5:]
            raise RegistryError(f"docker-registry did not answer on {address}: " + " | ".join(tail))
        time.sleep(0.1)
    (storage / "registry.pid").write_text(str(proc.pid))
    (storage / "registry.address").write_text(address)
    return Registry(address, proc.pid, storage)


def stop(storage: Path = DEFAULT_STORAGE) -> bool:
    """Stop the registry started with this storage folder; False if none ran."""
    storage = Path(storage).resolve()
    try:
        pid = int((storage / "registry.pid").read_text())
    except (FileNotFoundError, ValueError):
        return False
    (storage / "registry.pid").unlink(missing_ok=True)
    if not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not _alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.registry", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--storage", type=Path, default=DEFAULT_STORAGE, help="data, config, pid and log folder")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            reg = start(args.storage, args.port)
            print(reg.address)
        elif args.action == "stop":
            print("stopped" if stop(args.storage) else "not running")
        else:
            running = status(args.storage)
            print(running.address if running else "not running")
            return 0 if running else 1
    except RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
