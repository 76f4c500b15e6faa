"""The pipeline's step table (pipeline.py STEPS) is the one list of steps: the lock's step entries and the
repo's step folders are those steps; orchestration/README.md's table of resources and retries is it; a
parameter default that a step option also has is the step's own."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ROOT, needs_real_steps, step_python

from mnist_ct.orchestration.engine import LocalRun
from mnist_ct.orchestration.executors import ProcessExecutor
from mnist_ct.orchestration.lock import LOCK_PATH, read_lock
from mnist_ct.orchestration.parameters import text_value
from mnist_ct.orchestration.pipeline import ALL_PER_CLASS, ORDER, STEPS, Step
from mnist_ct.orchestration.spec import INPUT_PARAMETER, load

# Pipeline defaults that differ from the step's on purpose: a KFP parameter cannot be absent, so
# `limit_per_class` defaults to a cap above every class count where preprocess's default is "no cap".
DIFFERENT_ON_PURPOSE = {("preprocess", "--limit-per-class"): (ALL_PER_CLASS, None)}

STEP_DEFAULTS = """if True:
    import json, sys
    from mnist_ct.{step}.__main__ import build_parser
    print(json.dumps({{o: a.default for a in build_parser()._actions for o in a.option_strings
                      if a.default is None or isinstance(a.default, (bool, int, float, str))}}))
"""


def test_the_lock_pins_exactly_the_pipelines_steps():
    lock = read_lock(LOCK_PATH)
    assert sorted(name for name, entry in lock.packages.items() if entry.image is not None) == sorted(STEPS)
    folders = sorted(p.parent.name for p in ROOT.glob("steps/*/pyproject.toml"))
    assert folders == sorted(STEPS)
    assert list(STEPS) == list(ORDER) and all(step.name == name for name, step in STEPS.items())


def readme_row(step: Step) -> list[str]:
    """The README table's cells for a step as STEPS has it: volumes, CPU, memory, retries, output artifacts."""
    return [
        ", ".join(v.pvc for v in step.volumes),
        " / ".join(step.cpu),
        " / ".join(step.memory),
        str(step.retries),
        ", ".join(f"`{name}` ({kind.schema_title})" for name, kind in step.outputs),
    ]


def test_the_readme_table_of_resources_and_retries_is_the_step_table():
    readme = (ROOT / "orchestration" / "README.md").read_text().splitlines()
    header = next(i for i, line in enumerate(readme) if line.startswith("| step | volumes | CPU req / limit |"))
    rows = []
    for line in readme[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert [row[0].split()[0] for row in rows] == list(ORDER)
    for row, step in zip(rows, ORDER, strict=True):
        assert row[1:6] == readme_row(STEPS[step]), (
            f"README row of {step}; STEPS has | {' | '.join(readme_row(STEPS[step]))} |"
        )


def parameter_options(dev_yaml) -> dict[tuple[str, str], str]:
    """(step, option) -> the pipeline parameter's default as the step receives it, for every option whose
    value is a pipeline parameter (resolved from the compiled YAML with the engine, no argument given)."""
    compiled = load(dev_yaml)
    run = LocalRun(compiled, dev_yaml.parent, ProcessExecutor(), {}, "r")
    planned = {t.command[2].removeprefix("mnist_ct."): t for t in run.planned()}
    found: dict[tuple[str, str], str] = {}
    for executor in compiled.executors.values():
        container = executor["container"]
        step = container["command"][2].removeprefix("mnist_ct.")
        args = container["args"]
        for option, value in zip(args, args[1:], strict=False):
            match = INPUT_PARAMETER.match(value)
            if option.startswith("--") and match and match.group(1) != "run_id":
                resolved = planned[step].args
                found[(step, option)] = resolved[resolved.index(option) + 1]
    return found


def test_every_parameter_reaches_a_step_option(dev_yaml):
    options = parameter_options(dev_yaml)
    assert sorted(options) == [
        ("analysis", "--baseline"), ("analysis", "--k"), ("analysis", "--min-improvement"),
        ("analysis", "--model-name"), ("deploy", "--model-name"), ("embedding", "--model-name"),
        ("preprocess", "--dataset"), ("preprocess", "--limit-per-class"), ("preprocess", "--model-name"),
        ("preprocess", "--only-if-changed"), ("preprocess", "--seed"), ("train_faiss", "--index"),
        ("train_model", "--epochs"), ("train_model", "--seed"), ("validate", "--model-name"),
    ]  # fmt: skip
    assert options[("train_model", "--epochs")] == "12"
    assert options[("preprocess", "--only-if-changed")] == "true"  # a bool parameter, as KFP writes it
    assert options[("analysis", "--min-improvement")] == "0"


@needs_real_steps
@pytest.mark.parametrize("step", sorted(set(ORDER)))
def test_parameter_defaults_are_the_steps_own_defaults(dev_yaml, step):
    done = subprocess.run([step_python(step), "-c", STEP_DEFAULTS.format(step=step)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    own = json.loads(done.stdout.strip().splitlines()[-1])
    for (owner, option), value in parameter_options(dev_yaml).items():
        if owner != step:
            continue
        if (owner, option) in DIFFERENT_ON_PURPOSE:
            assert (int(value), own[option]) == DIFFERENT_ON_PURPOSE[(owner, option)]
        else:
            assert value == text_value(own[option]), (
                f"{step} {option}: pipeline default {value}, step default {own[option]}"
            )
