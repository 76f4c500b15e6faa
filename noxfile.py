"""mnist-ct: every developer and CI entry point.

    nox -s pipeline                 run the pipeline on one machine on the built-in data set (mnist-5k)
    nox -s lint tests               what CI runs: ruff, then every package's tests in its own venv
    nox -s tests -- preprocess      one package's tests (folder names; extra args go to pytest)
    nox -s lint                     ruff check and ruff format --check

Packages are discovered, never listed here: every `libs/*/pyproject.toml`, `steps/*/pyproject.toml`
and `orchestration/pyproject.toml`. A dependency on another package of the repo is read from the
pyproject's `dependencies` (by distribution name) and installed from its folder. Every install is
pinned by `constraints.txt` (torch 2.13.0 CPU among them).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints.txt"
VENVS = ROOT / ".nox" / "packages"

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@dataclass(frozen=True)
class Package:
    """One independently versioned package of the monorepo."""

    name: str  # folder name: "preprocess", "artifacts", "orchestration"
    path: Path
    dist: str  # distribution name: "mnist-ct-preprocess"
    version: str
    requires: tuple[str, ...]  # distribution names of its dependencies


def _dist_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""


def discover() -> dict[str, Package]:
    """Every package in the repo, by folder name."""
    found: dict[str, Package] = {}
    candidates = sorted(ROOT.glob("libs/*/pyproject.toml")) + sorted(ROOT.glob("steps/*/pyproject.toml"))
    for pyproject in [*candidates, ROOT / "orchestration" / "pyproject.toml"]:
        if not pyproject.is_file():
            continue
        project = tomllib.loads(pyproject.read_text())["project"]
        requires = tuple(_dist_name(r) for r in project.get("dependencies", []))
        found[pyproject.parent.name] = Package(
            pyproject.parent.name, pyproject.parent, _dist_name(project["name"]), project["version"], requires
        )
    return found


def local_closure(package: Package, packages: dict[str, Package]) -> list[Package]:
    """The repo packages `package` depends on, directly or not, dependencies first, then itself."""
    by_dist = {p.dist: p for p in packages.values()}
    order: list[Package] = []

    def visit(p: Package) -> None:
        for dist in p.requires:
            if dist in by_dist and by_dist[dist] not in order:
                visit(by_dist[dist])
        if p not in order:
            order.append(p)

    visit(package)
    return order


def select(session: nox.Session, packages: dict[str, Package]) -> tuple[list[Package], list[str]]:
    """Split posargs into package folder names and the rest (passed on to pytest)."""
    names = [a for a in session.posargs if a in packages]
    rest = [a for a in session.posargs if a not in packages]
    unknown = [a for a in rest if not a.startswith("-") and not Path(a).exists() and re.fullmatch(r"[a-z_]+", a)]
    if unknown:
        session.error(f"unknown package {unknown[0]!r}; known: {', '.join(packages)}")
    return [packages[n] for n in names] if names else list(packages.values()), rest


def package_venv(session: nox.Session, package: Package, packages: dict[str, Package]) -> Path:
    """A venv of the package's own, with it, its repo dependencies and its test extras installed.

    Reused while the pyproject files and constraints it was built from are unchanged.
    """
    closure = local_closure(package, packages)
    stamp = hashlib.sha256(CONSTRAINTS.read_bytes())
    for p in closure:
        stamp.update((p.path / "pyproject.toml").read_bytes())
    venv = VENVS / package.name
    stamp_file = venv / ".mnist-ct-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp.hexdigest():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    session.run(sys.executable, "-m", "venv", str(venv), external=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    editable = [arg for p in closure[:-1] for arg in ("-e", str(p.path))]
    session.run(*pip, "-c", str(CONSTRAINTS), *editable, "-e", f"{package.path}[test]", external=True)
    stamp_file.write_text(stamp.hexdigest())
    return venv


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run each package's tests in its own venv (posargs: package folder names, then pytest args)."""
    packages = discover()
    selected, pytest_args = select(session, packages)
    for package in selected:
        venv = package_venv(session, package, packages)
        session.log(f"{package.name} {package.version}: tests")
        session.run(
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            str(package.path / "tests"),
            *pytest_args,
            external=True,
            env={"PYTHONDONTWRITEBYTECODE": "1"},
        )


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and format check over the whole repo."""
    session.install("-c", str(CONSTRAINTS), "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=False)
def pipeline(session: nox.Session) -> None:
    """Run the pipeline on one machine on the built-in data set (mnist-5k): preprocess, validate."""
    packages = discover()
    venv = package_venv(session, packages["validate"], packages)
    # preprocess shares the validate venv: both need only artifacts + numpy (+ mlxtend).
    session.run(
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "-c",
        str(CONSTRAINTS),
        "-e",
        str(packages["preprocess"].path),
        external=True,
    )
    workdir = Path(os.environ.get("MNIST_CT_WORKDIR", ROOT / "scratch"))
    run_id = session.posargs[0] if session.posargs else "local"
    roots = ["--data-root", str(workdir / "data"), "--model-root", str(workdir / "model")]
    python = str(venv / "bin" / "python")
    session.run(python, "-m", "mnist_ct.preprocess", "--run-id", run_id, *roots, external=True)
    session.run(python, "-m", "mnist_ct.validate", "--run-id", run_id, *roots, external=True)
    session.log(f"done: {workdir / 'data' / 'runs' / run_id}")
