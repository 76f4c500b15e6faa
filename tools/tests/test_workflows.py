"""The workflows run as written: every job of .github/workflows/*.yml rehearsed in a fresh clone (rehearsal.py).

The sequence mirrors GitHub. `origin` (a bare repository standing for GitHub) gets a snapshot commit of the
working tree (uncommitted work included; no ref or index of this repository is touched), then:

1. pr.yml `test-changed` on refs/pull/1/merge (the snapshot);
2. main.yml `build-changed` on refs/heads/main, against an EMPTY local registry: it must build and push
   every step it pins, commit the lock and push it to origin, then (KFP_HOST set) release the pinned pipeline
   to the recording KFP server, start one run of it and point the recurring run (KFP_SCHEDULE) at it;
3. a tag v<orchestration version> on what that job pushed, then main.yml `release` on it (the same lock:
   KFP already has that version, so it uploads nothing);
4. ci.yml `tests` is `bash .ci/run`, and this test runs inside .ci/run (MNIST_CT_CI_RUN=1): that step is
   checked to be exactly that and recorded as rehearsed by the enclosing run (skipped outside .ci/run).

Stand-ins: ghcr.io = Debian's docker-registry on 127.0.0.1 (tools/registry.py), replacing the host in run
scripts and env values; KFP_HOST = the recording KFP API server of orchestration's tests
(orchestration/tests/kfp_api.py); `gh` and upload-artifact = recorders; `sudo` runs the command (apt-get
runs for real). The base image: on GitHub, build-changed builds on the Dockerfile's default BASE_IMAGE from
Docker Hub, out of reach here, so MNIST_CT_BASE_IMAGE is set to the local debootstrap base
(tools/baseimage.py, `nox -s base-image`; built here when missing).

What the snapshot's lock says: the working tree's lock with every pinned package's input hash refreshed
to the tree's (main right after a pin), except validate's, which reads as an older version. So the PR
and main jobs test, build and pin one changed step (its tests run in the rehearsed job), and main rebuilds
every other step because its locked digest is not in the empty registry. Every package's own suite
runs once in .ci/run (`nox -s tests`), not twice more here: the rehearsal checks the workflows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import REPO
from rehearsal import Job, Runner, load_workflow

from tools import baseimage, monorepo, oci, registry

slow = pytest.mark.slow

WORKFLOWS = REPO / ".github" / "workflows"
LOCK = "orchestration/images.lock.json"
CI_RUN = "bash .ci/run"
PR_PACKAGE = "validate"  # the one step the rehearsed pull request changes: light image, quick tests
SECRETS = {"GITHUB_TOKEN": "ghs_rehearsal", "KFP_TOKEN": "kfp-rehearsal-token"}
SCHEDULE = "0 0 3 * * *"  # vars.KFP_SCHEDULE: KFP's cron, seconds first
# The registry wants a login, as ghcr.io does: github.actor with GITHUB_TOKEN (bcrypt, cost 4: the registry
# checks it on every request).
HTPASSWD = "rehearsal:$2b$04$t1aCRNIH5z0JOACZZVZPjeAZs9mXRdhODs9.OkRbCLi7C9DcPBv3e\n"
IDENTITY = {"GIT_AUTHOR_NAME": "rehearsal", "GIT_AUTHOR_EMAIL": "rehearsal@localhost",
            "GIT_COMMITTER_NAME": "rehearsal", "GIT_COMMITTER_EMAIL": "rehearsal@localhost"}  # fmt: skip

# Every job of every workflow, and the test that rehearses it.
REHEARSED = {("pr.yml", "test-changed"), ("main.yml", "build-changed"), ("main.yml", "release"), ("ci.yml", "tests")}


def _kfp_api():
    """orchestration/tests/kfp_api.py, imported by path (it is no package)."""
    spec = importlib.util.spec_from_file_location("kfp_api", REPO / "orchestration" / "tests" / "kfp_api.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["kfp_api"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def snapshot_to_origin(home: Path) -> Path:
    """A bare `origin` whose main (and refs/pull/1/merge) is the working tree's snapshot plus the lock commit."""
    env = {**IDENTITY, "GIT_INDEX_FILE": str(home / "snapshot-index")}
    _git(REPO, "read-tree", "HEAD", env=env)
    _git(REPO, "add", "-A", env=env)  # a temporary index: the real one is untouched
    tree = _git(REPO, "write-tree", env=env)
    commit = _git(REPO, "commit-tree", tree, "-p", "HEAD", "-m", "rehearsal: snapshot of the working tree", env=env)
    origin = home / "origin.git"
    _git(home, "init", "-q", "--bare", "-b", "main", str(origin))
    _git(REPO, "push", "-q", str(origin), f"{commit}:refs/heads/main")
    prep = home / "prep"
    _git(home, "clone", "-q", str(origin), str(prep))
    lock_as_after_a_pin(prep)
    _git(prep, "commit", "-q", "-m", f"rehearsal: the lock as main has it after a pin; {PR_PACKAGE} changed", "--",
         LOCK, env=IDENTITY)  # fmt: skip
    _git(prep, "push", "-q", "origin", "HEAD:refs/heads/main", "HEAD:refs/pull/1/merge")
    return origin


def lock_as_after_a_pin(root: Path) -> None:
    lockmod = monorepo.lock_module(root)
    lock = lockmod.read_lock(root / LOCK)
    packages = monorepo.discover(root)
    for name, entry in lock.packages.items():
        if name not in packages or (packages[name].kind == "step" and not entry.digest):
            continue  # deleted, or never built: stays changed
        current = monorepo.input_hash(root, packages[name], packages)
        lock.packages[name] = dataclasses.replace(entry, version=packages[name].version, input_hash=current)
    lock.packages[PR_PACKAGE] = dataclasses.replace(
        lock.packages[PR_PACKAGE], version="0.0.0", input_hash="sha256:" + "0" * 64
    )
    lockmod.write_lock(lock, root / LOCK)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    missing = [t for t in ("buildah", "skopeo", "docker-registry") if shutil.which(t) is None]
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        missing.append("debootstrap")  # root's PATH only, on Debian
    if missing:
        pytest.skip(f"not installed here: {', '.join(missing)} (apt-get install them; .ci/run does)")
    home = tmp_path_factory.mktemp("rehearsal")
    origin = snapshot_to_origin(home)
    base = os.environ.get("MNIST_CT_BASE_IMAGE", baseimage.DEFAULT_TAG)
    if not oci.image_exists("buildah", base):
        baseimage.build_base_image(base, builder="buildah")
    reg = registry.start(home / "registry", htpasswd=HTPASSWD)
    try:
        with _kfp_api().FakeKfp() as kfp:
            runner = Runner(
                home, origin, secrets=SECRETS, vars={"KFP_HOST": kfp.url, "KFP_SCHEDULE": SCHEDULE},
                registry_host=reg.address,
                env={"MNIST_CT_BASE_IMAGE": base},
                delegated={CI_RUN: "rehearsed by the enclosing .ci/run (this test runs inside it)"},
            )  # fmt: skip
            yield SimpleNamespace(runner=runner, kfp=kfp, registry=reg, origin=origin, tag=None)
    finally:
        reg.stop()
        oci.remove_images_under("buildah", reg.address + "/")
        shutil.rmtree(home / "registry", ignore_errors=True)  # seven images: GBs


def run_job(rehearsal, workflow: str, job: str, *, ref: str, event: str) -> Job:
    result = rehearsal.runner.run_job(WORKFLOWS / workflow, job, ref=ref, event=event)
    print(result.summary())  # shown when a test fails
    return result


@pytest.fixture(scope="module")
def pr_job(rehearsal) -> Job:
    return run_job(rehearsal, "pr.yml", "test-changed", ref="refs/pull/1/merge", event="pull_request")


@pytest.fixture(scope="module")
def main_job(rehearsal) -> Job:
    return run_job(rehearsal, "main.yml", "build-changed", ref="refs/heads/main", event="push")


@pytest.fixture(scope="module")
def release_job(rehearsal, main_job) -> Job:
    assert main_job.ok, main_job.summary()
    pyproject = _git(rehearsal.origin, "show", "main:orchestration/pyproject.toml")
    tag = "v" + tomllib.loads(pyproject)["project"]["version"]
    _git(rehearsal.origin, "tag", tag, "main")
    rehearsal.tag = tag
    return run_job(rehearsal, "main.yml", "release", ref=f"refs/tags/{tag}", event="push")


def report_time(capsys, job: Job) -> None:
    with capsys.disabled():
        print(f"\n  rehearsed {job.workflow} {job.name}: {job.seconds:.0f} s "
              f"({', '.join(f'{s.name[:24]} {s.seconds:.0f}' for s in job.steps if s.seconds >= 1)})")  # fmt: skip


def test_every_job_of_every_workflow_is_rehearsed():
    jobs = {(w.name, name) for w in WORKFLOWS.glob("*.yml") for name in load_workflow(w)["jobs"]}
    assert jobs == REHEARSED, "a job without a rehearsal (or a rehearsal of no job): see this module's tests"


@slow
def test_pull_request_job_runs_as_written(pr_job, capsys):
    report_time(capsys, pr_job)
    assert pr_job.ok, pr_job.summary()


@slow
def test_main_job_pins_every_step_with_a_digest_the_registry_has_and_pushes_the_lock(
    rehearsal, main_job, capsys, monkeypatch
):
    report_time(capsys, main_job)
    assert main_job.ok, main_job.summary()
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(main_job.workspace.parent / "run/containers/auth.json"))  # its login
    assert _git(rehearsal.origin, "log", "-1", "--format=%s", "main").startswith("lock: pin the images built from")
    lock = json.loads(_git(rehearsal.origin, "show", f"main:{LOCK}"))
    env = load_workflow(WORKFLOWS / "main.yml")["env"]
    assert env["MNIST_CT_REGISTRY"] == lock["registry"], "main.yml pushes where the lock says its images live"
    steps = {n: e for n, e in lock["packages"].items() if "image" in e}
    assert len(steps) == len(list(REPO.glob("steps/*/pyproject.toml")))
    for name, entry in steps.items():
        assert entry["digest"], f"{name} is not pinned"
        local = rehearsal.runner.host(entry["image"])  # where MNIST_CT_REGISTRY pointed the push
        manifest = oci.registry_manifest(f"{local}@{entry['digest']}")
        assert manifest.get("layers"), f"{local}@{entry['digest']}: not in the registry"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@slow
def test_main_job_s_deploy_image_serves_the_model_as_its_cluster_manifest_runs_it(
    rehearsal, main_job, tmp_path, monkeypatch
):
    """The pinned deploy image, as pushed: deploy a real (fixture) run inside it, then run the predictor with
    the command, user and read-only /mnt/models of the InferenceService it wrote, and send it real digits."""
    import time
    import urllib.request

    sys.path.insert(0, str(REPO / "orchestration" / "src"))
    from mnist_ct.orchestration import containers

    assert main_job.ok, main_job.summary()
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(main_job.workspace.parent / "run/containers/auth.json"))
    entry = json.loads(_git(rehearsal.origin, "show", f"main:{LOCK}"))["packages"]["deploy"]
    image = f"{rehearsal.runner.host(entry['image'])}@{entry['digest']}"
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # the image's user (10001) writes here
    tests = {REPO / "steps" / "deploy" / "tests": "/tests", work: "/work"}
    build = (
        "import sys; sys.path.insert(0, '/tests'); from pathlib import Path; from fixture_run import build_run; "
        "r = build_run(Path('/work'), 'good'); print(r.accuracy)"
    )
    done = containers.run_container(image, ["python", "-c", build], tests, engine="buildah", user="10001:10001",
                                    capture_output=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = float(done.stdout.split()[-1])
    deploy = ["python", "-m", "mnist_ct.deploy", "--run-id", "good", "--data-root", "/work/data", "--model-root",
              "/work/model", "--deploy-root", "/work/deploy", "--predictor-image", image]  # fmt: skip
    done = containers.run_container(image, deploy, tests, engine="buildah", user="10001:10001", capture_output=True,
                                    timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    folder = work / "deploy" / "kserve" / "mnist"
    service = yaml.safe_load((folder / "inferenceservice.yaml").read_text())
    [container] = service["spec"]["predictor"]["containers"]
    assert container["image"] == image
    port = _free_port()
    args = [str(port) if a == "8080" else a for a in container["args"]]
    name = f"mnist-ct-predictor-{port}"
    commands = containers.container_argv(
        "buildah", image, [*container["command"], *args], {folder: "/mnt/models:ro"}, env={"HOME": "/tmp"},
        user=f"{container['securityContext']['runAsUser']}:{container['securityContext']['runAsUser']}", name=name,
    )  # fmt: skip
    assert subprocess.run(commands[0], capture_output=True).returncode == 0
    log = (tmp_path / "predictor.log").open("w")
    server = subprocess.Popen(commands[1], stdout=log, stderr=subprocess.STDOUT)
    try:
        ready = f"http://127.0.0.1:{port}{container['readinessProbe']['httpGet']['path']}"
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "predictor.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the predictor in the image never got ready"
            try:
                with urllib.request.urlopen(ready, timeout=30) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        # The client runs in the image too (numpy, Pillow): every test digit as a PNG, over the host's loopback.
        client = f"""
import http.client, io, json
from pathlib import Path
from PIL import Image
from mnist_ct.artifacts import read_split
_, test = read_split(Path("/work/data/runs/good/dataset"), "test")
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=60)
right, versions = 0, set()
for pixels, label in zip(test.images, test.labels):
    b = io.BytesIO()
    Image.fromarray(pixels).save(b, "PNG")
    c.request("POST", "/v1/models/mnist:predict", b.getvalue(), {{"Content-Type": "image/png"}})
    r = c.getresponse()
    a = json.loads(r.read())
    assert r.status == 200, a
    right += a["label"] == int(label)
    versions.add(a["model_version"])
print(json.dumps({{"accuracy": right / len(test.labels), "versions": sorted(versions)}}))
"""
        done = containers.run_container(image, ["python", "-c", client], tests, engine="buildah", user="10001:10001",
                                        capture_output=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        served = json.loads(done.stdout.strip().splitlines()[-1])
        assert served == {"accuracy": pytest.approx(accuracy, abs=1e-9), "versions": ["good"]}
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run(["buildah", "rm", name], capture_output=True)
        log.close()


@slow
def test_main_job_compiles_the_pinned_pipeline_and_keeps_the_build_report(rehearsal, main_job):
    assert main_job.ok, main_job.summary()
    pipeline = yaml.safe_load_all((main_job.workspace / "pipeline.yaml").read_text())
    assert next(pipeline)["pipelineInfo"]["name"]
    report = json.loads((rehearsal.runner.uploads / "build-report" / "build-report.json").read_text())
    assert {s["name"] for s in report["steps"]} == {p.parent.name for p in REPO.glob("steps/*/pyproject.toml")}
    assert PR_PACKAGE in report["tested"]


@slow
def test_main_job_releases_the_pinned_pipeline_starts_one_run_and_schedules_it(rehearsal, main_job):
    assert main_job.ok, main_job.summary()
    kfp = rehearsal.kfp
    [pipeline] = kfp.state.pipelines.values()
    [version] = kfp.state.versions[pipeline["pipeline_id"]]
    compiled = yaml.safe_load_all((main_job.workspace / "pipeline.yaml").read_text())
    assert version["pipeline_spec"] == next(compiled), "main released the pipeline it compiled from the pinned lock"
    lock = monorepo.lock_module(main_job.workspace).read_lock(main_job.workspace / LOCK)  # the lock it pinned
    assert version["display_name"].endswith("-" + lock.content_hash()[:12])
    reference = {"pipeline_id": pipeline["pipeline_id"], "pipeline_version_id": version["pipeline_version_id"]}
    [run] = kfp.state.runs  # push -> train -> deploy: one run of the new version
    assert run["pipeline_version_reference"] == reference
    [experiment] = kfp.state.experiments.values()
    assert run["experiment_id"] == experiment["experiment_id"] and experiment["display_name"] == "mnist-ct"
    [recurring] = kfp.state.recurring_runs.values()
    assert recurring["pipeline_version_reference"] == reference
    assert recurring["trigger"] == {"cron_schedule": {"cron": SCHEDULE}}
    assert (recurring["max_concurrency"], recurring["no_catchup"]) == ("1", True)
    calls = [r for r in kfp.state.requests if not r.path.endswith("/healthz")]
    assert calls and all(r.authorization == f"Bearer {SECRETS['KFP_TOKEN']}" for r in calls)


@slow
def test_release_job_attaches_the_pipeline_and_the_lock_to_a_github_release(rehearsal, release_job, capsys):
    report_time(capsys, release_job)
    assert release_job.ok, release_job.summary()
    [call] = [c for c in rehearsal.runner.gh_calls() if c["argv"][:2] == ["release", "create"]]
    assert call["argv"][2] == rehearsal.tag
    assert {"pipeline.yaml", LOCK} <= set(call["argv"][3:])


@slow
def test_release_job_finds_the_pipeline_version_in_kfp(rehearsal, release_job):
    assert release_job.ok, release_job.summary()
    kfp = rehearsal.kfp
    [pipeline] = kfp.state.pipelines.values()
    versions = kfp.state.versions[pipeline["pipeline_id"]]
    released = yaml.safe_load_all((release_job.workspace / "pipeline.yaml").read_text())
    assert [v["pipeline_spec"] for v in versions] == [next(released)]  # the tag's pipeline: the one main released
    version = tomllib.loads((release_job.workspace / "orchestration" / "pyproject.toml").read_text())["project"]
    assert versions[0]["display_name"].startswith(version["version"] + "-")
    [step] = [s for s in release_job.steps if s.name.startswith("Upload the pipeline version")]
    assert step.outcome == "success" and step.log is not None
    assert f"version {versions[0]['display_name']} of mnist-ct already exists" in step.log.read_text()
    uploads = kfp.calls("POST", "/pipelines/upload") + kfp.calls("POST", "/pipelines/upload_version")
    assert uploads and all(r.authorization == f"Bearer {SECRETS['KFP_TOKEN']}" for r in uploads)


@slow
def test_ci_job_is_the_enclosing_ci_run(rehearsal):
    job = load_workflow(WORKFLOWS / "ci.yml")["jobs"]["tests"]
    scripts = [s["run"].strip() for s in job["steps"] if "run" in s]
    assert scripts == [CI_RUN], f"ci.yml's job must run exactly `{CI_RUN}` (what this rehearsal runs inside)"
    if os.environ.get("MNIST_CT_CI_RUN") != "1":
        pytest.skip(f"ci.yml's job is `{CI_RUN}`: rehearsed by .ci/run itself; this test runs inside it there")
    result = run_job(rehearsal, "ci.yml", "tests", ref="refs/heads/main", event="push")
    assert result.ok, result.summary()
    assert result.steps[-1].outcome.startswith("delegated")
