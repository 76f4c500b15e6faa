"""Fault suite: every step SIGKILLed while it publishes, then rerun; deploys killed; two runs at once.

The real step packages run as processes (each in its own venv under .nox/packages, as in
test_run_local.py, or all beside orchestration) on tiny settings: 30 images per class, 1 epoch.

- Every step from preprocess to analysis is frozen (frozen_step.py: SIGSTOP) at three moments of
  mnist_ct.artifacts' publish: while a file is being written into the hidden staging folder, with
  every file written but no manifest (the same process let go on from the first moment, then
  SIGKILLed: a frozen process's disk is what a kill leaves, so one step start serves both), and while
  renaming a finished artifact over an older one (SIGKILLed). After each kill nothing but hidden
  leftovers is there, the step that reads the artifact refuses with one line and exit 3 (also when an
  incomplete folder is put in place by hand), and a rerun completes and removes those leftovers; the
  chain then goes on from the rerun's artifact, so the run completes.
- deploy is killed at the same moments and at the live archive's rename, and at spread-out moments
  while a reader keeps opening the live .mar: the live archive is always a complete zip of one version.
- Two `mnist-ct run-local` runs with different run ids on one workdir at the same time both complete,
  and each run's artifacts are its own (sizes, lineage digests), verified by mnist_ct.artifacts.

Marked `fault` and `slow`; runs in CI with the rest of orchestration's tests (`nox -s tests`, which
builds the step venvs before it reaches orchestration). Skips like test_run_local.py when no step is
installed, or fails with MNIST_CT_REQUIRE_STEPS=1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from conftest import RUNNER_OPTIONS, needs_real_steps, step_python

pytestmark = [pytest.mark.fault, pytest.mark.slow, needs_real_steps]

FROZEN = Path(__file__).with_name("frozen_step.py")
CHAIN = ["preprocess", "validate", "train_model", "embedding", "train_faiss", "analysis"]
# Tiny settings: 24 train / 6 test images per class, one epoch, one thread per step.
OPTIONS = {
    "preprocess": ["--limit-per-class", "30"],
    "validate": [],
    "train_model": ["--epochs", "1", "--threads", "1"],
    "embedding": ["--threads", "1"],
    "train_faiss": ["--threads", "1"],
    "analysis": ["--threads", "1"],
    "deploy": [],
}
# The artifact each step publishes (volume, folder) and the next step that reads it.
ARTIFACT = {
    "preprocess": ("data", "dataset"),
    "validate": ("data", "validation"),
    "train_model": ("model", "model"),
    "embedding": ("model", "embeddings"),
    "train_faiss": ("model", "index"),
    "analysis": ("model", "analysis"),
}
READER = {
    "preprocess": "train_model",
    "train_model": "embedding",
    "embedding": "train_faiss",
    "train_faiss": "analysis",
    "analysis": "deploy",
}  # validate's report is read only for analysis' lineage, and only when its manifest exists
ARCHIVE_FILES = {"MAR-INF/MANIFEST.json", "model.pt", "index.faiss", "labels.npy", "handler.py", "deployment.json"}
TIMEOUT_S = 300


@dataclass
class Workdir:
    root: Path
    done: set[str] = field(default_factory=set)
    children: list[subprocess.Popen] = field(default_factory=list)  # killed at teardown if a test failed
    logs: dict[int, IO[bytes]] = field(default_factory=dict)  # each frozen child's stderr

    @property
    def deploy_root(self) -> Path:
        return self.root / "deploy-model"

    def core(self, run_id: str) -> list[str]:
        return [
            "--run-id",
            run_id,
            "--data-root",
            str(self.root / "data"),
            "--model-root",
            str(self.root / "model"),
            "--deploy-root",
            str(self.deploy_root),
            "--quiet",
        ]

    def folder(self, step: str, run_id: str = "f") -> Path:
        volume, name = ARTIFACT[step]
        return self.root / volume / "runs" / run_id / name

    def run(self, step: str, run_id: str = "f", *extra: str) -> subprocess.CompletedProcess:
        argv = [step_python(step), "-m", f"mnist_ct.{step}", *self.core(run_id), *OPTIONS[step], *extra]
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)

    def frozen(self, step: str, points: str, run_id: str = "f", *extra: str) -> subprocess.Popen:
        """Start `step` and wait until it has stopped itself at the first of `points` (frozen_step.py: a
        comma-separated list, each point stopped at once; `resume` goes on to the next)."""
        argv = [step_python(step), str(FROZEN), points, step, *self.core(run_id), *OPTIONS[step], *extra]
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed at teardown; not a pipe, which could block the step
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        self.children.append(child)
        self.logs[child.pid] = err
        return stopped(child, err, f"{step} at {points.split(',')[0]}")

    def killed_at(self, step: str, point: str, run_id: str = "f", *extra: str) -> None:
        kill(self.frozen(step, point, run_id, *extra))

    def resume(self, child: subprocess.Popen, what: str) -> subprocess.Popen:
        """Let a frozen step go on until it stops itself at its next point."""
        os.kill(child.pid, signal.SIGCONT)
        return stopped(child, self.logs[child.pid], what)


def stopped(child: subprocess.Popen, err: IO[bytes], what: str) -> subprocess.Popen:
    """`child` once it has stopped itself (SIGSTOP); the test fails if it ends or takes too long first."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        pid, status = os.waitpid(child.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            return child
        if pid:
            err.seek(0)
            pytest.fail(f"{what}: ended (status {status}) before stopping there: {err.read().decode()[-2000:]}")
        time.sleep(0.02)
    child.kill()
    pytest.fail(f"{what}: not reached within {TIMEOUT_S} s")


def kill(child: subprocess.Popen) -> None:
    """SIGKILL a frozen child (then SIGCONT, so the kernel delivers it) and reap it."""
    os.kill(child.pid, signal.SIGKILL)
    os.kill(child.pid, signal.SIGCONT)
    assert child.wait(timeout=30) == -signal.SIGKILL


def hidden(folder: Path, kind: str) -> list[Path]:
    """Hidden `.<name>.<kind>-*` siblings of `folder` (publish's staging or moved-aside folders)."""
    parent = folder.parent
    return sorted(parent.glob(f".{folder.name}.{kind}-*"), key=lambda p: p.stat().st_mtime) if parent.is_dir() else []


def assert_refused(result: subprocess.CompletedProcess, step: str, *fragments: str) -> str:
    """Exit 3 and exactly one line on stderr, `<step>: error: ...`, holding every fragment."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"{step}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def verified(workdir: Workdir, *folders: Path) -> dict[str, dict]:
    """Each folder read with mnist_ct.artifacts.read_verified (manifest, size and sha256 of every file)."""
    code = """if True:
        import json, sys
        from mnist_ct.artifacts import read_verified
        out = {}
        for p in sys.argv[1:]:
            m = read_verified(p)
            out[p] = {"kind": m.kind, "digest": m.digest, "inputs": m.inputs, "meta": m.meta,
                      "files": sorted(m.files), "created": m.created}
        print(json.dumps(out))
    """
    done = subprocess.run([step_python("validate"), "-c", code, *map(str, folders)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def archive_version(mar: Path) -> str:
    """The version of a complete model archive; fails on a truncated or partial one."""
    with zipfile.ZipFile(mar) as z:
        assert z.testzip() is None, f"{mar}: a corrupt member"
        missing = ARCHIVE_FILES - set(z.namelist())
        assert not missing, f"{mar}: missing {sorted(missing)}"
        version = json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"]
        assert json.loads(z.read("deployment.json"))["run_id"] == version
        return version


def events(workdir: Workdir) -> list[dict]:
    log = workdir.deploy_root / "deployments.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workdir]:
    work = Workdir(tmp_path_factory.mktemp("faults"))
    yield work
    for child in work.children:  # a frozen step left by a failed assertion
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            os.kill(child.pid, signal.SIGCONT)
            child.wait(timeout=30)
    for log in work.logs.values():
        log.close()


@pytest.mark.parametrize("step", CHAIN)
def test_a_step_killed_while_publishing_leaves_nothing_readable_and_its_rerun_completes(chain, step):
    if step != CHAIN[0] and CHAIN[CHAIN.index(step) - 1] not in chain.done:
        pytest.skip("the step before did not complete")
    final, reader = chain.folder(step), READER.get(step)

    # 1. Stopped while writing a file into the staging folder (on disk, what a kill there leaves: a
    #    stopped process writes nothing more): only that hidden folder is there, and the reader refuses.
    writer = chain.frozen(step, "writing,manifest")
    assert not final.exists()
    [staging] = hidden(final, "staging")
    assert not (staging / "manifest.json").exists()
    if reader:
        assert_refused(chain.run(reader), reader, str(final), "artifact folder not found")
        if reader in ARTIFACT:
            assert not chain.folder(reader).exists()  # the reader published nothing

    # 2. The same writer let go on to every file written and fsynced, before the manifest, and killed
    #    there. Even moved into place by hand (what a non-atomic writer would leave), the folder is
    #    refused as incomplete.
    kill(chain.resume(writer, f"{step} at manifest"))
    assert not final.exists()
    assert [p for p in staging.rglob("*") if p.is_file()] and not (staging / "manifest.json").exists()
    shutil.copytree(staging, final)
    if reader:
        assert_refused(chain.run(reader), reader, f"{final}/manifest.json: manifest missing", "incomplete")

    # 3. The rerun replaces the incomplete folder with a finished artifact.
    done = chain.run(step)
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads((final / "manifest.json").read_text())

    # 4. Killed while replacing it (the older artifact moved aside, the new one not yet renamed in):
    #    the folder is absent, never half old and half new. (A reader refuses an absent folder as in 1.,
    #    whatever made it absent: not run again here, it costs a step start.)
    chain.killed_at(step, "rename")
    assert not final.exists()
    [old] = hidden(final, "old")
    assert json.loads((old / "manifest.json").read_text()) == first
    assert (hidden(final, "staging")[-1] / "manifest.json").is_file()

    # 5. The rerun completes and removes what the killed writers left (hidden staging and moved-aside
    #    folders, their lock files); the next step goes on from it.
    done = chain.run(step)
    assert done.returncode == 0, done.stderr[-3000:]
    m = verified(chain, final)[str(final)]
    assert m["kind"] == first["kind"] and m["files"] == sorted(first["files"])
    leftovers = [p.name for p in final.parent.iterdir() if p.name.startswith(f".{final.name}.")]
    assert leftovers == []
    chain.done.add(step)


def test_the_killed_and_rerun_steps_make_a_complete_run(chain):
    if "analysis" not in chain.done:
        pytest.skip("the chain did not complete")
    folders = [chain.folder(s) for s in CHAIN]
    m = {Path(p).name: v for p, v in verified(chain, *folders).items()}
    # Lineage: each artifact names the digest of the finished upstream artifact it read.
    assert m["validation"]["inputs"] == {"dataset": m["dataset"]["digest"]}
    assert m["model"]["inputs"] == {"dataset": m["dataset"]["digest"]}
    assert m["embeddings"]["inputs"] == {"model": m["model"]["digest"], "dataset": m["dataset"]["digest"]}
    assert m["index"]["inputs"] == {"embeddings": m["embeddings"]["digest"]}
    assert m["embeddings"]["digest"] in m["analysis"]["inputs"].values()
    assert m["index"]["digest"] in m["analysis"]["inputs"].values()
    assert m["dataset"]["meta"]["sizes"] == {"train": 240, "test": 60}
    accuracy = json.loads((chain.folder("analysis") / "metrics.json").read_text())["accuracy"]
    assert 0.0 < accuracy <= 1.0


def test_deploy_killed_at_each_moment_keeps_the_live_archive_complete(chain):
    if "analysis" not in chain.done:
        pytest.skip("the chain did not complete")
    live = chain.deploy_root / "model-store" / "mnist.mar"
    done = chain.run("deploy", "f")
    assert done.returncode == 0, done.stderr
    assert archive_version(live) == "f"
    # A second run with the same artifacts under another run id: a new version, equal accuracy. Its analysis
    # (a copy of f's) measured no champion, and f is live now, so deploy's champion check would refuse it
    # (exit 4, "deployed since"): --force, as a redeploy by hand of copied artifacts needs.
    shutil.copytree(chain.root / "model" / "runs" / "f", chain.root / "model" / "runs" / "g")
    history = chain.deploy_root / "history" / "g"
    for point in ("writing", "manifest", "rename", "live"):
        child = chain.frozen("deploy", point, "g", "--force")
        assert archive_version(live) == "f"  # while frozen there
        if point == "live":
            assert [p.name for p in live.parent.glob(".mnist.mar.tmp-*")], "the new archive is staged beside it"
            assert (history / "manifest.json").is_file()
        kill(child)
        assert archive_version(live) == "f", point
        assert [e["version"] for e in events(chain) if e["event"] == "deploy"] == ["f"]
        if point != "live":
            assert not history.exists()
    done = chain.run("deploy", "g", "--force")
    assert done.returncode == 0, done.stderr
    assert archive_version(live) == "g"
    assert not [p.name for p in live.parent.iterdir() if p.name.startswith(".")]  # leftovers cleaned up
    assert not [p.name for p in history.parent.iterdir() if p.name.startswith(".")]
    assert [e["version"] for e in events(chain) if e["event"] == "deploy"] == ["f", "g"]
    done = subprocess.run(
        [
            step_python("deploy"),
            "-m",
            "mnist_ct.deploy",
            "--rollback",
            "--deploy-root",
            str(chain.deploy_root),
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert archive_version(live) == "f"


def test_deploys_killed_at_spread_out_moments_never_expose_a_partial_live_archive(chain):
    """Whole deploys (with torch-model-archiver's process) killed from 0 to 0.6 s after the history
    staging folder appears, while a reader keeps opening the live archive, as TorchServe would."""
    if "analysis" not in chain.done:
        pytest.skip("the chain did not complete")
    live = chain.deploy_root / "model-store" / "mnist.mar"
    if not live.exists():
        assert chain.run("deploy", "f").returncode == 0
    runs, history = chain.root / "model" / "runs", chain.deploy_root / "history"
    versions = {archive_version(live)}
    reads, bad, seen, stop = [0], [], set(), threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(archive_version(live))
                reads[0] += 1
            except (AssertionError, zipfile.BadZipFile, OSError, KeyError, ValueError) as e:
                bad.append(repr(e))

    watcher = threading.Thread(target=reader, daemon=True)
    watcher.start()
    landed = []
    try:
        for i, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6)):
            run_id = f"k{i}"
            shutil.copytree(runs / "f", runs / run_id)
            argv = [step_python("deploy"), "-m", "mnist_ct.deploy", *chain.core(run_id), "--force"]
            child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + TIMEOUT_S
            while not list(history.glob(f".{run_id}.staging-*")) and child.poll() is None:
                assert time.monotonic() < deadline, "deploy never started its history entry"
                time.sleep(0.005)
            time.sleep(delay)
            os.killpg(child.pid, signal.SIGKILL)  # the whole pod: deploy and the archiver it runs
            code = child.wait(timeout=30)
            versions.add(run_id)
            now = archive_version(live)
            assert now in versions
            landed.append("finished" if code == 0 else "after the switch" if now == run_id else "before the switch")
    finally:
        stop.set()
        watcher.join(timeout=30)
    print(f"kills: {landed}; the live archive was read {reads[0]} times meanwhile")
    assert bad == [] and reads[0] > 10, (bad[:3], reads[0])
    assert seen <= versions
    assert "before the switch" in landed  # at least one kill hit a deploy in the middle of its work
    # A clean deploy after all that cleans up, goes through and is live, complete.
    shutil.copytree(runs / "f", runs / "final")
    done = chain.run("deploy", "final", "--force")
    assert done.returncode == 0, done.stderr
    assert archive_version(live) == "final"
    assert not [p.name for p in live.parent.iterdir() if p.name.startswith(".")]
    assert not [p.name for p in history.iterdir() if p.name.startswith(".")]


def test_two_runs_at_once_on_one_workdir_do_not_interfere(tmp_path):
    limits = {"one": 30, "two": 40}
    procs = {}
    for run_id, limit in limits.items():
        argv = [sys.executable, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(tmp_path)]
        argv += [
            "--run-id",
            run_id,
            "--epochs",
            "1",
            "--limit-per-class",
            str(limit),
            "--baseline",
            "0",
            *RUNNER_OPTIONS,
        ]
        out = open(tmp_path / f"{run_id}.log", "w")  # noqa: SIM115 - closed below
        procs[run_id] = (subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), out)
    codes = {}
    try:
        for run_id, (proc, _) in procs.items():
            codes[run_id] = proc.wait(timeout=600)
    finally:
        for proc, out in procs.values():
            if proc.poll() is None:  # timed out: leave nothing running (run-local and its step)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            out.close()
    logs = {r: (tmp_path / f"{r}.log").read_text() for r in limits}
    work = Workdir(tmp_path)
    metrics = {}
    for run_id, limit in limits.items():
        tasks = {
            t["task"].rsplit("/", 1)[-1]: t
            for t in json.loads((tmp_path / "kfp" / run_id / "run.json").read_text())["tasks"]
        }
        assert [t for t in CHAIN if tasks[t.replace("_", "-")]["status"] != "succeeded"] == [], logs[run_id][-3000:]
        folders = [work.folder(s, run_id) for s in CHAIN]
        m = {Path(p).name: v for p, v in verified(work, *folders).items()}
        # Each run's artifacts are its own: its own sizes, and lineage through its own digests only.
        train, test = limit * 8 // 10 * 10, limit * 2 // 10 * 10
        assert m["dataset"]["meta"]["sizes"] == {"train": train, "test": test}
        assert m["validation"]["inputs"] == {"dataset": m["dataset"]["digest"]}
        assert m["model"]["inputs"] == {"dataset": m["dataset"]["digest"]}
        assert m["embeddings"]["inputs"] == {"model": m["model"]["digest"], "dataset": m["dataset"]["digest"]}
        assert m["index"]["inputs"] == {"embeddings": m["embeddings"]["digest"]}
        assert m["embeddings"]["digest"] in m["analysis"]["inputs"].values()
        metrics[run_id] = (m, json.loads((work.folder("analysis", run_id) / "metrics.json").read_text())["accuracy"])
        # Nothing half-written anywhere in the run's folders.
        for volume in ("data", "model"):
            hidden_files = [p for p in (tmp_path / volume / "runs" / run_id).rglob(".*")]
            assert hidden_files == [], hidden_files
    assert metrics["one"][0]["dataset"]["digest"] != metrics["two"][0]["dataset"]["digest"]
    # They did run at the same time: each started before the other's analysis was published.
    for a, b in (("one", "two"), ("two", "one")):
        assert metrics[a][0]["dataset"]["created"] <= metrics[b][0]["analysis"]["created"]
    # Both ran deploy on the one deploy volume, one at a time (flock): each deployed, or was refused by
    # champion/challenger (exit 4): the other run's model went live after this run's analysis measured the
    # champion, or this run scored below the champion on its own test split.
    live = tmp_path / "deploy-model" / "model-store" / "mnist.mar"
    log = [e for e in events(work) if e["event"] in ("deploy", "refused")]
    assert sorted(e["version"] for e in log) == ["one", "two"]
    for e in log:
        assert codes[e["version"]] == (0 if e["event"] == "deploy" else 4), logs[e["version"]][-2000:]
        if e["event"] == "refused":
            assert "deployed since" in e["reason"] or e["accuracy"] < e["champion_accuracy"], e
    deployed = [e["version"] for e in log if e["event"] == "deploy"]
    assert deployed and archive_version(live) == deployed[-1]
