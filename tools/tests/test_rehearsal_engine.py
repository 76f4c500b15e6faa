"""The workflow rehearsal's engine (rehearsal.py): expressions, conditions, triggers, and a small job run for real."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import REPO
from rehearsal import Context, RehearsalError, Runner, condition, evaluate, load_workflow, substitute, triggered

WORKFLOWS = REPO / ".github" / "workflows"


@pytest.fixture
def context() -> Context:
    github = {"ref": "refs/tags/v0.3.0", "actor": "octo", "event_name": "push"}
    return Context(github, secrets={"TOKEN": "s3cret"}, vars={"KFP_HOST": "http://kfp", "EMPTY": ""})


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("github.ref == 'refs/heads/main'", False),
        ("github.ref != 'refs/heads/main'", True),
        ("github.ref == 'REFS/TAGS/V0.3.0'", True),  # GitHub compares strings ignoring case
        ("startsWith(github.ref, 'refs/tags/v')", True),
        ("vars.KFP_HOST != '' && vars.EMPTY == ''", True),
        ("vars.EMPTY != '' || 'fallback'", "fallback"),
        ("!(always() && github.actor == 'octo')", False),
        ("'it''s'", "it's"),
    ],
)
def test_expressions_evaluate_as_github_does(context, expression, value):
    assert evaluate(expression, context) == value


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("github.event.pull_request.number", "not in the rehearsal's context"),
        ("secrets.MISSING", "not in the rehearsal's context"),
        ("matrix.python", "unknown context"),
        ("env.HOME", "not in the rehearsal's context"),  # the env context holds the env: keys only
        ("hashFiles('x')", "unknown function"),
        ("github.ref > 'a'", "unknown syntax"),
        ("startsWith(github.ref)", "takes other arguments"),
        ("(always()", r"expected \)"),
    ],
)
def test_an_expression_the_rehearsal_cannot_evaluate_fails(context, expression, why):
    with pytest.raises(RehearsalError, match=why):
        evaluate(expression, context)


def test_substitution_renders_values_into_scripts(context):
    script = "echo \"${{ secrets.TOKEN }}\" ${{ github.ref == 'x' }} ${{ vars.EMPTY }}."
    assert substitute(script, context) == 'echo "s3cret" false .'


def test_a_step_condition_means_success_unless_it_names_a_status_function(context):
    assert condition(None, context) and condition("vars.KFP_HOST != ''", context)
    context.failed = True
    assert not condition(None, context) and not condition("vars.KFP_HOST != ''", context)
    assert condition("always()", context) and condition("${{ failure() }}", context)


def test_triggers_follow_the_push_filters():
    main, pr = load_workflow(WORKFLOWS / "main.yml"), load_workflow(WORKFLOWS / "pr.yml")
    assert triggered(main, "push", "refs/heads/main") and triggered(main, "push", "refs/tags/v1.2.3")
    assert not triggered(main, "push", "refs/heads/feature") and not triggered(
        main, "pull_request", "refs/pull/1/merge"
    )
    assert triggered(pr, "pull_request", "refs/pull/1/merge") and not triggered(pr, "push", "refs/heads/main")


TOY = """\
on: push
env:
  LEVEL: workflow
  HOST: ghcr.io/owner
jobs:
  toy:
    runs-on: ubuntu-24.04
    env:
      LEVEL: job
    steps:
      - uses: actions/checkout@v4
      - name: env layers, the host stand-in, working-directory
        working-directory: sub
        env:
          STEP: ${{ github.actor }}-${{ env.LEVEL }}
        run: echo "$LEVEL $STEP $HOST $GITHUB_REF_NAME $(pwd)" > ../seen.txt
      - name: fails
        run: |
          false
          echo never
      - name: skipped after a failure
        run: touch skipped.txt
      - name: runs after a failure
        if: always()
        run: touch always.txt
"""


def toy_runner(tmp_path: Path, workflow: str) -> tuple[Runner, Path]:
    work, origin = tmp_path / "src", tmp_path / "origin.git"
    (work / "sub").mkdir(parents=True)
    (work / "sub" / "keep").write_text("")
    (work / ".github" / "workflows").mkdir(parents=True)
    (work / ".github" / "workflows" / "toy.yml").write_text(workflow)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "toy"]):
        subprocess.run(["git", *argv], cwd=work, check=True, env={"PATH": "/usr/bin:/bin", **env})
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(origin)], check=True)
    runner = Runner(tmp_path / "home", origin, secrets={}, vars={}, registry_host="127.0.0.1:5999")
    return runner, work / ".github" / "workflows" / "toy.yml"


def test_a_job_runs_its_steps_in_order_with_envs_and_stops_at_a_failure_but_for_always(tmp_path):
    runner, workflow = toy_runner(tmp_path, TOY)
    job = runner.run_job(workflow, "toy", ref="refs/heads/main", event="push")
    assert [s.outcome for s in job.steps] == ["success", "success", "failure", "skipped", "success"]
    assert not job.ok
    seen = (job.workspace / "seen.txt").read_text().split()
    assert seen == ["job", "rehearsal-job", "127.0.0.1:5999/owner", "main", str(job.workspace / "sub")]
    assert (job.workspace / "always.txt").exists() and not (job.workspace / "skipped.txt").exists()
    assert subprocess.run(["git", "branch", "--show-current"], cwd=job.workspace, capture_output=True,
                          text=True).stdout.strip() == "main"  # fmt: skip


def test_an_action_without_a_local_equivalent_fails_the_rehearsal(tmp_path):
    runner, workflow = toy_runner(tmp_path, TOY.replace("actions/checkout@v4", "docker/login-action@v3"))
    with pytest.raises(RehearsalError, match="docker/login-action@v3 has no local equivalent"):
        runner.run_job(workflow, "toy", ref="refs/heads/main", event="push")


def test_the_gh_recorder_refuses_a_release_of_a_file_that_does_not_exist(tmp_path):
    gh = textwrap.dedent("""\
        on: push
        jobs:
          toy:
            runs-on: ubuntu-24.04
            steps:
              - uses: actions/checkout@v4
              - env:
                  GH_TOKEN: t
                run: gh release create v1 sub/keep --title T --notes "n"
              - env:
                  GH_TOKEN: t
                run: gh release create v1 sub/keep missing.yaml --title T
        """)
    runner, workflow = toy_runner(tmp_path, gh)
    job = runner.run_job(workflow, "toy", ref="refs/heads/main", event="push")
    assert [s.outcome for s in job.steps] == ["success", "success", "failure"]
    assert "no such file: missing.yaml" in job.steps[2].tail()
    assert [c["argv"][3:4] for c in runner.gh_calls()] == [["sub/keep"], ["sub/keep"]]
