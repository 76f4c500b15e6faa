"""The error types of mnist_ct.orchestration; the command line turns each into one line and an exit code."""

from __future__ import annotations


class OrchestrationError(Exception):
    """Bad input (a lock, a compiled pipeline, a parameter): exit code 3.

    `problems` holds one line per problem when there are several (a strict check lists them all).
    """

    exit_code = 3

    def __init__(self, message: str, problems: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class RemoteError(OrchestrationError):
    """The KFP endpoint is unreachable or refused a request: exit code 4."""

    exit_code = 4


class StepFailed(OrchestrationError):
    """A step of a local run failed; the run exits with the step's own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code if exit_code > 0 else 1
