"""Running the step as a user would (its main), and what a failed or refused run must look like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnist_ct.validate.__main__ import main

README_PATH = Path(__file__).resolve().parents[1] / "README.md"
PROG = "python -m mnist_ct.validate"  # argparse's name in usage errors; the step's own errors say "validate"


def run(data_root: Path, *args: str) -> int:
    """The step on run r1; the deploy volume is an empty folder (no champion) unless `args` name another."""
    no_deploy = str(data_root / "no-deploy-volume")  # never the machine's real /deploy-model
    return main(["--run-id", "r1", "--data-root", str(data_root), "--deploy-root", no_deploy, "--quiet", *args])


def report(data_root: Path) -> dict[str, Any]:
    return json.loads((data_root / "runs/r1/validation/report.json").read_text())


def failed(data_root: Path, capsys: Any, *args: str) -> list[str]:
    """Run, expect exit 3 and a written report; return the stderr lines (one per failed check)."""
    assert run(data_root, *args) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    r = report(data_root)
    assert r["passed"] is False
    assert len(lines) == r["summary"]["fail"] == sum(c["status"] == "fail" for c in r["checks"])
    assert all(line.startswith("validate: check failed: ") for line in lines)
    return lines


def error_line(err: str, code: int) -> str:
    """The one error line of a refused run (argparse prints its usage first, for exit 2 at parse time)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if code == 2 and lines and lines[0].startswith("usage:"):
        errors = [line for line in lines if line.startswith(f"{PROG}: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], lines
        return errors[0]
    assert len(lines) == 1 and lines[0].startswith("validate: error: "), lines
    return lines[0]


def no_report(data_root: Path) -> bool:
    """No validation artifact, not even a hidden staging folder, in the run's folder."""
    run_folder = data_root / "runs/r1"
    return not run_folder.exists() or not [p for p in run_folder.iterdir() if "validation" in p.name]


def refused(data_root: Path, capsys: Any, code: int, *args: str) -> str:
    """Run, expect exit `code`, one error line on stderr and no report; return the line."""
    assert run(data_root, *args) == code
    line = error_line(capsys.readouterr().err, code)
    assert no_report(data_root), "a report (or its staging) was left behind"
    return line
