"""A step's account of its time: start-up, the work it marks, the rest; one log line and a JSON file."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from mnist_ct.artifacts import ArtifactError, Log, add_run_arguments, step_main, timing
from mnist_ct.artifacts.timing import TIMING_DIR_ENV, ImportClock, StepClock, StepTimes, process_age, write_times


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    add_run_arguments(parser)
    return parser


def test_work_adds_up_over_entries_and_a_nested_entry_counts_once():
    log = Log("demo", quiet=True)
    with log.work():
        time.sleep(0.02)
        with log.work():
            time.sleep(0.02)
    first = log.work_seconds
    assert 0.04 <= first < 0.5
    with pytest.raises(ValueError), log.work():  # a failed stretch of work is still work
        time.sleep(0.02)
        raise ValueError
    assert log.work_seconds >= first + 0.02


def test_step_main_logs_the_time_line_and_writes_the_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(TIMING_DIR_ENV, str(tmp_path / "timing"))

    def run(paths, options, log):
        time.sleep(0.02)  # other: not marked
        with log.work():
            time.sleep(0.05)

    assert step_main("demo", _parser(), lambda a: None, run, ["--run-id", "r", "--data-root", str(tmp_path)]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("[demo] time: ") and "work 0.1 s + other 0.0 s (checks, export, publish)" in line
    assert "start-up not measured (main() called inside a running process)" in line  # main(argv) inside pytest
    found = json.loads((tmp_path / "timing" / "demo.json").read_text())
    assert found["step"] == "demo" and found["exit_code"] == 0 and found["startup_s"] is None
    assert 0.05 <= found["work_s"] < 1 and 0.02 <= found["other_s"] < 1
    assert found["total_s"] == pytest.approx(found["work_s"] + found["other_s"], abs=0.002)
    assert "/proc/self/stat" in found["clock"]


def test_a_failed_step_keeps_its_error_as_the_last_line_and_still_writes_its_times(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(TIMING_DIR_ENV, str(tmp_path / "timing"))

    def run(paths, options, log):
        with log.work():
            raise ArtifactError("x.npy is broken")

    assert step_main("demo", _parser(), lambda a: None, run, ["--run-id", "r", "--data-root", str(tmp_path)]) == 3
    assert capsys.readouterr().err == "demo: error: x.npy is broken\n"
    assert json.loads((tmp_path / "timing" / "demo.json").read_text())["exit_code"] == 3


def test_quiet_prints_no_time_line_and_no_variable_writes_no_file(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(TIMING_DIR_ENV, raising=False)
    argv = ["--run-id", "r", "--data-root", str(tmp_path), "--quiet"]
    assert step_main("demo", _parser(), lambda a: None, lambda *a: None, argv) == 0
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_usage_errors_and_help_account_for_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(TIMING_DIR_ENV, str(tmp_path / "timing"))
    assert step_main("demo", _parser(), lambda a: None, lambda *a: None, ["--help"]) == 0
    assert step_main("demo", _parser(), lambda a: None, lambda *a: None, ["--run-id", "a\n"]) == 2
    assert not (tmp_path / "timing").exists()


def test_a_timing_file_that_cannot_be_written_is_a_warning_not_a_failure(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(TIMING_DIR_ENV, str(tmp_path / "file"))  # a file where the folder should be
    assert step_main("demo", _parser(), lambda a: None, lambda *a: None, ["--run-id", "r"]) == 0
    err = capsys.readouterr().err
    assert "demo: warning: timing not written: " in err


def test_the_process_age_is_read_from_proc():
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc")
    age = process_age()
    assert age is not None and 0 < age < time.monotonic() + 1
    started = time.perf_counter()
    code = "from mnist_ct.artifacts.timing import process_age; import time; time.sleep(0.3); print(process_age())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.3 <= child <= time.perf_counter() - started + 0.02  # ticks are 10 ms


def test_a_step_run_as_its_own_process_measures_its_start_up(tmp_path):
    script = textwrap.dedent(
        """
        import argparse, sys, time
        from mnist_ct.artifacts import add_run_arguments, step_main

        def run(paths, options, log):
            with log.work():
                time.sleep(0.1)

        parser = argparse.ArgumentParser(prog="demo")
        add_run_arguments(parser)
        sys.exit(step_main("demo", parser, lambda a: None, run))
        """
    )
    env = {**os.environ, TIMING_DIR_ENV: str(tmp_path)}
    argv = [sys.executable, "-c", script, "--run-id", "r", "--data-root", str(tmp_path / "data")]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - started
    found = json.loads((tmp_path / "demo.json").read_text())
    assert found["startup_s"] > 0 and found["interpreter_s"] > 0 and found["imports_s"] > 0
    assert found["startup_s"] == pytest.approx(found["interpreter_s"] + found["imports_s"], abs=0.002)
    assert 0.1 <= found["work_s"] < found["total_s"] <= wall + 0.02
    assert found["total_s"] == pytest.approx(found["startup_s"] + found["work_s"] + found["other_s"], abs=0.003)
    assert "[demo] time: " in done.stderr and "start-up " in done.stderr and "(interpreter " in done.stderr


def test_the_import_clock_times_the_named_module_once_and_nothing_else(tmp_path, monkeypatch):
    package = tmp_path / "slow_demo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import time\ntime.sleep(0.05)\nfrom . import part\n")
    (package / "part.py").write_text("VALUE = 1\n")
    (tmp_path / "other_demo_mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    clock = ImportClock(["slow_demo_pkg"])
    monkeypatch.setattr(sys, "meta_path", [clock, *sys.meta_path])
    try:
        import other_demo_mod  # noqa: F401
        import slow_demo_pkg

        assert slow_demo_pkg.part.VALUE == 1
        assert set(clock.seconds) == {"slow_demo_pkg"} and 0.05 <= clock.seconds["slow_demo_pkg"] < 1
        assert clock.find_spec("slow_demo_pkg") is None  # timed once: it finds nothing after that
        assert clock.find_spec("no_such_module_anywhere") is None
    finally:
        for name in ("slow_demo_pkg", "slow_demo_pkg.part", "other_demo_mod"):
            sys.modules.pop(name, None)


def test_the_line_names_the_heavy_imports_and_where_they_happened():
    times = StepTimes("demo", 4.1, 3.0, 0.1, 2.9, 0.6, 0.5, {"torch": 2.4, "faiss": 0.2}, {"torch": "start-up"})
    assert times.line() == (
        "time: 4.1 s = start-up 3.0 s (interpreter 0.1 + imports 2.9) + work 0.6 s + other 0.5 s "
        "(checks, export, publish); import torch 2.4 s in the start-up; import faiss 0.2 s during the run"
    )
    no_split = StepTimes("demo", 1.0, 0.5, None, None, 0.3, 0.2)
    assert "start-up 0.5 s (interpreter, imports) + work 0.3 s" in no_split.line()


def test_write_times_names_no_file_without_a_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(TIMING_DIR_ENV, raising=False)
    times = StepClock("demo", from_process_start=False).finish(0.0, 0)
    assert write_times(times) is None
    assert write_times(times, tmp_path) == tmp_path / "demo.json"
    assert timing.program_is_ours() is False  # pytest is the program here: no import clock installed


def test_after_a_failure_an_unwritable_timing_file_goes_unsaid(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(TIMING_DIR_ENV, str(tmp_path / "file"))

    def run(paths, options, log):
        raise ArtifactError("x.npy is broken")

    assert step_main("demo", _parser(), lambda a: None, run, ["--run-id", "r"]) == 3
    assert capsys.readouterr().err == "demo: error: x.npy is broken\n"  # the runner's reason stays the error
