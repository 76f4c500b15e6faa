"""Where a step's time goes: start-up (interpreter, imports), its own work, and the rest (checks, export).

    time: 4.1 s = start-up 3.0 s (interpreter 0.1, imports 2.9, of which import torch 2.4)
        + work 0.6 s + other 0.5 s (checks, export, publish)

- The process start: Linux's /proc/self/stat `starttime` (field 22, clock ticks since boot, 1/100 s here)
  against CLOCK_BOOTTIME, the clock it counts on. It is when the process was forked, so it includes the
  exec and the interpreter's own start. Elsewhere (no /proc) the start-up is not measured (None).
- When this module was imported: mnist_ct.artifacts imports it first, and every step's entry point imports
  mnist_ct.artifacts first, so process start -> here is the interpreter (and runpy), here -> main() the
  step's imports. The imports of a few heavy packages (HEAVY_IMPORTS: torch, faiss, sklearn) are timed on
  their own, wherever they happen (at start-up, or lazily during the run), by a meta path finder that
  wraps the one module's exec_module; it is installed only when a mnist_ct module is the program (`python
  -m mnist_ct.<step>`), never in a library user's process.
- The work: what the step marks with `with log.work():` (cli.Log), added up over every entry.
- The end: when step_main returns (the interpreter's teardown after it is not counted; a runner's wall
  time per task is, so overhead = runner wall - work is the honest figure, and bench/pipeline.py uses it).

step_main (entry.py) logs the line at the end of a step that succeeded (a failure's last line stays its
error) unless --quiet, and, when MNIST_CT_TIMING_DIR is set (run-local sets it per task), writes the
same figures as JSON to <dir>/<step>.json, atomically, whatever the exit code.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

TIMING_DIR_ENV = "MNIST_CT_TIMING_DIR"
HEAVY_IMPORTS = ("torch", "faiss", "sklearn")
CLOCK = "process start: /proc/self/stat starttime on CLOCK_BOOTTIME; then time.perf_counter"


def process_age() -> float | None:
    """Seconds since this process started (module docstring); None where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        # Field 2 (the command name, in parentheses) may hold spaces: count the fields after its ")".
        started_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):  # no /proc, no CLOCK_BOOTTIME (not Linux)
        return None


# This module's import: process start -> here is the interpreter's start.
IMPORTED_AT = time.perf_counter()
AGE_AT_IMPORT = process_age()


class ImportClock(importlib.abc.MetaPathFinder):
    """Times the import of each of `names` (its top-level module's execution, submodules and dependencies
    not yet imported included), the first time it is imported. Finds nothing itself."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)
        self.seconds: dict[str, float] = {}
        self.finished: dict[str, float] = {}  # time.perf_counter() when each import ended
        self._seen: set[str] = set()

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> Any:
        if fullname not in self.names or fullname in self._seen:
            return None
        self._seen.add(fullname)
        spec = None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec
        clock = self

        def timed(module: ModuleType) -> None:
            started = time.perf_counter()
            try:
                exec_module(module)
            finally:
                clock.finished[fullname] = time.perf_counter()
                clock.seconds[fullname] = clock.finished[fullname] - started

        # This module's own loader object only; one without a __dict__ simply goes untimed.
        with contextlib.suppress(AttributeError):
            loader.exec_module = timed  # type: ignore[union-attr]
        return spec


def program_is_ours() -> bool:
    """This process runs a mnist_ct module as its program (`python -m mnist_ct.<step>`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "").startswith("mnist_ct.")


IMPORTS = ImportClock(HEAVY_IMPORTS)
if program_is_ours() and not any(isinstance(f, ImportClock) for f in sys.meta_path):
    sys.meta_path.insert(0, IMPORTS)


@dataclass
class StepTimes:
    """One step run's figures, in seconds (None: not measured; see the module docstring)."""

    step: str
    total: float
    startup: float | None
    interpreter: float | None
    imports: float | None
    work: float
    other: float
    heavy_imports: dict[str, float] = field(default_factory=dict)  # HEAVY_IMPORTS that were imported
    import_phases: dict[str, str] = field(default_factory=dict)  # each of them: "start-up" or "run"
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "step": self.step,
            "exit_code": self.exit_code,
            "total_s": r(self.total),
            "startup_s": r(self.startup),
            "interpreter_s": r(self.interpreter),
            "imports_s": r(self.imports),
            "heavy_imports_s": {k: r(v) for k, v in self.heavy_imports.items()},
            "heavy_import_phases": dict(self.import_phases),
            "work_s": r(self.work),
            "other_s": r(self.other),
            "clock": CLOCK,
        }

    def line(self) -> str:
        """`time: T s = start-up S s (interpreter I + imports M) + work W s + other O s (checks, export, publish)`,
        then where the heavy imports were (`; import torch 2.4 s in the start-up`)."""
        if self.startup is None:
            start = "start-up not measured (main() called inside a running process)"
        elif self.interpreter is None or self.imports is None:
            start = f"start-up {self.startup:.1f} s (interpreter, imports)"
        else:
            start = f"start-up {self.startup:.1f} s (interpreter {self.interpreter:.1f} + imports {self.imports:.1f})"
        text = f"time: {self.total:.1f} s = {start} + work {self.work:.1f} s + other {self.other:.1f} s"
        text += " (checks, export, publish)"
        by_phase: dict[str, list[str]] = {}
        for name, seconds in self.heavy_imports.items():
            by_phase.setdefault(self.import_phases.get(name, "run"), []).append(f"{name} {seconds:.1f} s")
        for phase, shown in by_phase.items():
            text += f"; import {', '.join(shown)} {'in the start-up' if phase == 'start-up' else 'during the run'}"
        return text


class StepClock:
    """Started when a step's main() is entered; `finish` turns it into StepTimes at the end.

    `from_process_start`: main() is the program's, so the process's age is its start-up; otherwise (a test
    calling main(argv) inside pytest's process) the start-up is not measured.
    """

    def __init__(self, step: str, from_process_start: bool) -> None:
        self.step = step
        self.from_process_start = from_process_start
        self.entered = time.perf_counter()
        self.startup: float | None = None
        self.interpreter: float | None = None
        self.imports: float | None = None
        if from_process_start:
            age = process_age()
            if age is not None:
                self.startup = age
                if AGE_AT_IMPORT is not None and age >= AGE_AT_IMPORT:
                    self.interpreter = AGE_AT_IMPORT
                    self.imports = age - AGE_AT_IMPORT

    def finish(self, work: float, exit_code: int | None = None) -> StepTimes:
        ran = time.perf_counter() - self.entered
        total = ran + (self.startup or 0.0)
        return StepTimes(
            step=self.step,
            total=total,
            startup=self.startup,
            interpreter=self.interpreter,
            imports=self.imports,
            work=work,
            other=max(0.0, ran - work),
            heavy_imports=dict(IMPORTS.seconds),
            import_phases={
                name: "start-up" if IMPORTS.finished[name] <= self.entered else "run" for name in IMPORTS.seconds
            },
            exit_code=exit_code,
        )


def write_times(times: StepTimes, folder: str | os.PathLike[str] | None = None) -> Path | None:
    """<folder or $MNIST_CT_TIMING_DIR>/<step>.json, written atomically; None when no folder is named."""
    folder = folder if folder is not None else os.environ.get(TIMING_DIR_ENV)
    if not folder:
        return None
    from .manifest import atomic_write_bytes

    path = Path(folder) / f"{times.step}.json"
    atomic_write_bytes(path, (json.dumps(times.to_json(), indent=2, sort_keys=True) + "\n").encode())
    return path
