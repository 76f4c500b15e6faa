"""One entry point for every step and command: parse, check the options, run, and turn every failure into one line.

    def main(argv=None) -> int:
        return step_main("validate", build_parser(), options_from_args, run, argv)

Exit codes (errors.py): 0 done, 1 a bug (one line says where the traceback was written), 2 bad usage, 3 bad
input, 5 the environment (disk full, read-only volume, no permission, out of memory), 130 / 143 interrupted
by SIGINT / SIGTERM. Whatever a step was publishing is removed on the way out (publish() and the atomic
writers clean up in `finally`), so an exit never leaves a half-written artifact where a reader would look.
"""

from __future__ import annotations

import argparse
import errno
import faulthandler
import gc
import json
import os
import pickle
import signal
import sys
import tempfile
import threading
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from . import timing
from .cli import Log, run_paths
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_ENVIRONMENT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    ArtifactError,
    Terminated,
)
from .paths import RunPaths

O = TypeVar("O")  # noqa: E741  (a step's Options)

DEBUG_ENV = "MNIST_CT_DEBUG"  # 1: print the full traceback of an internal error on stderr
TRACEBACK_DIR_ENV = "MNIST_CT_TRACEBACK_DIR"  # where internal errors' tracebacks go (default: the temp folder)

# errno -> (exit code, what to do). The environment's problems are fixed on the machine, not in the input.
_OS_ERRORS: dict[int, tuple[int, str]] = {
    errno.ENOSPC: (EXIT_ENVIRONMENT, "the disk is full: free space on that volume or give it more, then rerun"),
    errno.EDQUOT: (EXIT_ENVIRONMENT, "the disk quota is used up: free space or raise the quota, then rerun"),
    errno.EROFS: (EXIT_ENVIRONMENT, "the volume is mounted read-only: mount it read-write, or choose another root"),
    errno.EACCES: (EXIT_ENVIRONMENT, "permission denied: let this user (uid {uid}) use it, or choose another root"),
    errno.EPERM: (EXIT_ENVIRONMENT, "operation not permitted for this user (uid {uid}): fix the volume's ownership"),
    errno.EMFILE: (EXIT_ENVIRONMENT, "too many open files: raise the limit (ulimit -n)"),
    errno.ENFILE: (EXIT_ENVIRONMENT, "too many open files on this machine"),
    errno.ENOMEM: (EXIT_ENVIRONMENT, "out of memory: give the step more memory, or use smaller batches"),
    errno.EIO: (EXIT_ENVIRONMENT, "an I/O error on the device: check the volume"),
    errno.ENOENT: (EXIT_BAD_INPUT, "not found: check the path, or run the step that makes it first"),
    errno.ENOTDIR: (EXIT_BAD_INPUT, "a part of this path is a file, not a folder: pass a folder"),
    errno.EISDIR: (EXIT_BAD_INPUT, "this is a folder where a file was expected"),
    errno.ELOOP: (EXIT_BAD_INPUT, "a symlink loop: fix or remove the link"),
    errno.ENAMETOOLONG: (EXIT_BAD_INPUT, "the path is too long: choose a shorter root"),
    errno.EEXIST: (EXIT_BAD_INPUT, "already exists and is in the way: remove it"),
    errno.ENOTEMPTY: (EXIT_BAD_INPUT, "a folder that should be empty is not: remove it"),
}
# Native libraries (torch, faiss) turn errno into text inside a RuntimeError: the same advice applies.
_NATIVE_TEXT = {
    os.strerror(code): code for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.ENOMEM)
}
_NATIVE_TEXT["CUDA out of memory"] = errno.ENOMEM  # torch.cuda.OutOfMemoryError
# What a data file that does not parse raises from the standard library and numpy's loaders.
_PARSE_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, json.JSONDecodeError, UnicodeDecodeError, pickle.PickleError)


def describe_os_error(e: OSError) -> tuple[str, int]:
    """One line naming the path, what went wrong and what to do; and the exit code (3 input, 5 environment)."""
    code, advice = _OS_ERRORS.get(e.errno or 0, (EXIT_ENVIRONMENT, "check the volume and rerun"))
    where = "" if e.filename is None else f"{e.filename}: "
    if e.filename2 is not None:
        where = f"{e.filename} -> {e.filename2}: "
    reason = e.strerror or str(e)
    return f"{where}{reason}; {advice.format(uid=os.getuid())}", code


def _native_os_error(e: BaseException) -> OSError | None:
    text = str(e)
    for message, code in _NATIVE_TEXT.items():
        if message in text:
            return OSError(code, f"{text.splitlines()[0] if text else message}")
    return None


def _write_traceback(prog: str) -> str | None:
    """Write the current exception's traceback to a file; its path, or None if that fails too."""
    folder = os.environ.get(TRACEBACK_DIR_ENV) or tempfile.gettempdir()
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in prog)
    try:
        prefix = f"mnist-ct-{name}-{time.strftime('%Y%m%dT%H%M%S')}-"
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=folder)
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        return path
    except OSError:
        return None


def error_boundary(prog: str, work: Callable[[], int | None]) -> int:
    """Run `work`; every failure becomes one `prog: ...` line on stderr and its exit code (module docstring)."""

    def fail(message: str, code: int) -> int:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return code

    try:
        with _signals_unwind(), _native_crashes_reported():
            return work() or 0
    except ArtifactError as e:
        return fail(str(e), e.exit_code)
    except OSError as e:
        return fail(*describe_os_error(e))
    except MemoryError:
        return fail("out of memory: give the step more memory, or smaller batches", EXIT_ENVIRONMENT)
    except _PARSE_ERRORS as e:
        return fail(f"a data file does not parse ({e.__class__.__name__}: {e}); replace it or rerun its producer", 3)
    except KeyboardInterrupt:
        return fail("interrupted (SIGINT); nothing half-written was left", EXIT_INTERRUPTED)
    except Terminated:
        return fail("terminated (SIGTERM); nothing half-written was left", EXIT_TERMINATED)
    except Exception as e:
        native = _native_os_error(e)
        if native is not None:
            message, code = describe_os_error(native)
            return fail(message, code)
        if os.environ.get(DEBUG_ENV) == "1":
            traceback.print_exc()
            where = "the traceback is above"
        else:
            path = _write_traceback(prog)
            where = f"traceback in {path}" if path else "could not write the traceback"
            where += f"; {DEBUG_ENV}=1 prints it"
        return fail(f"internal error (a bug): {e.__class__.__name__}: {e} ({where})", EXIT_BUG)


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM raises Terminated (as SIGINT raises KeyboardInterrupt), so `finally` blocks remove staging."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    # A shell's background job starts with SIGINT ignored; a step still unwinds on it (exit 130).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


@contextmanager
def _native_crashes_reported() -> Iterator[None]:
    """A native abort or segfault (FAISS, torch) prints where it happened instead of dying silently."""
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr is not a file (captured in tests)
        yield
        return
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable(file=stderr_fd)
    try:
        yield
    finally:
        if not was_enabled:
            faulthandler.disable()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code argparse chose (2 for bad usage, 0 for --help)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT


def command_main(
    prog: str, parser: argparse.ArgumentParser, work: Callable[[argparse.Namespace], int | None], argv=None
) -> int:
    """A command's main: parse (exit 2 on bad usage), then `work(args)` inside the error boundary."""
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    return error_boundary(prog, lambda: work(args))


def step_main(
    step: str,
    parser: argparse.ArgumentParser,
    options: Callable[[argparse.Namespace], O],
    run: Callable[[RunPaths, O, Log], int | None],
    argv: list[str] | None = None,
) -> int:
    """A step's main: parse, build and check its Options and RunPaths (exit 2 before any work), then run it.

    Its time is accounted (timing.py): the start-up (the process's age here, where main() is the program's:
    `python -m mnist_ct.<step>`, or `argv` None), the work the step marks with `log.work()`, and the rest; one
    `time: ...` line at the end of a run that succeeded (not with --quiet), and <$MNIST_CT_TIMING_DIR>/<step>.json
    whenever that variable is set.
    """
    clock = timing.StepClock(step, from_process_start=argv is None or timing.program_is_ours())
    logs: list[Log] = []

    def work(args: argparse.Namespace) -> int | None:
        checked = options(args)
        paths = run_paths(args)
        logs.append(Log(step, args.quiet))
        return run(paths, checked, logs[0])

    code = command_main(step, parser, work, argv)
    if logs:  # the options held and the step ran (a usage error or --help is no run to account for)
        report_times(clock.finish(logs[0].work_seconds, code), logs[0], code)
    if clock.from_process_start:
        # Only the interpreter's exit follows. Its garbage collections walk every object torch and numpy made
        # (0.3-0.6 s with torch loaded); frozen, they are left to the OS. Everything was written and closed
        # above (with-blocks, atomic writes); atexit handlers and refcount finalisers still run.
        gc.freeze()
    return code


def report_times(times: timing.StepTimes, log: Log, code: int) -> None:
    """The `time:` line and the timing JSON. After a failure its error stays the last line (a runner reports
    it): no time line, and a timing file that cannot be written (the disk that failed the step) goes unsaid.
    After a success such a file is one warning line; the step's outcome stands either way."""
    if code == 0:
        log(times.line())
    try:
        timing.write_times(times)
    except (OSError, ArtifactError) as e:
        if code == 0:
            print(f"{log.step}: warning: timing not written: {e}", file=sys.stderr, flush=True)
