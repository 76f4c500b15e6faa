"""The CI files: GitHub workflows against GitHub's schema, every Dockerfile through hadolint, .ci/run.

What the workflows do is not checked here by their text: test_workflows.py runs every job as written.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import REPO

from tools import delivery

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
DOCKERFILES = sorted(REPO.glob("steps/*/Dockerfile")) + [REPO / "tools" / "step.Dockerfile"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (nox -s tooling installs it)")
    return path


def test_there_are_workflows_for_pull_requests_and_main():
    names = {w.name for w in WORKFLOWS}
    assert {"pr.yml", "main.yml"} <= names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_githubs_schema(workflow):
    done = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_schema_check_really_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    steps = "    steps:\n      - uses: 42\n        run: both\n"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n" + steps)
    done = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(broken)])
    assert done.returncode != 0


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(dockerfile):
    done = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_really_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    assert subprocess.run([tool("hadolint"), str(bad)], capture_output=True).returncode != 0


@pytest.mark.parametrize("dockerfile", sorted(REPO.glob("steps/*/Dockerfile")), ids=lambda p: p.parent.name)
def test_step_dockerfile_keeps_the_build_contract(dockerfile):
    """What the tooling relies on: base and epoch args, deps/ before local/, no network, non-root, module."""
    text = dockerfile.read_text()
    assert re.search(r"(?m)^ARG BASE_IMAGE=\S+", text) and "FROM ${BASE_IMAGE}" in text
    assert re.search(r"(?m)^ARG SOURCE_DATE_EPOCH", text)
    deps, local = text.find("source=deps"), text.find("source=local")
    assert 0 < deps < local, "deps/ must be installed before local/ (a code-only change rebuilds one thin layer)"
    assert text.count("--no-index") >= 2
    assert re.search(r"(?m)^USER (?!0\b|root\b)\S+", text)
    module = dockerfile.parent.name
    assert f'"mnist_ct.{module}"]' in text


@pytest.mark.parametrize("dockerfile", sorted(REPO.glob("steps/*/Dockerfile")), ids=lambda p: p.parent.name)
def test_step_dockerfile_is_the_template_rendered_for_its_step(dockerfile):
    assert dockerfile.read_text() == delivery.render_dockerfile(dockerfile.parent.name), (
        f"{dockerfile.relative_to(REPO)} differs from tools/step.Dockerfile rendered for its step: "
        "edit the template, then run `python -m tools.delivery dockerfiles`"
    )


def test_dockerfiles_command_rewrites_stale_and_missing_dockerfiles(repo):
    tiny, other = (repo.root / "steps" / name / "Dockerfile" for name in ("tiny", "other"))
    tiny.write_text(tiny.read_text().replace("# The image", "# An edited image"))
    assert not other.exists()
    assert delivery.write_dockerfiles(repo.root, check=True) == [other, tiny]
    assert delivery.write_dockerfiles(repo.root) == [other, tiny]
    assert tiny.read_text() == delivery.render_dockerfile("tiny") and other.read_text() == delivery.render_dockerfile(
        "other"
    )
    assert delivery.write_dockerfiles(repo.root, check=True) == []


def test_ci_run_is_valid_bash_and_installs_the_image_tools():
    text = (REPO / ".ci" / "run").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / ".ci" / "run")]).returncode == 0
    for package in ("buildah", "skopeo", "debootstrap", "docker-registry"):
        assert package in text
    assert "nox -s" in text and "tooling" in text
    assert re.search(r"pip install .*-c constraints.txt .*\buv\b", text), "CI installs uv: nox makes venvs with it"
