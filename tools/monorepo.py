"""The monorepo's packages and what changed among them (standard library only).

Packages are discovered, never listed: every `libs/*/pyproject.toml`, `steps/*/pyproject.toml` and
`orchestration/pyproject.toml`. A package's dependency on another package of the repo is read from its
pyproject `dependencies` by distribution name.

A package's *inputs* are the files git sees in its folder (tracked, plus untracked files that are not
ignored), minus documentation (`*.md`, `*.rst`, `docs/`) and the image lock itself, plus the inputs of
every repo package it depends on (transitively) and `constraints.txt`. Their content hash is compared
with the `input_hash` recorded in `orchestration/images.lock.json` ("lock" mode, needs no base ref), or
the files are compared with a git ref (`since` mode: `git diff REF` plus untracked files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType

CONSTRAINTS = "constraints.txt"
LOCK = "orchestration/images.lock.json"
LOCK_MODULE = "orchestration/src/mnist_ct/orchestration/lock.py"
CONTAINERS_MODULE = "orchestration/src/mnist_ct/orchestration/containers.py"
REGISTRY_MODULE = "orchestration/src/mnist_ct/orchestration/registry.py"
DOC_SUFFIXES = (".md", ".rst")


class MonorepoError(Exception):
    """Bad repo state or usage: one line naming what to fix."""


@dataclass(frozen=True)
class Package:
    """One independently versioned package of the monorepo."""

    name: str  # folder name: "preprocess", "artifacts", "orchestration"
    path: Path
    dist: str  # distribution name: "mnist-ct-preprocess"
    version: str
    requires: tuple[str, ...]  # distribution names of its dependencies

    @property
    def kind(self) -> str:
        """ "step", "lib" or "orchestration"."""
        return {"steps": "step", "libs": "lib"}.get(self.path.parent.name, "orchestration")


def dist_name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""


def pyproject_paths(root: Path) -> list[Path]:
    candidates = sorted(root.glob("libs/*/pyproject.toml")) + sorted(root.glob("steps/*/pyproject.toml"))
    return [p for p in [*candidates, root / "orchestration" / "pyproject.toml"] if p.is_file()]


def parse_pyproject(text: str, where: str) -> tuple[str, str, tuple[str, ...]]:
    """(distribution name, version, required distribution names) of a pyproject.toml's text."""
    try:
        project = tomllib.loads(text)["project"]
        return (
            dist_name(project["name"]),
            project["version"],
            tuple(dist_name(r) for r in project.get("dependencies", [])),
        )
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        raise MonorepoError(f"{where}: not a PEP 621 pyproject with [project] name and version ({e})") from None


def discover(root: Path) -> dict[str, Package]:
    """Every package in the repo at `root`, by folder name."""
    found: dict[str, Package] = {}
    for pyproject in pyproject_paths(root):
        dist, version, requires = parse_pyproject(pyproject.read_text(), str(pyproject))
        found[pyproject.parent.name] = Package(pyproject.parent.name, pyproject.parent, dist, version, requires)
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


def third_party_requirements(package: Package, packages: dict[str, Package]) -> list[str]:
    """Distribution names the package and its repo dependencies need from outside the repo, sorted."""
    local = {p.dist for p in packages.values()}
    return sorted({d for p in local_closure(package, packages) for d in p.requires if d and d not in local})


def dependents(name: str, packages: dict[str, Package]) -> list[str]:
    """Folder names of the packages that depend on `name`, directly or not (not `name` itself)."""
    return sorted(n for n, p in packages.items() if n != name and packages[name] in local_closure(p, packages))


# --- files as git sees them ---------------------------------------------------------------------------


def git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise MonorepoError("git is not installed; change detection reads the tree through git") from None
    if done.returncode != 0:
        raise MonorepoError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def is_input(relpath: str) -> bool:
    """Whether a repo-relative file counts as an input of its package (documentation does not)."""
    p = PurePosixPath(relpath)
    return p.suffix.lower() not in DOC_SUFFIXES and "docs" not in p.parts[:-1] and relpath != LOCK


def package_files(root: Path, package: Package) -> list[str]:
    """Repo-relative paths of the package's input files present in the working tree, sorted."""
    rel = package.path.relative_to(root).as_posix()
    out = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", rel)
    names = {n for n in out.split("\0") if n}
    return sorted(n for n in names if is_input(n) and ((root / n).is_file() or (root / n).is_symlink()))


def _file_digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    mode = "x" if os.access(path, os.X_OK) else "-"
    return f"{mode}{h.hexdigest()}"


def input_hash(root: Path, package: Package, packages: dict[str, Package]) -> str:
    """`sha256:<hex>` over the package's files, its repo dependencies' files and constraints.txt."""
    h = hashlib.sha256()
    files = [f for p in local_closure(package, packages) for f in package_files(root, p)]
    for rel in sorted({*files, CONSTRAINTS}):
        if (root / rel).exists():
            h.update(f"{rel}\0{_file_digest(root / rel)}\n".encode())
    return "sha256:" + h.hexdigest()


# --- orchestration's standard-library modules, loaded from their files --------------------------------
# The lock is read and written only through orchestration's lock.py; container engines are chosen only by
# its containers.py; registries are asked whether an image exists only by its registry.py. Loaded by path: no
# kfp and no install needed.


def orchestration_module(root: Path, relpath: str) -> ModuleType:
    """A standard-library-only module of orchestration, loaded from `root / relpath` (once per path)."""
    path = root / relpath
    name = "_mnist_ct_" + path.stem + "_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise MonorepoError(f"{path}: the {path.stem} module is missing")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        del sys.modules[name]
        raise MonorepoError(f"{path}: must load with the standard library alone, but: {e}") from None
    return module


def lock_module(root: Path) -> ModuleType:
    """orchestration's lock.py."""
    return orchestration_module(root, LOCK_MODULE)


def containers_module(root: Path) -> ModuleType:
    """orchestration's containers.py (engine detection, running images)."""
    return orchestration_module(root, CONTAINERS_MODULE)


def registry_module(root: Path) -> ModuleType:
    """orchestration's registry.py (does `repo@sha256:...` exist in its registry?)."""
    return orchestration_module(root, REGISTRY_MODULE)


# --- change detection ---------------------------------------------------------------------------------


@dataclass
class Change:
    changed: bool
    reason: str
    version: str | None = None  # current version (None: deleted)
    previous_version: str | None = None  # the lock's, or REF's (None: new)
    input_hash: str | None = None
    kind: str = "step"

    def as_json(self) -> dict:
        return {"changed": self.changed, "reason": self.reason}


@dataclass
class Plan:
    mode: str  # "lock" or "since <REF>"
    changes: dict[str, Change] = field(default_factory=dict)

    def changed(self) -> list[str]:
        return [n for n, c in self.changes.items() if c.changed and c.version is not None]

    def deleted(self) -> list[str]:
        return [n for n, c in self.changes.items() if c.version is None]

    def to_json(self) -> str:
        return json.dumps({n: c.as_json() for n, c in self.changes.items()}, separators=(",", ":"))

    def lines(self) -> list[str]:
        width = max((len(n) for n in self.changes), default=0)
        out = []
        for name, c in self.changes.items():
            mark = "CHANGED  " if c.changed else "unchanged"
            out.append(f"{name:<{width}}  {mark}  {c.reason}")
        return out


def _ordered(names: set[str], packages: dict[str, Package]) -> list[str]:
    """Libs first, then steps, then orchestration; by name within each; deleted ones last."""
    rank = {"lib": 0, "step": 1, "orchestration": 2}
    return sorted(names, key=lambda n: (rank[packages[n].kind] if n in packages else 3, n))


def _propagate(packages: dict[str, Package], own: dict[str, str]) -> dict[str, str]:
    """Reasons for every package changed on its own (`own`) or through a changed repo dependency."""
    reasons = dict(own)
    for name, package in packages.items():
        if name in reasons:
            continue
        libs = [p.name for p in local_closure(package, packages)[:-1] if p.name in own]
        if libs:
            reasons[name] = f"depends on changed {', '.join(libs)}"
    return reasons


def plan_from_lock(root: Path, lock_path: Path | None = None) -> Plan:
    """Changed = the input hash differs from the lock's (or the lock has none, or no entry)."""
    lockmod = lock_module(root)
    try:
        lock = lockmod.read_lock(lock_path or root / LOCK)
    except lockmod.LockError as e:
        raise MonorepoError(str(e)) from None
    packages = discover(root)
    hashes = {n: input_hash(root, p, packages) for n, p in packages.items()}
    plan = Plan("lock")
    for name in _ordered(set(packages) | set(lock.packages), packages):
        entry = lock.packages.get(name)
        if name not in packages:
            plan.changes[name] = Change(True, "deleted: in the lock, no longer in the tree", None, entry.version)
            continue
        p = packages[name]
        previous = entry.version if entry else None
        if entry is None:
            change = Change(True, "new: no entry in the lock", p.version, None)
        elif entry.input_hash is None:
            change = Change(True, "never built: the lock has no input hash", p.version, previous)
        elif entry.input_hash != hashes[name]:
            libs = [
                q.name
                for q in local_closure(p, packages)[:-1]
                if q.name in lock.packages and lock.packages[q.name].input_hash != hashes[q.name]
            ]
            why = f"depends on changed {', '.join(libs)}" if libs else "its files (or constraints.txt) changed"
            change = Change(
                True, f"{why}: inputs {hashes[name][:19]} != lock {entry.input_hash[:19]}", p.version, previous
            )
        else:
            change = Change(False, f"inputs match the lock ({hashes[name][:19]})", p.version, previous)
        change.input_hash, change.kind = hashes[name], p.kind
        plan.changes[name] = change
    return plan


def _packages_at(root: Path, ref: str) -> dict[str, tuple[str, str]]:
    """{folder: (relpath, version)} of the packages at a git ref."""
    listing = git(root, "ls-tree", "-r", "--name-only", ref, "--", "libs", "steps", "orchestration")
    found = {}
    for rel in listing.splitlines():
        parts = rel.split("/")
        if parts[-1] != "pyproject.toml":
            continue
        if (len(parts) == 3 and parts[0] in ("libs", "steps")) or parts == ["orchestration", "pyproject.toml"]:
            _, version, _ = parse_pyproject(git(root, "show", f"{ref}:{rel}"), f"{ref}:{rel}")
            found[parts[-2]] = ("/".join(parts[:-1]), version)
    return found


def plan_since(root: Path, ref: str) -> Plan:
    """Changed = an input file differs between `ref` and the working tree (or is new and untracked)."""
    git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    diff = git(root, "diff", "--no-renames", "--name-only", "-z", ref, "--")
    untracked = git(root, "ls-files", "-z", "--others", "--exclude-standard")
    touched = sorted({n for n in (diff + "\0" + untracked).split("\0") if n and is_input(n)})
    packages = discover(root)
    before = _packages_at(root, ref)
    own: dict[str, str] = {}
    for name, p in packages.items():
        rel = p.path.relative_to(root).as_posix() + "/"
        files = [t for t in touched if t.startswith(rel)]
        if name not in before:
            own[name] = f"new: not in {ref}"
        elif files:
            more = f" (+{len(files) - 1} more)" if len(files) > 1 else ""
            own[name] = f"{files[0]}{more} differs from {ref}"
        elif CONSTRAINTS in touched:
            own[name] = f"{CONSTRAINTS} differs from {ref}"
    reasons = _propagate(packages, own)
    plan = Plan(f"since {ref}")
    for name in _ordered(set(packages) | set(before), packages):
        previous = before[name][1] if name in before else None
        if name not in packages:
            plan.changes[name] = Change(True, f"deleted: in {ref}, no longer in the tree", None, previous)
            continue
        p = packages[name]
        why = reasons.get(name, f"no input differs from {ref}")
        plan.changes[name] = Change(name in reasons, why, p.version, previous, input_hash(root, p, packages), p.kind)
    return plan


def plan(root: Path, since: str | None = None, lock_path: Path | None = None) -> Plan:
    return plan_since(root, since) if since else plan_from_lock(root, lock_path)


def version_errors(root: Path, plan: Plan) -> list[str]:
    """One line per changed package that kept the version recorded in the lock (or at REF)."""
    packages = discover(root)
    where = "the lock" if plan.mode == "lock" else plan.mode.split(" ", 1)[1]
    errors = []
    for name in plan.changed():
        c = plan.changes[name]
        # A lock entry without an input hash was never built: its first build keeps the version.
        first_build = plan.mode == "lock" and c.reason.startswith("never built")
        if c.previous_version is not None and c.version == c.previous_version and not first_build:
            pyproject = (packages[name].path / "pyproject.toml").relative_to(root)
            errors.append(
                f"{name} changed ({c.reason}) but kept version {c.version} of {where}: "
                f"bump [project] version in {pyproject} and add a CHANGELOG.md entry"
            )
    return errors
