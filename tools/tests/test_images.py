"""Real images: a local registry, a local base image, `nox -s build-changed -- --push` on a fixture repo.

A fixture step (tinylib + numpy) is tested, built with buildah and pushed to Debian's docker-registry on
127.0.0.1; the digest written to the lock must resolve with skopeo, the image must run the step inside
it, its unpacked size (buildah's storage) must exceed what was pushed, pushing to an empty registry must
rebuild and re-pin it without its tests, a build from scratch must give the same digest, a code-only
change must rebuild only the thin local-wheels layer, and what tools/wheelhouse.py PRUNE names (numpy's
test suites) must not be in the image. Slow (a base image when none is there, then ~1-2 min); runs in CI
(.ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO, FixtureRepo

from tools import baseimage, oci, registry

pytestmark = pytest.mark.slow

MISSING = [t for t in ("buildah", "skopeo", "docker-registry", "debootstrap") if shutil.which(t) is None]
if MISSING and not (len(MISSING) == 1 and Path("/usr/sbin/debootstrap").exists()):
    why = f"not installed here: {', '.join(MISSING)} (apt-get install them; .ci/run does)"
    pytest.skip(why, allow_module_level=True)

sys.path.insert(0, str(REPO / "orchestration" / "src"))
from mnist_ct.orchestration import containers  # noqa: E402


@dataclass
class Build:
    rc: int
    output: str
    seconds: float
    report: dict | None


def _registry(tmp_path_factory, name: str):
    """A docker-registry of its own, stopped and its images removed from buildah's storage afterwards."""
    reg = registry.start(tmp_path_factory.mktemp(name))
    yield reg
    reg.stop()
    oci.remove_images_under("buildah", reg.address + "/")


@pytest.fixture(scope="module")
def local_registry(tmp_path_factory):
    yield from _registry(tmp_path_factory, "registry")


@pytest.fixture(scope="module")
def empty_registry(tmp_path_factory):
    """A second registry, empty: a fresh machine's, or the project's before anything was pushed to it."""
    yield from _registry(tmp_path_factory, "empty-registry")


@pytest.fixture(scope="module")
def base_image():
    """The local base image (built here when this machine has none)."""
    tag = os.environ.get("MNIST_CT_BASE_IMAGE", baseimage.DEFAULT_TAG)
    if not oci.image_exists("buildah", tag):
        baseimage.build_base_image(tag, builder="buildah")
    return tag


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return FixtureRepo(tmp_path_factory.mktemp("images") / "repo", tooling=True, other=False)


def build(repo: FixtureRepo, reg, base: str, *extra: str, nox: bool = False) -> Build:
    """build-changed in the fixture repo: through nox (tests included) or the tooling's CLI."""
    report = repo.root / f"report-{time.monotonic_ns()}.json"
    args = ["--push", "--registry", f"{reg.address}/mnist-ct", "--base-image", base, "--builder", "buildah"]
    args += ["--report", str(report), *extra]
    if nox:
        argv = [sys.executable, "-m", "nox", "-f", str(repo.root / "noxfile.py"), "-s", "build-changed", "--", *args]
    else:
        argv = [sys.executable, "-m", "tools.delivery", "build-changed", *args]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=repo.root, capture_output=True, text=True)
    seconds = time.monotonic() - started
    doc = json.loads(report.read_text()) if report.is_file() else None
    return Build(done.returncode, done.stdout + done.stderr, seconds, doc)


def lock(repo: FixtureRepo) -> dict:
    return json.loads(repo.lock_path.read_text())["packages"]


@pytest.fixture(scope="module")
def first(repo, local_registry, base_image) -> Build:
    result = build(repo, local_registry, base_image, nox=True)
    assert result.rc == 0, result.output[-3000:]
    return result


@pytest.fixture(scope="module")
def from_scratch(repo, local_registry, base_image, first) -> Build:
    oci.remove_image("buildah", first.report["steps"][0]["tag"])
    oci.prune_cache("buildah")
    result = build(repo, local_registry, base_image, "--all", "--only", "tiny", "--no-cache")
    assert result.rc == 0, result.output[-3000:]
    return result


@pytest.fixture(scope="module")
def code_change(repo, local_registry, base_image, first, from_scratch) -> tuple[Build, Build]:
    main = repo.root / "steps/tiny/src/mnist_ct/tiny/__main__.py"
    main.write_text(main.read_text().replace("int(np.arange(4).sum())", "int(np.arange(5).sum())"))
    refused = build(repo, local_registry, base_image)
    repo.set_version("tiny", "0.1.1")
    result = build(repo, local_registry, base_image)
    assert result.rc == 0, result.output[-3000:]
    return refused, result


def test_build_changed_tests_builds_and_pushes_the_changed_step(first):
    assert "tiny 0.1.0: tests" in first.output and "1 passed" in first.output
    [step] = first.report["steps"]
    assert step["name"] == "tiny" and step["tag"].endswith("/mnist-ct/mnist-ct-tiny:0.1.0")
    assert first.report["recorded"] == ["tinylib", "tiny"]


def test_the_unpacked_size_is_measured_by_buildah_and_exceeds_the_pushed_size(first):
    [step] = first.report["steps"]
    # Measured in buildah's own storage (the layers' uncompressed sizes), not null as when podman was asked.
    assert step["unpacked_bytes"] > step["pushed_bytes"] > 0


def test_the_lock_pins_the_pushed_digest_with_the_input_hash(repo, first):
    entries = lock(repo)
    [step] = first.report["steps"]
    assert entries["tiny"] == {
        "version": "0.1.0",
        "input_hash": step["input_hash"],
        "image": "ghcr.io/mnist-ct-test/mnist-ct-tiny",  # the lock's registry, wherever it was pushed
        "digest": step["digest"],
    }
    assert entries["tinylib"]["input_hash"].startswith("sha256:") and "digest" not in entries["tinylib"]


def test_the_locked_digest_resolves_in_the_registry(repo, local_registry, first):
    entry = lock(repo)["tiny"]
    mirrored = containers.pull_reference(
        f"{entry['image']}@{entry['digest']}", {"ghcr.io/mnist-ct-test": f"{local_registry.address}/mnist-ct"}
    )
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{mirrored}"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Digest"] == entry["digest"]


def test_the_image_runs_the_step(repo, local_registry, first, tmp_path):
    entry = lock(repo)["tiny"]
    mirrors = {"ghcr.io/mnist-ct-test": f"{local_registry.address}/mnist-ct"}
    image = f"{entry['image']}@{entry['digest']}"
    done = containers.run_container(
        image, ["python", "-m", "mnist_ct.tiny", "--help"], engine="buildah", mirrors=mirrors, capture_output=True
    )
    assert done.returncode == 0 and "--run-id" in done.stdout
    script = "import sys, os; open('/data/out.txt', 'w').write(sys.argv[1] + str(os.getuid()))"
    done = containers.run_container(
        image, ["python", "-c", script, "written"], {tmp_path / "data": "/data"}, engine="buildah", mirrors=mirrors
    )
    assert done.returncode == 0
    assert (tmp_path / "data" / "out.txt").read_text() == f"written{os.getuid()}"


def test_the_image_leaves_out_what_prune_names_and_still_imports_it(repo, local_registry, first):
    """numpy's test suites (tools/wheelhouse.py PRUNE) are not in the image; numpy and numpy.testing work."""
    [step] = first.report["steps"]
    assert "numpy/_core/tests" in step["pruned"] and "numpy/tests" in step["pruned"]
    entry = lock(repo)["tiny"]
    mirrors = {"ghcr.io/mnist-ct-test": f"{local_registry.address}/mnist-ct"}
    script = (
        "import sysconfig, pathlib, numpy, numpy.testing; site = pathlib.Path(sysconfig.get_path('purelib')); "
        f"print(sorted(p for p in {step['pruned']!r} if (site / p).exists()), numpy.arange(3).sum())"
    )
    done = containers.run_container(
        f"{entry['image']}@{entry['digest']}", ["python", "-c", script], engine="buildah", mirrors=mirrors,
        capture_output=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "3"]


def test_the_container_executor_streams_a_task(repo, local_registry, first, tmp_path):
    # The runner's ContainerTask/Mount (runner.py imports kfp, which this venv lacks: same fields here).
    entry = lock(repo)["tiny"]
    executor = containers.ContainerExecutor("buildah", {"ghcr.io/mnist-ct-test": f"{local_registry.address}/mnist-ct"})
    task = SimpleNamespace(
        name="tiny", display_name="tiny", image=f"{entry['image']}@{entry['digest']}",
        command=["python", "-m", "mnist_ct.tiny"], args=["--run-id", "r7"],
        mounts=[SimpleNamespace(host=tmp_path / "data", container_path="/data")], env={},
    )  # fmt: skip
    lines: list[str] = []
    assert executor.run(task, lines.append) == 0
    assert lines == ["hello r7 6"]
    task.args = ["--no-such-option"]
    assert executor.run(task, lines.append) == 2


def test_after_the_push_nothing_is_changed(repo, first):
    done = subprocess.run([sys.executable, "-m", "tools.delivery", "changed", "--json"], cwd=repo.root, text=True,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {n: c["changed"] for n, c in json.loads(done.stdout).items()} == {"tinylib": False, "tiny": False}


def test_nothing_to_build_is_decided_in_seconds(repo, local_registry, base_image, first):
    result = build(repo, local_registry, base_image, nox=True)
    assert result.rc == 0 and "nothing to build" in result.output
    assert result.seconds < 10


def test_an_empty_registry_gets_the_pinned_step_rebuilt_and_repinned_without_its_tests(
    repo, local_registry, empty_registry, base_image, first
):
    pinned = lock(repo)["tiny"]
    result = build(repo, empty_registry, base_image, nox=True)
    assert result.rc == 0, result.output[-3000:]
    where = f"{empty_registry.address}/mnist-ct"
    assert f"tiny 0.1.0: not in {where} (the lock pins {pinned['digest'][:19]}...)" in result.output
    assert "tiny: tests skipped: its inputs equal the lock's input hash" in result.output
    report = result.report
    assert report is not None
    assert report["not_in_registry"] == ["tiny"] and report["tested"] == []
    assert report["recorded"] == ["tiny"]  # tinylib: unchanged and no image, untouched
    [step] = report["steps"]
    assert lock(repo)["tiny"] == {**pinned, "digest": step["digest"]}
    out = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{where}/mnist-ct-tiny@{step['digest']}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    again = build(repo, empty_registry, base_image)
    assert again.rc == 0 and f"nothing to build: no package changed (lock), every pinned image is in {where}" in (
        again.output
    )


def test_the_same_inputs_built_from_scratch_give_the_same_digest(first, from_scratch):
    assert from_scratch.report["steps"][0]["digest"] == first.report["steps"][0]["digest"]
    assert from_scratch.report["steps"][0]["diff_ids"] == first.report["steps"][0]["diff_ids"]


def test_a_changed_step_that_keeps_its_version_is_refused(code_change):
    refused, _ = code_change
    assert refused.rc == 1
    assert "tiny changed" in refused.output and "bump [project] version in steps/tiny/pyproject.toml" in refused.output


def test_a_code_only_change_rebuilds_one_thin_layer(repo, first, code_change):
    _, changed = code_change
    before, after = first.report["steps"][0], changed.report["steps"][0]
    assert after["deps_sha256"] == before["deps_sha256"] and after["local_sha256"] != before["local_sha256"]
    differ = [i for i, (a, b) in enumerate(zip(before["diff_ids"], after["diff_ids"], strict=True)) if a != b]
    assert len(differ) == 1, differ
    assert after["digest"] != before["digest"] and lock(repo)["tiny"]["digest"] == after["digest"]
    assert lock(repo)["tiny"]["version"] == "0.1.1"
