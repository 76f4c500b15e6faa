"""What every step's command line shares: the run options, exit codes, logging and progress."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from .errors import ArtifactError
from .paths import DEFAULT_DATA_ROOT, DEFAULT_DEPLOY_ROOT, DEFAULT_MODEL_ROOT, RunPaths

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The core options every step takes (see libs/artifacts/README.md)."""
    group = parser.add_argument_group("run and volumes")
    group.add_argument("--run-id", required=True, help="run id: every artifact goes under runs/<run id>/")
    group.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="data volume (default: %(default)s)")
    group.add_argument(
        "--model-root", type=Path, default=DEFAULT_MODEL_ROOT, help="model volume (default: %(default)s)"
    )
    group.add_argument(
        "--deploy-root", type=Path, default=DEFAULT_DEPLOY_ROOT, help="deploy-model volume (default: %(default)s)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary lines")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


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
    return RunPaths(args.run_id, args.data_root, args.model_root, args.deploy_root)


def run_step(step: str, work: Callable[[], int | None]) -> int:
    """Run `work`; an ArtifactError becomes one 'step: error: ...' line and its exit code."""
    try:
        return work() or 0
    except ArtifactError as e:
        print(f"{step}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{step}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: keep the traceback, but end with one readable line
        traceback.print_exc()
        print(f"{step}: internal error (a bug; the traceback is above)", file=sys.stderr)
        return 1


class Log:
    """One summary line per unit of work on stderr, and progress bars only on a terminal."""

    def __init__(self, step: str, quiet: bool = False) -> None:
        self.step = step
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"[{self.step}] {message}", file=sys.stderr, flush=True)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
        if self.quiet or not sys.stderr.isatty():
            yield from items
            return
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=f"[{self.step}] {desc}", unit=unit, leave=False, file=sys.stderr)
