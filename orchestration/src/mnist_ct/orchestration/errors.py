"""The error types of mnist_ct.orchestration; mnist_ct.artifacts' error boundary turns each into its exit code.

They are ArtifactErrors, so the one boundary every step uses (`mnist_ct.artifacts.error_boundary`) prints
them as `mnist-ct <command>: error: <message>` with their `exit_code`.
"""

from __future__ import annotations

import signal

from mnist_ct.artifacts import ArtifactError


class OrchestrationError(ArtifactError):
    """Bad input (a lock, a compiled pipeline, a parameter): exit code 3.

    `problems` holds one line per problem when there are several (a strict check lists them all); they
    are printed under the message, one `  - <problem>` line each.
    """

    exit_code = 3

    def __init__(self, message: str, problems: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)

    def __str__(self) -> str:
        return "\n".join([self.message, *(f"  - {p}" for p in self.problems)])


class RemoteError(OrchestrationError):
    """The KFP endpoint (or an image registry release asks) is unreachable or refused a request: exit code 4."""

    exit_code = 4


class StepFailed(OrchestrationError):
    """A step of a local run failed; the run exits with the step's own exit code (128 + N: killed by signal N)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code > 0 else 128 - exit_code if exit_code < 0 else 1


def describe_exit(code: int) -> str:
    """`exit code 3`, or `killed by SIGKILL` for a process a signal ended (Popen's negative return codes)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
