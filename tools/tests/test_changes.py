"""Change detection and version discipline on temporary git repos (tools/monorepo.py, tools/delivery.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO, FixtureRepo

from tools import monorepo


def changed(repo: FixtureRepo, since: str | None = None) -> dict[str, str]:
    plan = monorepo.plan(repo.root, since)
    return {n: c.reason for n, c in plan.changes.items() if c.changed}


def test_discovery_reads_versions_kinds_and_the_dependency_graph(repo):
    packages = monorepo.discover(repo.root)
    assert sorted(packages) == ["other", "tiny", "tinylib"]
    assert packages["tiny"].kind == "step" and packages["tinylib"].kind == "lib"
    assert [p.name for p in monorepo.local_closure(packages["tiny"], packages)] == ["tinylib", "tiny"]
    assert monorepo.dependents("tinylib", packages) == ["tiny"]
    assert monorepo.third_party_requirements(packages["tiny"], packages) == ["numpy"]


def test_never_built_packages_are_changed_and_need_no_bump(repo):
    assert set(changed(repo)) == {"tinylib", "tiny", "other"}
    assert monorepo.version_errors(repo.root, monorepo.plan(repo.root)) == []


def test_nothing_changed_after_recording_the_hashes(repo):
    repo.record_all()
    plan = monorepo.plan(repo.root)
    assert plan.changed() == [] and plan.deleted() == []
    assert all(c.reason.startswith("inputs match the lock") for c in plan.changes.values())


def test_one_step_file_changed_marks_only_that_step(repo):
    repo.record_all()
    repo.write("steps/other/src/mnist_ct/other/__init__.py", "VALUE = 2\n")
    assert list(changed(repo)) == ["other"]
    assert "its files" in changed(repo)["other"]


def test_a_lib_change_marks_every_dependent(repo):
    repo.record_all()
    repo.write("libs/tinylib/src/mnist_ct/tinylib/__init__.py", 'def greeting(who):\n    return f"hi {who}"\n')
    reasons = changed(repo)
    assert sorted(reasons) == ["tiny", "tinylib"]
    assert reasons["tiny"].startswith("depends on changed tinylib")


def test_constraints_change_marks_every_package(repo):
    repo.record_all()
    repo.write("constraints.txt", (repo.root / "constraints.txt").read_text() + "six==1.17.0\n")
    assert sorted(changed(repo)) == ["other", "tiny", "tinylib"]


def test_readme_and_changelog_only_changes_change_nothing(repo):
    repo.record_all()
    repo.write("steps/tiny/README.md", "# tiny\n\nMore words.\n")
    repo.write("steps/tiny/CHANGELOG.md", "## 0.1.0 - first release\nmore\n")
    repo.write("libs/tinylib/docs/notes.txt", "documentation folder\n")
    assert changed(repo) == {}
    repo.commit("docs")
    assert changed(repo, "HEAD~1") == {}


def test_a_new_step_is_changed_and_new(repo):
    repo.record_all()
    repo.add_step("fresh", deps=())
    reasons = changed(repo)
    assert list(reasons) == ["fresh"] and reasons["fresh"].startswith("new")
    assert monorepo.version_errors(repo.root, monorepo.plan(repo.root)) == []


def test_a_deleted_step_is_reported(repo):
    repo.record_all()
    subprocess.run(["git", "rm", "-rq", "steps/other"], cwd=repo.root, check=True)
    plan = monorepo.plan(repo.root)
    assert plan.deleted() == ["other"] and plan.changed() == []
    assert plan.changes["other"].changed and plan.changes["other"].reason.startswith("deleted")
    repo.commit("delete other")
    since = monorepo.plan(repo.root, "HEAD~1")
    assert since.deleted() == ["other"]


def test_uncommitted_and_untracked_changes_count_but_ignored_files_do_not(repo):
    repo.record_all()
    repo.write("steps/other/src/mnist_ct/other/__pycache__/x.pyc", "ignored by .gitignore")
    repo.write("steps/other/run.log", "ignored by .gitignore")
    assert changed(repo) == {}
    repo.write("steps/other/src/mnist_ct/other/extra.py", "X = 1\n")  # untracked, not ignored
    assert list(changed(repo)) == ["other"]
    assert list(changed(repo, "HEAD")) == ["other"]


def test_since_ref_selects_by_git_diff_and_propagates_lib_changes(repo):
    repo.write("libs/tinylib/src/mnist_ct/tinylib/__init__.py", 'def greeting(who):\n    return f"hi {who}"\n')
    repo.commit("lib change")
    plan = monorepo.plan(repo.root, "HEAD~1")
    assert plan.mode == "since HEAD~1"
    assert plan.changed() == ["tinylib", "tiny"]
    assert plan.changes["tinylib"].reason == "libs/tinylib/src/mnist_ct/tinylib/__init__.py differs from HEAD~1"
    assert plan.changes["tiny"].reason == "depends on changed tinylib"
    assert not plan.changes["other"].changed
    assert [e.split(" ", 1)[0] for e in monorepo.version_errors(repo.root, plan)] == ["tinylib", "tiny"]
    repo.set_version("tinylib", "0.2.0")
    repo.set_version("tiny", "0.2.0")
    assert monorepo.version_errors(repo.root, monorepo.plan(repo.root, "HEAD~1")) == []
    repo.commit("bumps")
    assert monorepo.plan(repo.root, "HEAD").changed() == []


def test_since_an_unknown_ref_is_one_clear_error(repo):
    with pytest.raises(monorepo.MonorepoError, match="no-such-ref"):
        monorepo.plan(repo.root, "no-such-ref")


def test_a_changed_step_that_keeps_its_version_is_an_error_naming_the_file(repo):
    repo.record_all()
    repo.write("steps/other/src/mnist_ct/other/__init__.py", "VALUE = 2\n")
    errors = monorepo.version_errors(repo.root, monorepo.plan(repo.root))
    assert len(errors) == 1
    assert errors[0].startswith("other changed") and "steps/other/pyproject.toml" in errors[0]
    repo.set_version("other", "0.1.1")
    assert monorepo.version_errors(repo.root, monorepo.plan(repo.root)) == []


def test_version_check_against_a_ref(repo):
    repo.write("steps/other/src/mnist_ct/other/__init__.py", "VALUE = 2\n")
    repo.commit("change without bump")
    errors = monorepo.version_errors(repo.root, monorepo.plan(repo.root, "HEAD~1"))
    assert len(errors) == 1 and "kept version 0.1.0 of HEAD~1" in errors[0]


def test_a_lib_change_requires_bumping_its_dependents_too(repo):
    repo.record_all()
    repo.write("libs/tinylib/src/mnist_ct/tinylib/__init__.py", 'def greeting(who):\n    return f"hi {who}"\n')
    repo.set_version("tinylib", "0.2.0")
    errors = monorepo.version_errors(repo.root, monorepo.plan(repo.root))
    assert [e.split(" ", 1)[0] for e in errors] == ["tiny"]


def test_input_hash_covers_the_executable_bit(repo):
    packages = monorepo.discover(repo.root)
    before = monorepo.input_hash(repo.root, packages["other"], packages)
    (repo.root / "steps/other/src/mnist_ct/other/__init__.py").chmod(0o755)
    assert monorepo.input_hash(repo.root, packages["other"], packages) != before


def test_the_lock_file_is_not_an_input_of_orchestration(repo):
    repo.write("orchestration/pyproject.toml", '[project]\nname = "mnist-ct-orchestration"\nversion = "0.1.0"\n')
    repo.record_all()
    lock = repo.lock_path.read_text()
    repo.lock_path.write_text(lock.replace('"ghcr.io/mnist-ct-test"', '"ghcr.io/elsewhere"'))
    assert changed(repo) == {}


def run_cli(repo: FixtureRepo, *args: str) -> subprocess.CompletedProcess:
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from tools import delivery; delivery.ROOT = __import__('pathlib').Path({str(repo.root)!r}); raise SystemExit(delivery.main(sys.argv[1:]))"  # noqa: E501
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=repo.root)


def test_changed_json_is_one_line_with_every_package(repo):
    repo.record_all()
    repo.write("steps/other/src/mnist_ct/other/__init__.py", "VALUE = 2\n")
    repo.set_version("other", "0.2.0")
    done = run_cli(repo, "changed", "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert set(doc) == {"tinylib", "tiny", "other"}
    assert doc["other"]["changed"] is True and doc["tiny"] == {"changed": False, "reason": doc["tiny"]["reason"]}
    assert all(set(v) == {"changed", "reason"} and isinstance(v["reason"], str) for v in doc.values())


def test_changed_exits_1_when_a_version_was_not_bumped(repo):
    repo.record_all()
    repo.write("steps/other/src/mnist_ct/other/__init__.py", "VALUE = 2\n")
    done = run_cli(repo, "changed")
    assert done.returncode == 1
    assert re.search(r"(?m)^  other +CHANGED +its files", done.stdout)
    assert "bump [project] version in steps/other/pyproject.toml" in done.stderr


def test_build_changed_with_nothing_changed_decides_quickly(repo):
    repo.record_all()
    started = time.monotonic()
    # Without --push no registry is asked; with it, see test_registry_check.py (a real local registry).
    done = run_cli(repo, "build-changed")
    assert done.returncode == 0, done.stderr
    assert "nothing to build" in done.stdout
    assert time.monotonic() - started < 10


def test_a_malformed_lock_is_one_clear_error(repo):
    repo.lock_path.write_text("{not json")
    with pytest.raises(monorepo.MonorepoError, match="malformed image lock"):
        monorepo.plan(repo.root)
