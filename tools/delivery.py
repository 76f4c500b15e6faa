"""Build and push only what changed, and pin what was pushed into the image lock (standard library only).

    python -m tools.delivery changed [--since REF] [--json] [--lock PATH]
    python -m tools.delivery build-changed [--registry R] [--push] [--base-image IMG] [--since REF] ...
    python -m tools.delivery base-image [--tag T]
    python -m tools.delivery dockerfiles [--check]   rewrite steps/*/Dockerfile from tools/step.Dockerfile

The nox sessions `changed`, `test-changed`, `build-changed` and `base-image` call the same functions
(and build-changed there also runs each changed package's tests in its own venv first).

build-changed, per changed step: its wheelhouse (tools/wheelhouse.py), its image from its Dockerfile
(tools/oci.py), tagged `<registry>/<distribution>:<version>`; with --push, pushed, and the digest the
registry returned written to the lock with the step's input hash and version. Changed libs and
orchestration get their input hash and version recorded too; deleted packages lose their entry.
Unchanged packages' entries are not touched. The lock's "registry" names the repositories the lock
pins; --registry only says where to push (a manifest digest does not depend on the registry's name).

With --push, an unchanged step whose locked digest is not in the push registry
(`<registry>/<distribution>@<digest>`, asked with orchestration's registry.py) is built, pushed and
re-pinned too ("not in REGISTRY"), without its tests (its inputs are the ones tested when it was pinned):
on a fresh machine or an empty registry every pinned image is made again. Without --push nothing is asked
of any registry; a registry that cannot answer stops the build before anything is built.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tools import monorepo, oci, wheelhouse
from tools.monorepo import LOCK, MonorepoError, Package, Plan

ROOT = Path(__file__).resolve().parents[1]


class DeliveryError(Exception):
    """What stops a delivery (one or more lines naming what to fix)."""


# Every failure the tooling reports as a message (not a traceback).
FAILURES = (DeliveryError, MonorepoError, oci.OciError, wheelhouse.WheelhouseError)


def plan_or_fail(root: Path, since: str | None, lock_path: Path | None) -> tuple[Plan, list[str]]:
    """The change plan and its version-discipline errors."""
    plan = monorepo.plan(root, since, lock_path)
    return plan, monorepo.version_errors(root, plan)


def print_plan(plan: Plan, errors: list[str], as_json: bool, out=print) -> int:
    if as_json:
        out(plan.to_json())
    else:
        changed = [n for n, c in plan.changes.items() if c.changed]
        out(f"change detection ({plan.mode}): {len(changed)} of {len(plan.changes)} packages changed")
        for line in plan.lines():
            out("  " + line)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


@dataclass
class StepResult:
    name: str
    version: str
    tag: str
    digest: str | None
    input_hash: str
    wheelhouse_s: float
    build_s: float
    deps_sha256: str
    local_sha256: str
    pushed_bytes: int | None = None
    unpacked_bytes: int | None = None
    diff_ids: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # resolved, not installed (tools/wheelhouse.py UNUSED)
    pruned: list[str] = field(default_factory=list)  # installed, then deleted (PRUNE): deps/prune.txt


@dataclass
class Report:
    mode: str
    builder: str | None
    changed: list[str]  # every package built or recorded, the steps rebuilt for the registry included
    not_in_registry: list[str] = field(default_factory=list)  # unchanged steps rebuilt: digest not in the registry
    tested: list[str] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)  # lock entries written
    removed: list[str] = field(default_factory=list)
    decide_s: float = 0.0
    total_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def image_tag(registry: str, package: Package) -> str:
    return f"{registry.rstrip('/')}/{package.dist}:{package.version}"


# --- step Dockerfiles: tools/step.Dockerfile rendered per step ------------------------------------------

TEMPLATE = Path(__file__).with_name("step.Dockerfile")


def render_dockerfile(step_module: str) -> str:
    """The Dockerfile of the step `mnist_ct.<step_module>`: the template with its module (one place)."""
    return TEMPLATE.read_text().replace("STEP_MODULE", step_module)


def write_dockerfiles(root: Path = ROOT, check: bool = False) -> list[Path]:
    """The step Dockerfiles that differ from their rendering; rewritten unless `check`."""
    stale = []
    for package in monorepo.discover(root).values():
        if package.kind != "step":
            continue
        dockerfile = package.path / "Dockerfile"
        text = render_dockerfile(package.name)
        if not dockerfile.is_file() or dockerfile.read_text() != text:
            stale.append(dockerfile)
            if not check:
                dockerfile.write_text(text)
    return stale


# --- build-changed: plan, test, build each step, pin -----------------------------------------------------


@dataclass
class BuildPlan:
    mode: str
    packages: dict[str, Package]
    ordered: list[str]  # to test, build and record, in the plan's order (libs, steps, orchestration)
    deleted: list[str]  # lock entries to remove
    reasons: dict[str, str]
    untested: list[str] = field(default_factory=list)  # rebuilt with inputs equal to the lock's: tested then


def plan_build(
    root: Path, *, since: str | None, lock_path: Path, only: list[str] | None, rebuild_all: bool
) -> BuildPlan:
    """What to build: the changed packages (or all), narrowed to `only`; refuses unbumped versions."""
    plan, errors = plan_or_fail(root, since, lock_path)
    if errors:
        raise DeliveryError("\n".join(errors))
    packages = monorepo.discover(root)
    names = list(packages) if rebuild_all else plan.changed()
    if only:
        unknown = [n for n in only if n not in packages]
        if unknown:
            raise DeliveryError(f"unknown package {unknown[0]!r}; known: {', '.join(packages)}")
        names = [n for n in names if n in only]
    ordered = [n for n in plan.changes if n in names]
    reasons = {n: plan.changes[n].reason if plan.changes[n].changed else "rebuild requested" for n in ordered}
    return BuildPlan(plan.mode, packages, ordered, plan.deleted() if not only else [], reasons)


def add_missing_images(root: Path, todo: BuildPlan, lock, push_registry: str, only: list[str] | None) -> list[str]:
    """Add to the build the unchanged steps whose locked digest is not in the push registry; their names.

    Their tests are skipped (their inputs equal the lock's input hash: tested when pinned). An unchanged step
    the lock pins no digest for (a hand-edited lock, or --since) is built too, tests included. One
    DeliveryError when the registry cannot answer: nothing is built on a guess.
    """
    regmod = monorepo.registry_module(root)
    refs: dict[str, str] = {}
    unpinned: list[str] = []
    for name, package in todo.packages.items():
        entry = lock.packages.get(name)
        if package.kind != "step" or name in todo.ordered or (only and name not in only) or entry is None:
            continue
        if entry.digest is None:
            unpinned.append(name)
            todo.reasons[name] = "not pinned: the lock has no digest for it"
        else:
            # The same name under the push registry, spelt as release looks it up.
            refs[name] = regmod.under(f"{entry.image or package.dist}@{entry.digest}", push_registry)
    try:
        absent = set(regmod.missing(refs.values()))
    except regmod.RegistryError as e:
        raise DeliveryError(
            f"registry check: {e}; nothing built (check --registry / MNIST_CT_REGISTRY, and the login)"
        ) from None
    todo.untested = [n for n, ref in refs.items() if ref in absent]
    for name in todo.untested:
        todo.reasons[name] = f"not in {push_registry} (the lock pins {lock.packages[name].digest[:19]}...)"
    rebuild = {*todo.ordered, *todo.untested, *unpinned}
    todo.ordered = [n for n in todo.packages if n in rebuild]  # the plan's order: libs, steps, orchestration
    return todo.untested


def warn_uncommitted(root: Path, todo: BuildPlan, log: Callable[[str], None]) -> None:
    """Before a push: say so when the inputs to pin have uncommitted changes."""
    paths = [todo.packages[n].path.relative_to(root).as_posix() for n in todo.ordered] + [monorepo.CONSTRAINTS]
    dirty = [
        line[3:]
        for line in monorepo.git(root, "status", "--porcelain", "--", *paths).splitlines()
        if monorepo.is_input(line[3:].strip('"'))
    ]
    if dirty:
        log(f"warning: uncommitted changes ({', '.join(dirty[:3])}{' ...' if len(dirty) > 3 else ''}): "
            "the lock will pin inputs that no commit has; commit first")  # fmt: skip


def run_package_tests(
    todo: BuildPlan, run_tests: Callable[[Package], None], report: Report, log: Callable[[str], None]
) -> None:
    """Each package's tests, in order; the first failure stops the build (run_tests raises)."""
    for name in todo.ordered:
        if name in todo.untested:
            log(f"{name}: tests skipped: its inputs equal the lock's input hash (tested when it was pinned)")
            continue
        log(f"{name}: tests")
        run_tests(todo.packages[name])
        report.tested.append(name)


def build_step(
    root: Path,
    package: Package,
    packages: dict[str, Package],
    *,
    builder: str,
    registry: str,
    input_hash: str,
    base_image: str | None,
    no_cache: bool,
    push: bool,
    log: Callable[[str], None],
) -> StepResult:
    """One step: its wheelhouse, its image (pushed with `push`, the registry's digest checked)."""
    name = package.name
    dockerfile = package.path / "Dockerfile"
    if not dockerfile.is_file():
        raise DeliveryError(f"{name}: no Dockerfile in {package.path.relative_to(root)}")
    if builder != "docker" and not oci.declares_args(dockerfile, "DEPS_SHA256", "LOCAL_SHA256"):
        log(f"{name}: its Dockerfile declares no DEPS_SHA256/LOCAL_SHA256 args (tools/step.Dockerfile): "
            f"{builder} cannot tell changed wheels from cached ones, so no layer cache")  # fmt: skip
    t0 = time.monotonic()
    cache = root / ".nox" / "wheelhouse" / "cache"
    house = wheelhouse.build_wheelhouse(root, package, packages, root / ".nox" / "wheelhouse" / name, cache)
    t1 = time.monotonic()
    log(f"{name}: wheelhouse {len(house.requirements)} third-party + {len(house.local_wheels)} local wheels; "
        f"{len(house.left_out)} left out, {len(house.pruned)} paths pruned [{t1 - t0:.1f} s]")  # fmt: skip
    tag = image_tag(registry, package)
    args = {"DEPS_SHA256": house.deps_sha256, "LOCAL_SHA256": house.local_sha256}
    if base_image:
        args["BASE_IMAGE"] = base_image
    # No labels: buildah copies labels into every cached intermediate image, whose ids end up in the
    # final image's history, so a per-build label would make a cached build differ from a fresh one.
    built = oci.build(builder, dockerfile, house.path, tag, build_args=args, no_cache=no_cache, push=push)
    result = StepResult(
        name, package.version, tag, built.digest, input_hash, t1 - t0, built.seconds,
        house.deps_sha256, house.local_sha256, left_out=house.left_out, pruned=house.pruned,
    )  # fmt: skip
    try:
        result.diff_ids = oci.diff_ids(builder, tag)
        result.unpacked_bytes = oci.unpacked_size(builder, tag)
    except (oci.OciError, KeyError, ValueError) as e:
        log(f"{name}: layer ids or unpacked size unknown ({e.__class__.__name__}: {e})")
    if built.digest:
        ref = f"{tag.rsplit(':', 1)[0]}@{built.digest}"
        try:
            result.pushed_bytes = oci.pushed_size(ref)  # also proves the digest resolves
        except oci.OciError as e:
            raise DeliveryError(f"{name}: pushed, but {ref} does not resolve: {e}") from None
    size = f", {result.unpacked_bytes / 1e6:.0f} MB" if result.unpacked_bytes else ""
    log(f"{name}: image {tag} {built.digest or '(built, not pushed)'} [{built.seconds:.1f} s{size}]")
    return result


def pin(
    root: Path, lock_path: Path, package: Package, input_hash: str, digest: str | None, log: Callable[[str], None]
) -> None:
    """Write one package's lock entry (version, input hash; a step's image and pushed digest)."""
    lockmod = monorepo.lock_module(root)
    lock = lockmod.read_lock(lock_path)  # re-read: write only this entry
    old = lock.packages.get(package.name)
    image = f"{lock.registry.rstrip('/')}/{package.dist}" if package.kind == "step" else None
    lock.packages[package.name] = lockmod.LockEntry(package.version, input_hash, image, digest)
    lockmod.write_lock(lock, lock_path)
    if old != lock.packages[package.name]:
        log(f"{package.name}: lock <- {package.version} {input_hash[:19]}" + (f" {digest}" if digest else ""))


def unpin_deleted(root: Path, lock_path: Path, names: list[str], log: Callable[[str], None]) -> None:
    """Remove the lock entries of packages no longer in the tree."""
    lockmod = monorepo.lock_module(root)
    lock = lockmod.read_lock(lock_path)
    for name in names:
        lock.packages.pop(name, None)
        log(f"{name}: deleted from the tree; lock entry removed")
    lockmod.write_lock(lock, lock_path)


def build_changed(
    root: Path = ROOT,
    *,
    registry: str | None = None,
    push: bool = False,
    base_image: str | None = None,
    since: str | None = None,
    lock_path: Path | None = None,
    builder: str | None = None,
    only: list[str] | None = None,
    rebuild_all: bool = False,
    no_cache: bool = False,
    run_tests: Callable[[Package], None] | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Test, build and (with push) publish the changed packages; write what was pushed to the lock."""
    started = time.monotonic()
    lock_path = Path(lock_path or root / LOCK)
    todo = plan_build(root, since=since, lock_path=lock_path, only=only, rebuild_all=rebuild_all)
    lockmod = monorepo.lock_module(root)
    try:
        lock = lockmod.read_lock(lock_path)
    except lockmod.LockError as e:
        raise DeliveryError(str(e)) from None
    push_registry = registry or os.environ.get("MNIST_CT_REGISTRY") or lock.registry
    missing = add_missing_images(root, todo, lock, push_registry, only) if push else []
    report = Report(todo.mode, None, todo.ordered, missing, decide_s=time.monotonic() - started)
    if not todo.ordered and not todo.deleted:
        present = f", every pinned image is in {push_registry}" if push else ""
        log(f"nothing to build: no package changed ({todo.mode}){present} [{report.decide_s:.1f} s]")
        report.total_s = time.monotonic() - started
        return report
    for name in todo.ordered:
        log(f"{name} {todo.packages[name].version}: {todo.reasons[name]}")
    if push:
        warn_uncommitted(root, todo, log)
    if run_tests is not None:
        run_package_tests(todo, run_tests, report, log)

    engine = ""
    if any(todo.packages[n].kind == "step" for n in todo.ordered):
        engine = report.builder = oci.detect_builder(builder)
        log(f"builder: {engine}; push to: {push_registry if push else '(not pushed)'}")
    base_image = base_image or os.environ.get("MNIST_CT_BASE_IMAGE") or None
    for name in todo.ordered:
        package = todo.packages[name]
        input_hash = monorepo.input_hash(root, package, todo.packages)
        digest = None
        if package.kind == "step":
            result = build_step(
                root, package, todo.packages, builder=engine, registry=push_registry, input_hash=input_hash,
                base_image=base_image, no_cache=no_cache, push=push, log=log,
            )  # fmt: skip
            report.steps.append(result)
            digest = result.digest
        if push:
            pin(root, lock_path, package, input_hash, digest, log)
            report.recorded.append(name)
    if push and todo.deleted:
        unpin_deleted(root, lock_path, todo.deleted, log)
        report.removed.extend(todo.deleted)
    if not push and report.steps:
        log("built only: nothing pushed, the lock is unchanged (add --push to publish and pin)")
    report.total_s = time.monotonic() - started
    return report


# --- command line -------------------------------------------------------------------------------------


def changed_parser(prog: str = "nox -s changed --") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Which packages changed, and why.")
    p.add_argument("--since", metavar="REF", help="compare with a git ref (git diff REF) instead of the lock's hashes")
    p.add_argument("--json", action="store_true", help='one JSON line: {"<folder>": {"changed": bool, "reason": str}}')
    p.add_argument("--lock", type=Path, default=None, help=f"image lock to compare with (default {LOCK})")
    return p


def build_parser(prog: str = "nox -s build-changed --") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Test, build and (with --push) publish the changed packages; pin digests in the lock."
    )
    p.add_argument("--registry", help="where to push (default: $MNIST_CT_REGISTRY, else the lock's registry)")
    p.add_argument("--push", action="store_true", help="push the images and write digests and hashes to the lock")
    p.add_argument("--base-image", help="BASE_IMAGE build arg (default: $MNIST_CT_BASE_IMAGE, else the Dockerfile's)")
    p.add_argument("--builder", choices=oci.BUILDERS, help="default: $MNIST_CT_BUILDER, else docker/buildah/podman")
    p.add_argument("--since", metavar="REF", help="select by git diff REF instead of the lock's hashes")
    p.add_argument("--lock", type=Path, default=None, help=f"image lock to read and write (default {LOCK})")
    p.add_argument("--only", nargs="+", metavar="PACKAGE", help="of the changed packages, only these")
    p.add_argument("--all", action="store_true", help="rebuild every package, changed or not")
    p.add_argument("--no-cache", action="store_true", help="build without the builder's layer cache")
    p.add_argument("--no-tests", action="store_true", help="skip the tests (nox session only)")
    p.add_argument("--report", type=Path, help="write timings, digests, sizes and layer ids as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = ("changed", "build-changed", "base-image", "dockerfiles")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m tools.delivery {'|'.join(commands)} [options] (--help)", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "dockerfiles":
            p = argparse.ArgumentParser(
                prog="python -m tools.delivery dockerfiles",
                description="Write each step's Dockerfile from the template.",
            )
            p.add_argument("--check", action="store_true", help="only list the ones that differ (exit 1 if any)")
            args = p.parse_args(rest)
            stale = write_dockerfiles(ROOT, check=args.check)
            for dockerfile in stale:
                print(f"{'differs' if args.check else 'rewritten'}: {dockerfile.relative_to(ROOT)}")
            return 1 if args.check and stale else 0
        if command == "changed":
            args = changed_parser("python -m tools.delivery changed").parse_args(rest)
            plan, errors = plan_or_fail(ROOT, args.since, args.lock)
            return print_plan(plan, errors, args.json)
        if command == "base-image":
            from tools import baseimage

            p = argparse.ArgumentParser(prog="python -m tools.delivery base-image")
            p.add_argument("--tag", default=baseimage.DEFAULT_TAG)
            p.add_argument("--mirror", default=baseimage.DEFAULT_MIRROR)
            p.add_argument("--builder", choices=oci.BUILDERS)
            args = p.parse_args(rest)
            baseimage.build_base_image(args.tag, mirror=args.mirror, builder=args.builder)
            print(args.tag)
            return 0
        args = build_parser("python -m tools.delivery build-changed").parse_args(rest)
        report = build_changed(
            ROOT, registry=args.registry, push=args.push, base_image=args.base_image, since=args.since,
            lock_path=args.lock, builder=args.builder, only=args.only, rebuild_all=args.all, no_cache=args.no_cache,
        )  # fmt: skip
        if args.report:
            args.report.write_text(report.to_json() + "\n")
        return 0
    except FAILURES as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
