"""What every step's command line shares: the run options, exit codes, logging and progress."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .errors import UsageError
from .paths import DEFAULT_DATA_ROOT, DEFAULT_DEPLOY_ROOT, DEFAULT_MODEL_ROOT, RunPaths, check_root, check_run_id

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The core options every step takes (see libs/artifacts/README.md), checked at parse time."""
    group = parser.add_argument_group("run and volumes")
    group.add_argument(
        "--run-id", type=run_id_arg, required=True, help="run id: every artifact goes under runs/<run id>/"
    )
    for option, default, what in (
        ("--data-root", DEFAULT_DATA_ROOT, "data volume"),
        ("--model-root", DEFAULT_MODEL_ROOT, "model volume"),
        ("--deploy-root", DEFAULT_DEPLOY_ROOT, "deploy-model volume"),
    ):
        group.add_argument(option, type=volume_root, default=default, help=f"{what} (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary lines")


def run_id_arg(text: str) -> str:
    """argparse type: a run id (paths.check_run_id)."""
    try:
        return check_run_id(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def volume_root(text: str) -> Path:
    """argparse type: a volume's root folder; it may not exist yet, but it may not be a file."""
    try:
        return check_root(Path(text))
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MAX_THREADS = 1024
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are 32-bit


def bounded_int(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: a whole number in [low, high] (high None: no upper bound), checked at parse time."""

    def integer(text: str) -> int:
        value = int(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {_range_text(low, high)}, got {value}")
        return value

    return integer


def bounded_float(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """argparse type: a finite number within the bounds (open bounds exclude the limit), checked at parse time."""

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
            hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {lo or '(-inf'}, {hi or 'inf)'}, got {value:g}")
        return value

    return number


def _range_text(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low}" if low != 0 else "0 or more"
    return f"from {low} to {high}"


positive_int = bounded_int(1)
non_negative_int = bounded_int(0)
seed_value = bounded_int(0, MAX_SEED)


def add_threads_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, used_by: str) -> None:
    """`--threads N`, the same in every step: N CPU threads for `used_by`; 0 means every core this process may use."""
    parser.add_argument(
        "--threads",
        type=bounded_int(0, MAX_THREADS),
        default=0,
        help=f"CPU threads for {used_by}; 0: every core this process may use, never more (default: %(default)s)",
    )


def check_low_high(option: str, low: float, high: float) -> None:
    """A LOW HIGH pair: refuse LOW > HIGH (parse types check each value; this checks the pair)."""
    if low > high:
        raise UsageError(f"{option}: LOW {low:g} is above HIGH {high:g}; give LOW <= HIGH")


def thread_count(requested: int) -> int:
    """Threads to use: `requested`, 0 meaning every core this process may run on, never more than those.

    Pipelines pass the pod's CPU limit; on a smaller machine (run-local) more threads than cores only slows.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(requested, cores) if requested > 0 else cores


def run_paths(args: argparse.Namespace) -> RunPaths:
    """The run's paths from the core options (the run id and the roots are checked here)."""
    return RunPaths(args.run_id, args.data_root, args.model_root, args.deploy_root)


class Log:
    """One summary line per unit of work on stderr, progress bars only on a terminal, and the step's own work
    marked with `with log.work():` (its seconds add up in `work_seconds`; step_main reports them, timing.py)."""

    def __init__(self, step: str, quiet: bool = False) -> None:
        self.step = step
        self.quiet = quiet
        self.work_seconds = 0.0
        self._working = 0  # nesting depth: an entry inside another is counted once, by the outer one

    @contextmanager
    def work(self) -> Iterator[None]:
        """Mark the part of the run that is the step's job (not its checks, exports or publishing). It may be
        entered more than once: the times add up; nested entries count once."""
        self._working += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            self._working -= 1
            if self._working == 0:
                self.work_seconds += time.perf_counter() - started

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.step}] {message}", file=sys.stderr, flush=True)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
        if self.quiet or not sys.stderr.isatty():
            yield from items
            return
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=f"[{self.step}] {desc}", unit=unit, leave=False, file=sys.stderr)
