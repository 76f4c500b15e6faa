"""`mnist-ct run-local` end to end with the real step packages on mnist-5k (small: --limit-per-class).

Needs every step installed beside orchestration (as in `nox -s pipeline`'s venv), or else each step's
own venv under .nox/packages/<step> (what `nox -s tests` builds before orchestration's tests; another
folder: MNIST_CT_STEP_VENVS), run with `run-local --venvs`. Where neither is there these tests skip,
unless MNIST_CT_REQUIRE_STEPS=1 makes that a failure.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from mnist_ct.orchestration.__main__ import main
from mnist_ct.orchestration.lock import STEPS
from mnist_ct.orchestration.runner import text_value

MISSING = [s for s in STEPS if importlib.util.find_spec(f"mnist_ct.{s}") is None]
# Else each step in its own venv, as `nox -s tests` leaves them (orchestration's tests run last).
VENVS = Path(os.environ.get("MNIST_CT_STEP_VENVS", Path(__file__).resolve().parents[2] / ".nox" / "packages"))
HAVE_VENVS = all((VENVS / s / "bin" / "python").is_file() for s in STEPS)
RUNNER = [] if not MISSING else ["--venvs", str(VENVS)] if HAVE_VENVS else None
if RUNNER is None and os.environ.get("MNIST_CT_REQUIRE_STEPS") == "1":
    raise RuntimeError(f"MNIST_CT_REQUIRE_STEPS=1 but step packages are not installed: {', '.join(MISSING)}")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        RUNNER is None, reason=f"steps not installed here ({', '.join(MISSING)}) nor step venvs under {VENVS}"
    ),
]


def run_local(workdir, run_id, *options):
    return main(["run-local", "--workdir", str(workdir), "--run-id", run_id, *(RUNNER or []), *options])


def tasks(workdir, run_id):
    saved = json.loads((workdir / "kfp" / run_id / "run.json").read_text())
    return {t["task"].rsplit("/", 1)[-1]: t for t in saved["tasks"]}


def test_the_pipeline_runs_end_to_end_and_deploys_above_the_baseline(tmp_path, capsys):
    assert run_local(tmp_path, "above", "--epochs", "3", "--limit-per-class", "100", "--baseline", "0.8") == 0
    out = capsys.readouterr().out
    done = tasks(tmp_path, "above")
    assert [t for t, r in done.items() if r["status"] != "succeeded"] == []
    accuracy = done["analysis"]["outputs"]["accuracy"]
    assert 0.8 < accuracy <= 1.0
    metrics = json.loads((tmp_path / "model" / "runs" / "above" / "analysis" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(accuracy)
    report = tmp_path / "model" / "runs" / "above" / "analysis" / "report.html"
    mar = tmp_path / "deploy-model" / "model-store" / "mnist.mar"
    assert report.is_file() and mar.is_file() and mar.stat().st_size > 10_000
    assert f"report: {report}\n" in out
    assert f"model archive: {mar}\n" in out
    assert "deploy: ran\n" in out
    assert f"accuracy: {accuracy:.4f} (baseline 0.8)" in out


def test_deploy_is_skipped_when_accuracy_is_not_above_the_baseline(tmp_path, capsys):
    assert run_local(tmp_path, "below", "--epochs", "1", "--limit-per-class", "30", "--baseline", "1.01") == 0
    out = capsys.readouterr().out
    done = tasks(tmp_path, "below")
    assert done["analysis"]["status"] == "succeeded"
    assert done["deploy"]["status"] == "skipped"
    accuracy = done["analysis"]["outputs"]["accuracy"]
    shown = f"analysis.accuracy = {text_value(accuracy)}, baseline = 1.01"
    assert f"condition accuracy-above-baseline: false ({shown})\n" in out
    assert f"deploy: skipped (condition accuracy-above-baseline is false ({shown}))\n" in out
    assert not (tmp_path / "deploy-model" / "model-store" / "mnist.mar").exists()
    assert accuracy <= 1.0


def test_a_failing_step_stops_the_run_with_its_error_and_exit_code(tmp_path, capsys):
    # One image per class leaves preprocess an empty test split: a real usage error (exit 2).
    assert run_local(tmp_path, "failing", "--limit-per-class", "1") == 2
    out, err = capsys.readouterr()
    assert err.startswith("mnist-ct run-local: error: step preprocess failed (exit code 2): preprocess: error: ")
    assert "FAIL preprocess" in out
    assert list(tasks(tmp_path, "failing")) == ["preprocess"]
    assert not (tmp_path / "model" / "runs" / "failing").exists()
