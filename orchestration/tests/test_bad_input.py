"""Bad input to `mnist-ct run-local`, `compile` and `release`, as a hostile user would give it.

Each test asserts the exit code, exactly one `mnist-ct <command>: error: ...` line on stderr naming what is
wrong (no traceback), and what is left on disk (for run-local: nothing before the checks pass). run-local
runs the fake step packages (fake_steps.py) in process mode; test_run_local.py runs the real ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import release, run_local

from mnist_ct.artifacts.testing import tmpfs_volume
from mnist_ct.orchestration.__main__ import main


def refused(capsys: pytest.CaptureFixture[str], command: str, *fragments: str) -> str:
    """The one stderr line, `mnist-ct <command>: error: ...`, holding every fragment."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mnist-ct {command}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def made(root: Path) -> list[str]:
    """Everything under `root`, relative."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# -- run-local: the run id and the work dir ------------------------------------------------------------


@pytest.mark.parametrize("run_id", ["/abs/path", "../up", "a/b", "run\n", "", ".hidden", "x" * 129, "a..b", "ü"])
def test_bad_input_run_local_run_id_is_refused_before_anything_is_written(fake_steps, tmp_path, capsys, run_id):
    assert run_local(tmp_path / "work", run_id=run_id) == 2
    refused(capsys, "run-local", "invalid run id", "use 1-128 letters, digits")
    assert made(tmp_path) == []
    assert not Path("/abs").exists()


def test_bad_input_run_local_workdir_that_is_a_file(fake_steps, tmp_path, capsys):
    (tmp_path / "work").write_text("a file")
    assert run_local(tmp_path / "work") == 2
    refused(capsys, "run-local", f"--workdir {tmp_path / 'work'}: is a file, not a folder")
    assert (tmp_path / "work").read_text() == "a file"


@pytest.mark.parametrize("inside", ["data/runs/r0", "model/runs/r0/model", "deploy-model/runs/x"])
def test_bad_input_run_local_workdir_inside_a_run_folder_of_a_volume(fake_steps, tmp_path, capsys, inside):
    workdir = tmp_path / "volumes" / inside
    assert run_local(workdir) == 2
    refused(capsys, "run-local", f"--workdir {workdir}: lies in the run folder", "/runs/", "outside every volume")
    assert made(tmp_path) == []


@pytest.mark.parametrize("inside", ["model", "data/scratch", "kfp/r0"])
def test_bad_input_run_local_workdir_inside_another_work_dirs_folders(fake_steps, tmp_path, capsys, inside):
    (tmp_path / "other" / "kfp").mkdir(parents=True)
    before = made(tmp_path)
    assert run_local(tmp_path / "other" / inside) == 2
    folder = inside.split("/")[0]
    refused(capsys, "run-local", f"lies in {tmp_path / 'other' / folder}, the {folder} folder of the work dir")
    assert made(tmp_path) == before


@pytest.mark.parametrize("link", ["model", "kfp", "kfp/r1"])
def test_bad_input_run_local_volume_folder_that_is_a_symlink_out_of_the_workdir(fake_steps, tmp_path, capsys, link):
    outside, workdir = tmp_path / "outside", tmp_path / "work"
    outside.mkdir()
    (workdir / link).parent.mkdir(parents=True, exist_ok=True)
    (workdir / link).symlink_to(outside)
    assert run_local(workdir) == 3
    refused(capsys, "run-local", f"{workdir / link}: leads out of its volume {workdir}", "through a symlink")
    assert made(outside) == []


# -- run-local: parameters and the steps' options -------------------------------------------------------


def test_bad_input_run_local_unknown_parameter_lists_the_known_ones(fake_steps, tmp_path, capsys):
    assert run_local(tmp_path / "work", "-p", "learning_rate=0.1") == 3
    refused(
        capsys,
        "run-local",
        "unknown pipeline parameter(s) learning_rate; the pipeline takes baseline, dataset, epochs, index, k, "
        "limit_per_class, min_improvement, model_name, only_if_changed, seed",
    )
    assert made(tmp_path) == []


@pytest.mark.parametrize(
    ("option", "value", "kind"),
    [
        ("--epochs", "two", "NUMBER_INTEGER"),
        ("--epochs", "1.5", "NUMBER_INTEGER"),
        ("--seed", "", "NUMBER_INTEGER"),
        ("--limit-per-class", "1e9999", "NUMBER_INTEGER"),
        ("--baseline", "nan", "NUMBER_DOUBLE"),
        ("--baseline", "inf", "NUMBER_DOUBLE"),
        ("--baseline", "high", "NUMBER_DOUBLE"),
    ],
)
def test_bad_input_run_local_parameter_of_the_wrong_type(fake_steps, tmp_path, capsys, option, value, kind):
    assert run_local(tmp_path / "work", option, value) == 3
    name = option.removeprefix("--").replace("-", "_")
    refused(capsys, "run-local", f"pipeline parameter {name}: {value!r} is not a valid {kind}")
    assert made(tmp_path) == []


def test_bad_input_run_local_parameter_given_twice(fake_steps, tmp_path, capsys):
    assert run_local(tmp_path / "work", "-p", "epochs=3", "--epochs", "4") == 2
    refused(capsys, "run-local", "pipeline parameter epochs is given twice ('3' and '4'): give it once")
    assert made(tmp_path) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--epochs", "-1"], "step train-model: argument --epochs: must be from 1 to 10000, got -1"),
        (["--epochs", "100000"], "step train-model: argument --epochs: must be from 1 to 10000, got 100000"),
        (["--limit-per-class", "0"], "step preprocess: argument --limit-per-class: must be at least 1, got 0"),
        (["--dataset", "cifar"], "step preprocess: argument --dataset: invalid choice: 'cifar'"),
        (["-p", "k=0"], "step analysis: argument --k: must be from 1 to 1000, got 0"),
        (["--index", "HNSW0"], "step train-faiss: --index 'HNSW0': not a FAISS index factory string"),
    ],
)
def test_bad_input_run_local_step_option_is_refused_before_any_step_runs(
    fake_steps, tmp_path, capsys, options, message
):
    assert run_local(tmp_path / "work", *options) == 2
    refused(capsys, "run-local", f"{message}", "(nothing was run)")
    assert made(tmp_path) == []


def test_bad_input_run_local_several_steps_refusing_are_all_listed(fake_steps, tmp_path, capsys):
    assert run_local(tmp_path / "work", "--seed", "-1") == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "mnist-ct run-local: error: 2 steps refuse their options (nothing was run)",
        "  - step preprocess: argument --seed: must be from 0 to 4294967295, got -1",
        "  - step train-model: argument --seed: must be from 0 to 4294967295, got -1",
    ]


def test_bad_input_run_local_steps_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert run_local(tmp_path / "work") == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "mnist-ct run-local: error: cannot check the options of 7 step(s); install every step beside orchestration "
        "(`nox -s pipeline` builds that venv), or pass --venvs DIR"
    )
    assert err[1].startswith("  - preprocess: cannot import mnist_ct.preprocess.__main__ (ModuleNotFoundError")
    assert made(tmp_path) == []


def test_bad_input_run_local_venvs_folder_without_the_steps(fake_steps, tmp_path, capsys):
    assert run_local(tmp_path / "work", "--venvs", str(tmp_path / "venvs")) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith(
        "--venvs DIR needs DIR/<step>/bin/python with the step installed (`nox -s tests` builds .nox/packages)"
    )
    assert err[1] == f"  - preprocess: no Python {tmp_path / 'venvs' / 'preprocess' / 'bin' / 'python'}"
    assert made(tmp_path) == []


def test_bad_input_run_local_containers_with_venvs_is_bad_usage(fake_steps, tmp_path, capsys):
    assert run_local(tmp_path / "work", "--containers", "--venvs", str(tmp_path)) == 2
    assert "argument --venvs: not allowed with argument --containers" in capsys.readouterr().err
    assert made(tmp_path) == []


def test_bad_input_run_local_no_container_engine(fake_steps, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("MNIST_CT_ENGINE", raising=False)
    assert run_local(tmp_path / "work", "--containers") == 5
    refused(capsys, "run-local", "container mode: no container engine: install buildah")
    assert made(tmp_path) == []


# -- run-local: the lock and the pipeline file ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "image lock not found"),
        ("{", "malformed image lock (JSONDecodeError"),
        ('{"registry": "r"}', "malformed image lock (KeyError"),
        ('{"registry": "r", "packages": {"deploy": {"version": "1", "image": "x:1"}}}', "must be a repository"),
    ],
)
def test_bad_input_run_local_lock(fake_steps, tmp_path, capsys, content, message):
    lock = tmp_path / "lock.json"
    if content is not None:
        lock.write_text(content)
    assert run_local(tmp_path / "work", "--lock", str(lock)) == 3
    refused(capsys, "run-local", str(lock), message)
    assert not (tmp_path / "work").exists()


def test_bad_input_run_local_lock_that_is_a_folder(fake_steps, tmp_path, capsys):
    assert run_local(tmp_path / "work", "--lock", str(tmp_path)) == 3
    refused(capsys, "run-local", f"{tmp_path}: Is a directory; this is a folder where a file was expected")
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the compiled pipeline"), ("a: [", "not YAML"), ("[1]", "expected a PipelineSpec")],
)
def test_bad_input_run_local_pipeline_file(fake_steps, tmp_path, capsys, content, message):
    pipeline = tmp_path / "p.yaml"
    if content is not None:
        pipeline.write_text(content)
    assert run_local(tmp_path / "work", "--pipeline", str(pipeline)) == 3
    refused(capsys, "run-local", str(pipeline), message)
    assert not (tmp_path / "work").exists()


# -- run-local: the environment ------------------------------------------------------------------------


def test_bad_input_run_local_read_only_workdir(fake_steps, tmp_path, capsys):
    with tmpfs_volume(tmp_path / "ro", read_only=True) as workdir:
        assert run_local(workdir) == 5
        refused(capsys, "run-local", f"{workdir / 'kfp'}", "Read-only file system", "mount it read-write")
        assert made(workdir) == []


def test_bad_input_run_local_full_disk(fake_steps, tmp_path, capsys):
    with tmpfs_volume(tmp_path / "full", 64) as workdir:
        filler = workdir / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        assert run_local(workdir) == 5
        refused(capsys, "run-local", f"{workdir / 'kfp' / 'r1'}", "No space left on device", "the disk is full")
        assert made(workdir) in (["filler"], ["filler", "kfp"])  # no run folder, no partial pipeline.yaml


def test_bad_input_run_local_disk_full_while_a_step_writes(fake_steps, dev_yaml, tmp_path, capsys):
    with tmpfs_volume(tmp_path / "full", 64) as workdir:
        with contextlib.suppress(OSError), open(workdir / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        assert run_local(workdir, "--pipeline", str(dev_yaml)) == 5
        line = refused(capsys, "run-local", "step preprocess failed (exit code 5): preprocess: error: ")
        assert "No space left on device" in line and "the disk is full" in line  # the step's own line
        assert [p.name for p in (workdir / "data" / "runs" / "r1").iterdir()] == []  # no staging left


def test_bad_input_run_local_failing_step_gives_its_exit_code_and_line(fake_steps, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MNIST_CT_FAKE_FAIL", "validate")
    assert run_local(tmp_path / "work") == 3
    refused(
        capsys,
        "run-local",
        "step condition-1/validate failed (exit code 3): validate: error: ",
        "/data/x.npy is broken",
    )
    tasks = json.loads((tmp_path / "work" / "kfp" / "r1" / "run.json").read_text())["tasks"]
    assert [(t["task"], t["status"]) for t in tasks] == [
        ("preprocess", "succeeded"),
        ("condition-1/validate", "failed"),
    ]
    assert not (tmp_path / "work" / "model" / "runs" / "r1").exists()


@pytest.mark.parametrize(
    ("sig", "code", "said"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted (SIGINT)")],
)
def test_bad_input_run_local_interrupted_stops_its_step_which_removes_its_staging(
    fake_steps, tmp_path, sig, code, said
):
    work = tmp_path / "work"
    env = {**os.environ, "MNIST_CT_FAKE_WAIT": "train_model"}
    argv = [sys.executable, "-m", "mnist_ct.orchestration", "run-local", "--workdir", str(work), "--run-id", "r1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (work / "model" / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "train_model never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert err.strip().splitlines()[-1] == f"mnist-ct run-local: error: {said}; nothing half-written was left"
    assert [p.name for p in (work / "model" / "runs" / "r1").iterdir()] == []  # the step's staging is gone
    tasks = json.loads((work / "kfp" / "r1" / "run.json").read_text())["tasks"]
    assert tasks[-1]["task"] == "condition-1/train-model" and tasks[-1]["status"] == "failed"
    assert tasks[-1]["reason"].startswith("interrupted (")


# -- compile --------------------------------------------------------------------------------------------


def test_bad_input_compile_output_under_a_file(pinned_lock_file, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["compile", "-o", str(tmp_path / "file" / "p.yaml"), "--lock", str(pinned_lock_file)]) == 3
    refused(capsys, "compile", f"{tmp_path / 'file'}", "Not a directory", "a part of this path is a file")
    assert (tmp_path / "file").read_text() == "x"


def test_bad_input_compile_output_that_is_a_folder(pinned_lock_file, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["compile", "-o", str(tmp_path / "out"), "--lock", str(pinned_lock_file)]) == 3
    refused(capsys, "compile", f"{tmp_path / 'out'}", "Is a directory")
    assert made(tmp_path / "out") == [] and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_input_compile_read_only_output_folder(pinned_lock_file, tmp_path, capsys):
    with tmpfs_volume(tmp_path / "ro", read_only=True) as folder:
        assert main(["compile", "-o", str(folder / "p.yaml"), "--lock", str(pinned_lock_file)]) == 5
        refused(capsys, "compile", str(folder), "Read-only file system")


def test_bad_input_compile_lock_not_found(tmp_path, capsys):
    assert main(["compile", "-o", str(tmp_path / "p.yaml"), "--lock", str(tmp_path / "nope.json")]) == 3
    refused(capsys, "compile", f"{tmp_path / 'nope.json'}: image lock not found")
    assert not (tmp_path / "p.yaml").exists()


# -- release --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("epochs=two", "pipeline parameter epochs: 'two' is not a valid NUMBER_INTEGER"),
        ("baseline=nan", "pipeline parameter baseline: 'nan' is not a valid NUMBER_DOUBLE (not a finite number)"),
        ("epoch=3", "unknown pipeline parameter(s) epoch; the pipeline takes baseline, dataset, epochs"),
    ],
)
def test_bad_input_release_parameter_is_refused_before_anything_is_sent(api, pinned_lock_file, capsys, param, message):
    assert release(api, pinned_lock_file, "--run", "-p", param) == 3
    refused(capsys, "release", message)
    assert api.state.requests == []


def test_bad_input_release_parameter_given_twice(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "--run", "-p", "epochs=2", "-p", "epochs=3") == 2
    refused(capsys, "release", "pipeline parameter epochs is given twice ('2' and '3')")
    assert api.state.requests == []


def test_bad_input_release_parameter_without_a_value(api, pinned_lock_file, capsys):
    assert release(api, pinned_lock_file, "-p", "epochs") == 2
    assert "argument -p/--param: expected NAME=VALUE, got 'epochs'" in capsys.readouterr().err
    assert api.state.requests == []


def test_bad_input_release_host_that_is_not_a_url(pinned_lock_file, capsys, isolated_kfp_config):
    argv = ["release", "--host", "localhost:8080", "--lock", str(pinned_lock_file), "--skip-image-check"]  # the host
    assert main(argv) == 4
    refused(capsys, "release", "cannot reach KFP at localhost:8080", "check --host")


def test_bad_input_release_package_not_found(api, pinned_lock_file, tmp_path, capsys):
    assert release(api, pinned_lock_file, "--package", str(tmp_path / "p.yaml")) == 3
    refused(capsys, "release", f"{tmp_path / 'p.yaml'}: cannot read the compiled pipeline")
    assert api.state.requests == []


def test_an_internal_error_is_one_line_naming_the_traceback_file(tmp_path, capsys, monkeypatch):
    from mnist_ct.orchestration import __main__ as cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "compile", broken)
    monkeypatch.setenv("MNIST_CT_TRACEBACK_DIR", str(tmp_path))
    monkeypatch.delenv("MNIST_CT_DEBUG", raising=False)
    assert main(["compile"]) == 1
    line = refused(capsys, "compile", "internal error (a bug): RuntimeError: a bug (traceback in ")
    [written] = tmp_path.glob("mnist-ct-*.txt")
    assert str(written) in line and "RuntimeError: a bug" in written.read_text()
