"""A step's hermetic wheelhouse: the build context of its Dockerfile (standard library only).

    <context>/deps/   the pinned third-party wheels for linux x86_64 CPython 3.11, resolved under
                      constraints.txt, and requirements.txt naming each one `name==version --hash=sha256:...`
    <context>/local/  the wheels of the step and of the repo libs it depends on

The Dockerfile installs `deps/` first (a layer that only changes with the third-party set) and `local/`
second (a thin layer), both with `--no-index`: nothing is fetched while the image builds. Every file gets
mtime 0, so builders that checksum mounted files (buildah >= 1.39) see the same content as the same.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tools.monorepo import CONSTRAINTS, Package, dist_name, local_closure

PYTHON_VERSION = "3.11"
# Debian bookworm (the base images) has glibc 2.36: every manylinux tag up to it runs there.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")


class WheelhouseError(Exception):
    pass


@dataclass
class Wheelhouse:
    path: Path
    deps_sha256: str
    local_sha256: str
    requirements: list[str]  # name==version of every third-party wheel
    local_wheels: list[str]


def _pip(args: list[str], env: dict[str, str] | None = None) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-12:]
        raise WheelhouseError(f"pip {args[0]} failed:\n" + "\n".join(tail))


def third_party(package: Package, packages: dict[str, Package]) -> list[str]:
    """The requirement strings (as written, markers and extras kept) that come from outside the repo."""
    local = {p.dist for p in packages.values()}
    found: set[str] = set()
    for p in local_closure(package, packages):
        project = tomllib.loads((p.path / "pyproject.toml").read_text())["project"]
        found.update(r for r in project.get("dependencies", []) if dist_name(r) not in local)
    return sorted(found)


def folder_sha256(folder: Path) -> str:
    """sha256 over the sorted (name, content hash) of a folder's files."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(folder).as_posix()}\0{hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _fix_mtimes(folder: Path) -> None:
    for f in sorted(folder.rglob("*"), reverse=True):
        os.utime(f, (0, 0), follow_symlinks=False)
    os.utime(folder, (0, 0))


def _link_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        try:
            os.link(f, dst / f.name)
        except OSError:
            shutil.copy2(f, dst / f.name)


def download_deps(requirements: list[str], constraints: Path, dest: Path, cache: Path | None = None) -> list[str]:
    """Resolve + download the third-party wheels into `dest` with requirements.txt; the name==version list.

    With `cache`, a resolution is kept per (requirements, constraints) and hard-linked into `dest`.
    """
    key = hashlib.sha256(("\n".join(requirements) + "\0" + constraints.read_text()).encode()).hexdigest()[:16]
    cached = cache / f"deps-{key}" if cache else None
    if cached is not None and (cached / "requirements.txt").is_file():
        _link_tree(cached, dest)
    else:
        work = dest if cached is None else cached.with_name(cached.name + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        if requirements:
            platforms = [a for p in PLATFORMS for a in ("--platform", p)]
            _pip(
                ["download", "--quiet", "--only-binary=:all:", *platforms, "--python-version", PYTHON_VERSION,
                 "--implementation", "cp", "--abi", "cp311", "-c", str(constraints), "-d", str(work), *requirements]
            )  # fmt: skip
        lines, pins = [], []
        for wheel in sorted(work.glob("*.whl")):
            m = WHEEL.match(wheel.name)
            if not m:
                raise WheelhouseError(f"{wheel.name}: not a wheel file name")
            pin = f"{dist_name(m['name'])}=={m['version']}"
            pins.append(pin)
            lines.append(f"{pin} --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}")
        (work / "requirements.txt").write_text("".join(f"{line}\n" for line in lines))
        if cached is not None:
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(work, cached)
            _link_tree(cached, dest)
        return pins
    return [line.split(" ", 1)[0] for line in (dest / "requirements.txt").read_text().splitlines() if line]


def build_local_wheels(closure: list[Package], constraints: Path, dest: Path) -> list[str]:
    """Build a wheel of each repo package (no deps) into `dest`; build requirements pinned by constraints.

    Without build isolation when this interpreter already has hatchling (faster, same wheels).
    """
    dest.mkdir(parents=True, exist_ok=True)
    env = {"PIP_CONSTRAINT": str(constraints), "SOURCE_DATE_EPOCH": "315532800"}  # 1980-01-01: zip's minimum
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    _pip(["wheel", "--quiet", "--no-deps", *isolation, "--wheel-dir", str(dest), *[str(p.path) for p in closure]], env)
    return sorted(w.name for w in dest.glob("*.whl"))


def build_wheelhouse(
    root: Path, package: Package, packages: dict[str, Package], dest: Path, cache: Path | None = None
) -> Wheelhouse:
    """Make `dest` (replaced if present) the build context of `package`'s image."""
    constraints = root / CONSTRAINTS
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    pins = download_deps(third_party(package, packages), constraints, dest / "deps", cache)
    local = build_local_wheels(local_closure(package, packages), constraints, dest / "local")
    _fix_mtimes(dest)
    return Wheelhouse(dest, folder_sha256(dest / "deps"), folder_sha256(dest / "local"), pins, local)
