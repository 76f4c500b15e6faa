"""The error types and exit codes every step and command uses (entry.py turns them into one stderr line)."""

from __future__ import annotations

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_ENVIRONMENT = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class ArtifactError(Exception):
    """Bad or missing input: the message is one line naming the file and how to fix it (exit 3)."""

    exit_code = EXIT_BAD_INPUT


class UsageError(ArtifactError):
    """Bad command-line usage that argparse cannot see (exit 2)."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(ArtifactError):
    """The machine, not the input: a full disk, a read-only volume, no permission (exit 5)."""

    exit_code = EXIT_ENVIRONMENT


class Terminated(BaseException):
    """SIGTERM arrived (a pod being stopped): unwinds like KeyboardInterrupt, so staging is removed."""
