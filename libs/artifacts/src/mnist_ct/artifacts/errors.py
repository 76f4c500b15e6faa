"""The error types every step uses; `main` turns them into one stderr line and an exit code."""

from __future__ import annotations

EXIT_BAD_INPUT = 3
EXIT_USAGE = 2


class ArtifactError(Exception):
    """Bad or missing input: the message is one line naming the file and how to fix it (exit 3)."""

    exit_code = EXIT_BAD_INPUT


class UsageError(ArtifactError):
    """Bad command-line usage that argparse cannot see (exit 2)."""

    exit_code = EXIT_USAGE
