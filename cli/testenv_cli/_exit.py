"""Exit codes of the ``testenv`` command: each kind of failure has its own, documented in
``testenv --help`` and the README, so that scripts can tell them apart."""

from __future__ import annotations

import enum

import kr8s

from testenv import (
    ClusterUnreachableError,
    EnvironmentFailedError,
    EnvironmentNotFoundError,
    OperatorNotInstalledError,
    ProvisioningTimeoutError,
    SpecError,
    TestenvError,
)


class ExitCode(enum.IntEnum):
    OK = 0
    #: The environment is Failed (or failed while the command waited for it).
    FAILED = 1
    #: Bad usage, or a spec the command or the cluster's admission refused.
    INVALID = 2
    #: No such environment (or service).
    NOT_FOUND = 3
    #: The cluster cannot be reached with the kubeconfig and context given.
    UNREACHABLE = 4
    #: The cluster has no TestEnvironment CRD: the operator is not installed.
    NO_OPERATOR = 5
    #: The environment was not Ready within --timeout.
    TIMEOUT = 6
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


EPILOG = (
    "Exit codes: 0 ok, 1 the environment is Failed, 2 bad usage or a refused spec, "
    "3 no such environment, 4 cluster unreachable, 5 operator not installed, "
    "6 not Ready in time, 130 interrupted."
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of an error the library (or the API server) raised."""
    if isinstance(exc, ProvisioningTimeoutError):
        return ExitCode.TIMEOUT
    if isinstance(exc, EnvironmentFailedError):
        return ExitCode.FAILED
    if isinstance(exc, EnvironmentNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, ClusterUnreachableError):
        return ExitCode.UNREACHABLE
    if isinstance(exc, OperatorNotInstalledError):
        return ExitCode.NO_OPERATOR
    if isinstance(exc, (SpecError, ValueError)):
        return ExitCode.INVALID
    if isinstance(exc, kr8s.ServerError):
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        if status == 404:
            return ExitCode.NOT_FOUND
        if 400 <= status < 500:
            return ExitCode.INVALID
        return ExitCode.UNREACHABLE
    if isinstance(exc, TestenvError):
        return ExitCode.FAILED
    if isinstance(exc, (OSError, TimeoutError)):
        return ExitCode.UNREACHABLE
    return ExitCode.FAILED


def one_line(exc: BaseException) -> str:
    """The error as one line: the API server's own message when it refused something."""
    if isinstance(exc, kr8s.ServerError):
        response = getattr(exc, "response", None)
        try:
            message = str(response.json().get("message")) if response is not None else str(exc)
        except ValueError:
            message = str(exc)
    else:
        message = str(exc)
    return " ".join(message.split())
