"""Running the step as a user would (its main), and what a refused run must look like."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mnist_ct.preprocess.__main__ import main

README_PATH = Path(__file__).resolve().parents[1] / "README.md"
PROG = "python -m mnist_ct.preprocess"  # argparse's name in usage errors; the step's own errors say "preprocess"


def run(tmp_path: Path, *args: str, data_root: Path | None = None) -> int:
    root = data_root or tmp_path / "data"
    return main(["--run-id", "r1", "--data-root", str(root), "--quiet", *args])


def manifest(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "data/runs/r1/dataset/manifest.json").read_text())


def error_line(err: str, code: int) -> str:
    """The one error line of a refused run (argparse prints its usage first, for exit 2 at parse time)."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if code == 2 and lines and lines[0].startswith("usage:"):
        errors = [line for line in lines if line.startswith(f"{PROG}: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], lines
        return errors[0]
    assert len(lines) == 1 and lines[0].startswith("preprocess: error: "), lines
    return lines[0]


def nothing_published(data_root: Path) -> bool:
    """No data set, not even a hidden staging folder, under the run's folder."""
    run_folder = data_root / "runs/r1"
    return not run_folder.exists() or not list(run_folder.iterdir())


def refused(tmp_path: Path, capsys: Any, code: int, *args: str, data_root: Path | None = None) -> str:
    """Run, expect exit `code`, one error line on stderr and nothing published; return the line."""
    root = data_root or tmp_path / "data"
    assert run(tmp_path, *args, data_root=root) == code
    line = error_line(capsys.readouterr().err, code)
    assert nothing_published(root), "something was left behind"
    return line
