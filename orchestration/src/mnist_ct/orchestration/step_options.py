"""A step's command line checked by the step's own parser, in the Python that will run the step.

`run-local` checks every task's resolved command line before it creates anything, so a bad value
(`--epochs -1`) fails at once instead of after the steps before it have run. The check is what the
step's entry point does before any work: `build_parser().parse_args(argv)` of `mnist_ct.<step>.__main__`,
then `options_from_args(args)` (its cross-field rules) where the step has one.

Standard library only, and it imports nothing of mnist_ct.orchestration: the executors run this file's
source in the step's Python (`python -P -c SOURCE REQUESTS_JSON`: a per-step venv, or the step's image),
where orchestration is not installed. It prints one JSON list, a result per request.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any


def command(requests: list[dict[str, Any]]) -> list[str]:
    """The interpreter options and arguments that run the check of `requests` ({"module", "argv"} each)."""
    return ["-P", "-c", Path(__file__).read_text(), json.dumps(requests)]


def results(stdout: str, count: int) -> list[dict[str, str | None]]:
    """The check's results from its output (the last line); ValueError if they are not there."""
    lines = stdout.strip().splitlines()
    found = json.loads(lines[-1]) if lines else None
    if not isinstance(found, list) or len(found) != count:
        raise ValueError(f"expected {count} results, got {stdout[-200:]!r}")
    return found


def check(module: str, argv: list[str]) -> dict[str, str | None]:
    """{"refused": the step's own one-line complaint, or None; "unchecked": why it could not be checked, or None}."""
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            entry = importlib.import_module(f"{module}.__main__")
    except Exception as e:  # noqa: BLE001 - whatever stops the import stops the step too
        return {"refused": None, "unchecked": f"cannot import {module}.__main__ ({e.__class__.__name__}: {e})"}
    build_parser = getattr(entry, "build_parser", None)
    if build_parser is None:
        return {"refused": None, "unchecked": f"{module}.__main__ has no build_parser()"}
    program = sys.argv[0]
    sys.argv[0] = module.rsplit(".", 1)[-1]  # argparse's default prog, as `python -m` would show the step
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
            options_from_args = getattr(entry, "options_from_args", None)
            if options_from_args is not None:
                options_from_args(args)
    except SystemExit as e:
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        last = lines[-1].partition(": error: ")[2] or lines[-1] if lines else f"its parser exited with {e.code}"
        return {"refused": last, "unchecked": None}
    except Exception as e:  # noqa: BLE001 - what the step's own entry point would end with
        expected = "ArtifactError" in {c.__name__ for c in type(e).__mro__}  # UsageError and the like
        return {"refused": str(e) if expected else f"{e.__class__.__name__}: {e}", "unchecked": None}
    finally:
        sys.argv[0] = program
    return {"refused": None, "unchecked": None}


def main(argv: list[str]) -> int:
    requests = json.loads(argv[0])
    print(json.dumps([check(r["module"], r["argv"]) for r in requests]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
