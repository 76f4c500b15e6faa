"""The one entry point: every failure is one line on stderr and the exit code that says whose problem it is."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_ct.artifacts import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_ENVIRONMENT,
    EXIT_TERMINATED,
    EXIT_USAGE,
    ArtifactError,
    Producer,
    RunPaths,
    UsageError,
    add_run_arguments,
    error_boundary,
    publish,
    step_main,
)


def test_an_artifact_error_is_one_line_and_exit_3(capsys):
    def work():
        raise ArtifactError("/data/x: broken; rerun preprocess")

    assert error_boundary("validate", work) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "validate: error: /data/x: broken; rerun preprocess\n"


def test_a_usage_error_is_exit_2(capsys):
    assert error_boundary("validate", lambda: (_ for _ in ()).throw(UsageError("bad flag"))) == EXIT_USAGE
    assert capsys.readouterr().err == "validate: error: bad flag\n"


@pytest.mark.parametrize(
    ("code", "exit_code", "advice"),
    [
        (errno.ENOSPC, EXIT_ENVIRONMENT, "the disk is full"),
        (errno.EROFS, EXIT_ENVIRONMENT, "read-only"),
        (errno.EACCES, EXIT_ENVIRONMENT, "permission denied"),
        (errno.ENOTDIR, EXIT_BAD_INPUT, "not a folder"),
        (errno.EISDIR, EXIT_BAD_INPUT, "a folder where a file was expected"),
        (errno.ENOENT, EXIT_BAD_INPUT, "not found"),
    ],
)
def test_an_os_error_names_the_path_and_what_to_do(capsys, code, exit_code, advice):
    def work():
        raise OSError(code, os.strerror(code), "/data/runs/r/dataset")

    assert error_boundary("preprocess", work) == exit_code
    err = capsys.readouterr().err
    assert err.startswith(f"preprocess: error: /data/runs/r/dataset: {os.strerror(code)}; ")
    assert advice in err and err.count("\n") == 1


def test_a_native_library_disk_full_error_is_an_environment_problem(capsys):
    def work():
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: No space left on device")

    assert error_boundary("train_model", work) == EXIT_ENVIRONMENT
    assert "the disk is full" in capsys.readouterr().err


def test_a_bug_is_one_line_with_where_the_traceback_went(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_CT_TRACEBACK_DIR", str(tmp_path))
    monkeypatch.delenv("MNIST_CT_DEBUG", raising=False)

    def work():
        raise KeyError("boom")

    assert error_boundary("analysis", work) == EXIT_BUG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (a bug): KeyError: 'boom'" in err
    (written,) = tmp_path.glob("mnist-ct-analysis-*.txt")
    assert str(written) in err
    assert "Traceback" in written.read_text() and "KeyError: 'boom'" in written.read_text()


def test_debug_prints_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("MNIST_CT_DEBUG", "1")
    empty: dict[str, int] = {}
    assert error_boundary("analysis", lambda: empty["x"]) == EXIT_BUG
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_run_arguments(parser)
    return parser


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--run-id", "a\n"], "invalid run id"),  # a trailing newline passed a `$`-anchored pattern
        (["--run-id", "/abs/path"], "invalid run id"),
        (["--run-id", "x" * 129], "invalid run id"),
        (["--run-id", "ok", "--data-root", "FILE"], "is a file, not a folder"),
        (["--data-root", "/tmp"], "required: --run-id"),
    ],
)
def test_bad_input_core_options_are_refused_at_parse_time_exit_2(capsys, tmp_path, argv, message):
    (tmp_path / "FILE").write_text("x")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    ran = []
    assert step_main("demo", _parser(), lambda a: None, lambda *a: ran.append(1), argv) == EXIT_USAGE
    assert message in capsys.readouterr().err and not ran


def test_bad_input_options_rejected_by_the_step_are_exit_2_before_any_work(capsys, tmp_path):
    def options(args):
        raise UsageError("--epochs: must be at least 1")

    ran = []
    argv = ["--run-id", "r", "--data-root", str(tmp_path)]
    assert step_main("demo", _parser(), options, lambda *a: ran.append(1), argv) == EXIT_USAGE
    assert capsys.readouterr().err == "demo: error: --epochs: must be at least 1\n" and not ran


def test_help_exits_0(capsys):
    assert step_main("demo", _parser(), lambda a: None, lambda *a: None, ["--help"]) == 0
    assert "--run-id" in capsys.readouterr().out


def test_bad_input_a_run_folder_that_is_a_symlink_out_of_the_volume_is_refused(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "data" / "runs").mkdir(parents=True)
    (tmp_path / "data" / "runs" / "r").symlink_to(outside)

    def run(paths, options, log):
        with publish(paths.dataset, "dataset", Producer("demo", "0")) as staging:
            (staging.path / "x").write_text("x")

    argv = ["--run-id", "r", "--data-root", str(tmp_path / "data")]
    assert step_main("demo", _parser(), lambda a: None, run, argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "leads out of its volume" in err and err.count("\n") == 1
    assert list(outside.iterdir()) == []


def test_a_symlink_that_stays_inside_the_volume_is_fine(tmp_path):
    (tmp_path / "data" / "elsewhere").mkdir(parents=True)
    (tmp_path / "data" / "runs").symlink_to(tmp_path / "data" / "elsewhere")
    assert RunPaths("r", tmp_path / "data").dataset == tmp_path / "data/runs/r/dataset"


def test_bad_input_a_full_disk_is_exit_5_and_nothing_is_published(full_volume, capsys):
    def run(paths, options, log):
        with publish(paths.dataset, "dataset", Producer("demo", "0")) as staging:
            np.save(staging.path / "big.npy", np.zeros(100_000))

    argv = ["--run-id", "r", "--data-root", str(full_volume)]
    assert step_main("demo", _parser(), lambda a: None, run, argv) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert "No space left on device; the disk is full" in err and err.count("\n") == 1
    runs = full_volume / "runs" / "r"
    assert not runs.exists() or list(runs.iterdir()) == []  # no artifact, no hidden staging


def test_bad_input_a_read_only_volume_is_exit_5_naming_the_path(read_only_volume, capsys):
    def run(paths, options, log):
        with publish(paths.dataset, "dataset", Producer("demo", "0")):
            pass

    argv = ["--run-id", "r", "--data-root", str(read_only_volume)]
    assert step_main("demo", _parser(), lambda a: None, run, argv) == EXIT_ENVIRONMENT
    err = capsys.readouterr().err
    assert f"{read_only_volume}/runs" in err and "Read-only file system; the volume is mounted read-only" in err


STEP_SCRIPT = textwrap.dedent(
    """
    import argparse, sys, time
    from pathlib import Path
    from mnist_ct.artifacts import Producer, add_run_arguments, publish, step_main

    def run(paths, options, log):
        with publish(paths.dataset, "dataset", Producer("demo", "0")) as staging:
            (staging.path / "part.bin").write_bytes(b"x" * 1000)
            Path(sys.argv[-1]).write_text("staged")
            if options == "abort":
                import os
                os.abort()
            time.sleep(60)

    parser = argparse.ArgumentParser(prog="demo")
    add_run_arguments(parser)
    parser.add_argument("--mode")
    parser.add_argument("marker")
    sys.exit(step_main("demo", parser, lambda a: a.mode, run))
    """
)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGINT, 130)])
def test_a_signal_removes_the_staging_and_exits_128_plus_the_signal(tmp_path, sig, code):
    marker = tmp_path / "marker"
    argv = [sys.executable, "-c", STEP_SCRIPT, "--run-id", "r", "--data-root", str(tmp_path / "d"), str(marker)]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    assert any((tmp_path / "d/runs/r").glob(".dataset.staging-*"))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert err.count("\n") == 1 and "nothing half-written was left" in err
    assert list((tmp_path / "d/runs/r").iterdir()) == []


def test_a_native_abort_is_not_silent(tmp_path):
    argv = [sys.executable, "-c", STEP_SCRIPT, "--run-id", "r", "--data-root", str(tmp_path / "d"), "--mode", "abort"]
    proc = subprocess.run([*argv, str(tmp_path / "marker")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in proc.stderr and "in run" in proc.stderr


def test_the_run_paths_give_back_the_core_options(tmp_path):
    paths = RunPaths("r", tmp_path / "d", tmp_path / "m", tmp_path / "x")
    args = _parser().parse_args(paths.cli_args())
    assert (args.run_id, args.data_root, args.model_root, args.deploy_root) == (
        "r",
        tmp_path / "d",
        tmp_path / "m",
        tmp_path / "x",
    )
    assert Path(args.data_root) == paths.data_root
