"""Every error the library raises (flat, like ``kr8s._exceptions``). Each message says what to
do next."""

from __future__ import annotations


class TestenvError(Exception):
    """Base class of every error testenv raises."""

    __test__ = False

    def __init__(self, message: str, *, forensics: str | None = None) -> None:
        super().__init__(message)
        #: Diagnostics gathered when the error happened (status, events, logs), if any.
        self.forensics = forensics


class ConfigurationError(TestenvError, ValueError):
    """A setting is invalid or asks for something testenv cannot honour."""


class SpecError(TestenvError, ValueError):
    """A spec file cannot be read or is not a valid TestEnvironment."""


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
    """The environment did not become Ready within the startup timeout."""


class PortForwardLostError(TestenvError):
    """A port-forward to a service broke and no other ready pod could take over."""


class EnvironmentNotFoundError(TestenvError, LookupError):
    """No TestEnvironment of that name (or no pods of that service in it)."""


class ServiceNotFoundError(TestenvError, LookupError):
    """No discovery record for the service that was asked for."""
