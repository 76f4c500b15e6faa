"""A step's hermetic wheelhouse: the build context of its Dockerfile (standard library only).

    <context>/deps/   the pinned third-party wheels for linux x86_64 CPython 3.11, resolved under
                      constraints.txt, and requirements.txt naming each one `name==version --hash=sha256:...`;
                      prune.txt: the installed paths (relative to site-packages) to delete after the install;
                      pip/: pip's own wheel, which the image runs to install (no pip is installed in it)
    <context>/local/  the wheels of the step and of the repo libs it depends on

What the images leave out (nothing any step imports at run time; see UNUSED and PRUNE below): whole
distributions that a requirement declares but no step's code path imports (dropped from deps/ after the
resolution; the Dockerfile installs exactly requirements.txt with --no-deps), and files inside installed
wheels (test suites, C++ headers, test binaries), deleted in the same RUN layer as the install: a later
`rm` layer would not make an image smaller.

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
import zipfile
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
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

# Distributions left out of every image whose resolution has the distribution that requires them (the key):
# {requirer: {left out: why nothing imports it}}. Measured: every module the deploy step, `serve --runtime
# kserve` (its workers included) and a whole `nox -s pipeline` imported (train_model's training and
# TorchScript export, embedding, deploy's probe). A left-out distribution that some other kept wheel
# requires, or that the resolution does not have, stops the wheelhouse (the rule is then wrong or stale).
UNUSED: dict[str, dict[str, str]] = {
    "torch": {
        # Only torch.compile's partitioners (min-cut) import it. Not sympy and mpmath: building any torch.optim
        # optimizer imports torch._dynamo, which imports sympy (the deploy image's fixture run trains so).
        "networkx": "graph partitioning of torch.compile/functorch (min-cut), never on the eager/jit path; 19 MB",
    },
    "kserve": {
        # kserve 0.21 declares these, and no module of it imports aiohttp (its clients use httpx);
        # grpc imports grpc_tools only inside a try/except ImportError, for grpc.protos() at run time,
        # and kserve ships its generated *_pb2 modules.
        "grpcio-tools": "protoc, to compile .proto files at run time (kserve ships them compiled); 8 MB",
        "aiohttp": "an HTTP client kserve 0.21 declares but never imports",
        "aiohappyeyeballs": "aiohttp's (left out)",
        "aiosignal": "aiohttp's (left out)",
        "attrs": "aiohttp's (left out)",
        "frozenlist": "aiohttp's and aiosignal's (left out)",
        "multidict": "aiohttp's and yarl's (left out)",
        "propcache": "aiohttp's and yarl's (left out)",
        "yarl": "aiohttp's (left out)",
    },
}

# Paths inside installed wheels that nothing imports or runs at run time, deleted right after the install
# (same layer): {distribution: [(pattern, why)]}. A pattern is matched per path component (fnmatch) against
# the wheel's file list, and names that path with everything under it; each must match something in its
# wheel (else the wheel changed: look again). KEEP: matched paths that stay.
PRUNE: dict[str, list[tuple[str, str]]] = {
    "torch": [
        ("torch/test", "C++ unit-test binaries (83 MB); Python's torch.testing lives elsewhere and stays"),
        (
            "torch/include",
            "C/C++ headers (62 MB), only to compile extensions (torch.utils.cpp_extension, inductor's "
            "C++ codegen), which also need a compiler the images lack",
        ),
        ("torch/bin/*", "C++ test executables and protoc (50 MB); torch_shm_manager stays (KEEP)"),
        ("torch/share/cmake", "CMake config for C++ programs linking libtorch"),
    ],
    "numpy": [("numpy/**/tests", "numpy's own test suites (numpy.test()); numpy.testing stays")],
    "pandas": [("pandas/tests", "pandas' own test suite (pandas.test()), 39 MB")],
    "sympy": [("sympy/**/tests", "sympy's own test suites (sympy.test()), 34 MB; sympy.testing stays")],
    "mpmath": [("mpmath/tests", "mpmath's own test suite (mpmath.runtests())")],
}
KEEP = {"torch/bin/torch_shm_manager": "torch.multiprocessing's file_system sharing strategy starts it"}


class WheelhouseError(Exception):
    pass


@dataclass
class Wheelhouse:
    path: Path
    deps_sha256: str
    local_sha256: str
    requirements: list[str]  # name==version of every third-party wheel installed
    local_wheels: list[str]
    left_out: list[str] = field(default_factory=list)  # name==version resolved but not installed (UNUSED)
    pruned: list[str] = field(default_factory=list)  # paths deleted after the install (PRUNE), as prune.txt


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


def _wheel_dists(deps: Path) -> dict[str, Path]:
    """{distribution name: wheel file} of a deps folder."""
    found = {}
    for wheel in sorted(deps.glob("*.whl")):
        m = WHEEL.match(wheel.name)
        if not m:
            raise WheelhouseError(f"{wheel.name}: not a wheel file name")
        found[dist_name(m["name"])] = wheel
    return found


def requires(wheel: Path) -> set[str]:
    """The distributions a wheel requires unconditionally or under an environment marker (not its extras)."""
    with zipfile.ZipFile(wheel) as z:
        [meta] = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        text = z.read(meta).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("Requires-Dist:") and not re.search(r"\bextra\s*==", line):
            names.add(dist_name(line.split(":", 1)[1]))
    return names


def left_out(wheels: dict[str, Path], unused: dict[str, dict[str, str]] | None = None) -> set[str]:
    """The distributions of `wheels` that UNUSED leaves out; WheelhouseError if a rule is wrong or stale."""
    unused = UNUSED if unused is None else unused
    out: dict[str, str] = {}  # left out -> the requirer whose rule says so
    for requirer, rules in unused.items():
        if requirer in wheels:
            for name in rules:
                out.setdefault(name, requirer)
    errors = [
        f"UNUSED[{r!r}] leaves out {n}, which the resolution does not have" for n, r in out.items() if n not in wheels
    ]
    for name, wheel in wheels.items():
        if name in out:
            continue
        for needed in sorted(requires(wheel) & set(out)):
            if needed not in unused.get(name, {}):
                errors.append(f"{name} requires {needed}, which UNUSED[{out[needed]!r}] leaves out")
    if errors:
        raise WheelhouseError("\n".join(errors))
    return set(out)


def _matched(path: list[str], pattern: list[str], at: int = 0) -> int | None:
    """How many leading components of `path` the pattern matches (the fewest), or None."""
    if not pattern:
        return at
    if pattern[0] == "**":
        for skip in range(len(path) - at + 1):
            if (n := _matched(path, pattern[1:], at + skip)) is not None:
                return n
        return None
    if at < len(path) and fnmatchcase(path[at], pattern[0]):
        return _matched(path, pattern[1:], at + 1)
    return None


def prune_paths(wheels: dict[str, Path], prune: dict[str, list[tuple[str, str]]] | None = None,
                keep: dict[str, str] | set[str] | None = None) -> list[str]:  # fmt: skip
    """The paths (relative to site-packages) that PRUNE deletes from these wheels once installed, sorted."""
    prune = PRUNE if prune is None else prune
    keep = set(KEEP if keep is None else keep)
    found: set[str] = set()
    for name, patterns in prune.items():
        if name not in wheels:
            continue
        with zipfile.ZipFile(wheels[name]) as z:
            files = [f.split("/") for f in z.namelist()]
        for pattern, _why in patterns:
            parts = pattern.split("/")
            hits = {"/".join(f[:n]) for f in files if (n := _matched(f, parts)) is not None} - keep
            if not hits:
                raise WheelhouseError(f"PRUNE[{name!r}]: {pattern} matches nothing in {wheels[name].name}")
            found |= hits
    # A path under another listed one goes with it.
    return sorted(p for p in found if not any(p.startswith(q + "/") for q in found))


def slim_deps(deps: Path) -> tuple[list[str], list[str]]:
    """Drop UNUSED's wheels from `deps` and its requirements.txt, write prune.txt; (left out, pruned)."""
    wheels = _wheel_dists(deps)
    out = left_out(wheels)
    requirements = deps / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.is_file() else []
    dropped = [line.split(" ", 1)[0] for line in lines if dist_name(line.split("==", 1)[0]) in out]
    for name in out:
        wheels.pop(name).unlink()  # a hard link into the resolution cache: the cached copy stays
    pruned = prune_paths(wheels)
    kept = [line for line in lines if dist_name(line.split("==", 1)[0]) not in out]
    requirements.unlink(missing_ok=True)  # also a hard link: never write through it into the cache
    requirements.write_text("".join(f"{line}\n" for line in kept))
    (deps / "prune.txt").write_text("".join(f"{p}\n" for p in pruned))
    return dropped, pruned


def download_pip(constraints: Path, dest: Path, cache: Path | None = None) -> str:
    """pip's own wheel, at the constraints' version, into `dest`; its file name.

    The images install with pip run from this wheel (`python pip-X.whl/pip install ...`), so no pip is
    installed in them (the venv is made --without-pip): 23 MB less in every image.
    """
    pins = [line.strip() for line in constraints.read_text().splitlines() if dist_name(line) == "pip"]
    pin = pins[0] if pins else "pip"
    cached = cache / f"pip-{hashlib.sha256(pin.encode()).hexdigest()[:16]}" if cache else None
    if cached is None or not any(cached.glob("pip-*.whl")):
        work = dest if cached is None else cached.with_name(cached.name + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _pip(["download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(work), pin])
        if cached is not None:
            shutil.rmtree(cached, ignore_errors=True)
            os.replace(work, cached)
    if cached is not None:
        _link_tree(cached, dest)
    [wheel] = sorted(dest.glob("pip-*.whl"))
    return wheel.name


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
    dropped, pruned = slim_deps(dest / "deps")
    download_pip(constraints, dest / "deps" / "pip", cache)
    pins = [p for p in pins if p not in dropped]
    local = build_local_wheels(local_closure(package, packages), constraints, dest / "local")
    _fix_mtimes(dest)
    return Wheelhouse(dest, folder_sha256(dest / "deps"), folder_sha256(dest / "local"), pins, local, dropped, pruned)
