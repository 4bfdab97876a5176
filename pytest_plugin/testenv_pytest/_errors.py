"""Typed errors of the plugin. Every message says what to do next."""

from __future__ import annotations


class TestenvError(Exception):
    """Base class of every error the plugin raises."""

    __test__ = False

    def __init__(self, message: str, *, forensics: str | None = None) -> None:
        super().__init__(message)
        #: Diagnostics gathered when the error happened (status, events, logs), if any.
        self.forensics = forensics


class ClusterUnreachableError(TestenvError):
    """The Kubernetes API server could not be reached with the configured kubeconfig."""


class OperatorNotInstalledError(TestenvError):
    """The TestEnvironment CRD (testenvironments.testenv.dev) is missing from the cluster."""


class EnvironmentFailedError(TestenvError):
    """The environment reached phase Failed, or did not become Ready in time."""

    def __init__(
        self, message: str, *, reason: str | None = None, forensics: str | None = None
    ) -> None:
        super().__init__(message, forensics=forensics)
        #: The operator's status message (or ``"Timeout"``).
        self.reason = reason


class ProvisioningTimeoutError(EnvironmentFailedError):
    """The environment did not become Ready within ``--testenv-timeout``."""


class PortForwardLostError(TestenvError):
    """A port-forward to a service broke and no other ready pod could take over."""
