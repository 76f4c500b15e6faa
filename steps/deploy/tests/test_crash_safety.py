"""SIGKILL a real deploy process at its riskiest moments: the live archive stays complete.

The deploy runs in a child process that stops itself (SIGSTOP) at a chosen point; the test
checks the state while it is frozen there, then kills it with SIGKILL, as a node failure or an
OOM kill would, and checks what it left behind and that the next deploy or rollback is sound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fixture_run import cli_roots

from mnist_ct.artifacts import sha256_file
from mnist_ct.deploy.__main__ import main
from mnist_ct.deploy.archive import inspect_archive
from mnist_ct.deploy.event_log import live_stack, read_events

# Runs deploy with one function wrapped so that the process freezes itself right before it.
CHILD = r"""
import os, signal, sys
from pathlib import Path
import mnist_ct.deploy.step as d  # the step's own name for append_event

point = sys.argv[1]

def freeze():
    os.kill(os.getpid(), signal.SIGSTOP)

real_replace, real_rename, real_append = os.replace, os.rename, d.append_event

def replace(src, dst, *a, **k):
    if point == "live-rename" and Path(dst).name == "mnist.mar":
        freeze()
    return real_replace(src, dst, *a, **k)

def rename(src, dst, *a, **k):
    if point == "history-rename" and Path(dst).parent.name == "history":
        freeze()
    return real_rename(src, dst, *a, **k)

def append_event(root, event):
    if point == "log" and event.get("event") == "deploy":
        freeze()
    return real_append(root, event)

os.replace, os.rename, d.append_event = replace, rename, append_event
# The probe (tested in test_bad_input.py) runs before the deploy volume is touched; skipping it here spares
# each child the import of torch (~10 s on a busy machine) and changes nothing of what happens after it.
from mnist_ct.deploy.probe import ProbeResult
d.probe = lambda candidate: ProbeResult(0, 0, 0, "not probed")
from mnist_ct.deploy.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def frozen_deploy(point: str, args: list[str]) -> subprocess.Popen:
    """Start deploy in a child and wait until it has stopped itself at `point`."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, point, *args], stderr=subprocess.PIPE)
    _, status = os.waitpid(child.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), (
        f"deploy did not reach {point}: {child.stderr.read().decode() if child.stderr else ''}"
    )
    return child


def kill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    os.kill(child.pid, signal.SIGCONT)
    assert child.wait(timeout=30) == -signal.SIGKILL


def live(deploy_root: Path) -> Path:
    return deploy_root / "model-store" / "mnist.mar"


def test_sigkill_before_the_live_rename_leaves_the_previous_archive_live_and_intact(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    before = sha256_file(live(deploy_root))
    child = frozen_deploy("live-rename", cli_roots(runs["good"], deploy_root))
    # Frozen with the new archive fully written to a hidden sibling: the live one is untouched.
    temps = [p for p in live(deploy_root).parent.iterdir() if p.name.startswith(".mnist.mar.tmp-")]
    assert len(temps) == 1 and temps[0].stat().st_size > 0
    assert sha256_file(live(deploy_root)) == before
    kill(child)
    assert sha256_file(live(deploy_root)) == before
    assert inspect_archive(live(deploy_root)).version == "worse"
    with zipfile.ZipFile(live(deploy_root)) as z:
        assert z.testzip() is None
    assert [e["version"] for e in read_events(deploy_root)] == ["worse"]
    # The next deploy cleans up the leftover and goes through.
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert inspect_archive(live(deploy_root)).version == "good"
    assert not [p for p in live(deploy_root).parent.iterdir() if p.name.startswith(".")]


def test_sigkill_while_publishing_history_changes_nothing_visible(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    before = sha256_file(live(deploy_root))
    child = frozen_deploy("history-rename", cli_roots(runs["good"], deploy_root))
    kill(child)
    assert sha256_file(live(deploy_root)) == before
    assert not (deploy_root / "history" / "good").exists()  # only a hidden staging folder was left
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert (deploy_root / "history" / "good" / "manifest.json").is_file()
    assert not [p for p in (deploy_root / "history").iterdir() if p.name.startswith(".")]


def test_sigkill_after_the_live_rename_is_recovered_from_the_archive_itself(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    child = frozen_deploy("log", cli_roots(runs["good"], deploy_root))
    kill(child)
    # The new archive is live and complete, but the log never heard of it.
    assert inspect_archive(live(deploy_root)).version == "good"
    assert live_stack(read_events(deploy_root), "mnist") == ["worse"]
    # Rollback first records what is really live, then goes back to the version before it.
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 0
    assert inspect_archive(live(deploy_root)).version == "worse"
    assert [e["event"] for e in read_events(deploy_root)] == ["deploy", "recovered", "rollback"]


@pytest.mark.parametrize("torn", [b'{"event": "deploy", "model": "mni', b"\x00\x00"])
def test_a_torn_log_line_is_skipped_and_the_log_stays_appendable(runs, deploy_root, torn):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    with open(deploy_root / "deployments.jsonl", "ab") as f:
        f.write(torn)  # what a kill in the middle of a write would leave
    assert main(cli_roots(runs["good"], deploy_root)) == 0
    assert [e["version"] for e in read_events(deploy_root)] == ["worse", "good"]
    assert main(["--rollback", "--deploy-root", str(deploy_root), "--quiet"]) == 0
    assert inspect_archive(live(deploy_root)).version == "worse"


def test_sigterm_while_publishing_history_exits_143_and_removes_the_staging(runs, deploy_root):
    assert main(cli_roots(runs["worse"], deploy_root)) == 0
    before = sha256_file(live(deploy_root))
    child = frozen_deploy("history-rename", cli_roots(runs["good"], deploy_root))
    assert [p for p in (deploy_root / "history").iterdir() if p.name.startswith(".good.staging-")]
    os.kill(child.pid, signal.SIGTERM)  # as a pod being stopped; it runs once the child continues
    os.kill(child.pid, signal.SIGCONT)
    assert child.wait(timeout=60) == 143
    err = child.stderr.read().decode().strip().splitlines() if child.stderr else []
    assert len(err) == 1 and "terminated (SIGTERM)" in err[0], err
    assert sha256_file(live(deploy_root)) == before
    assert sorted(p.name for p in (deploy_root / "history").iterdir()) == ["worse"]  # no staging, no new entry
    assert [e["version"] for e in read_events(deploy_root)] == ["worse"]
