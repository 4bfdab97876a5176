"""testenv: ephemeral test environments on Kubernetes, from Python.

The core library: the API types (:mod:`testenv.api`), launching an environment (a
TestEnvironment in Kubernetes, or local processes), waiting for it, keeping its lease,
port-forwarding, discovery, typed clients and reports. The pytest plugin (``testenv_pytest``)
and the command line are thin layers over what this module exports. The plan's names work
as the plan uses them::

    from testenv import DevLauncher, LauncherConfig, RealServicesManager

    launcher = DevLauncher(LauncherConfig(dynamic_ports=True, test_mode=True, startup_timeout=30))
    manager = RealServicesManager(launcher)
    await manager.start_all_services()
    auth = await manager.client_factory.create_auth_client()
"""

# Names load on first use (PEP 562): ``import testenv.api`` (the operator does) and loading the
# pytest plugin stay cheap; type checkers see the imports below.
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

# httpx imports its command line (click, pygments, rich: about a third of its import time)
# whenever those are installed, as they are beside the testenv command, though no library
# uses it (encode/httpx#3547). Marked absent, httpx falls back to a stub ``httpx.main``.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

if TYPE_CHECKING:
    from ._admin import Environments, EnvironmentView
    from ._clients import (
        AuthTestClient,
        BackendTestClient,
        SyncAuthTestClient,
        SyncBackendTestClient,
        SyncWebSocketTestClient,
        TestClientFactory,
        User,
        WebSocketTestClient,
        run_sync,
    )
    from ._context import (
        EnvironmentInfo,
        RealServiceContext,
        StartResult,
        SyncRealServiceContext,
    )
    from ._discovery import (
        DEFAULT_DISCOVERY_DIR,
        DISCOVERY_ENV,
        ServiceDiscovery,
        ServiceInfo,
    )
    from ._errors import (
        ClusterUnreachableError,
        ConfigurationError,
        EnvironmentFailedError,
        EnvironmentNotFoundError,
        OperatorNotInstalledError,
        PortForwardLostError,
        ProvisioningTimeoutError,
        ServiceNotFoundError,
        SpecError,
        TestenvError,
    )
    from ._launcher import (
        DevLauncher,
        RealServicesManager,
        ServiceCache,
        release_shared,
    )
    from ._report import (
        RealServiceTestReport,
        TestResults,
        environment_section,
        junit_properties,
        write_report,
    )
    from ._settings import (
        LauncherConfig,
        set_front_end_values,
    )
    from ._spec import (
        load_spec,
        spec_hash,
    )
    from ._stack import Stack
    from .api import PROJECT_VERSION as __version__

_EXPORTS: dict[str, str] = {
    "AuthTestClient": "._clients",
    "BackendTestClient": "._clients",
    "ClusterUnreachableError": "._errors",
    "ConfigurationError": "._errors",
    "DEFAULT_DISCOVERY_DIR": "._discovery",
    "DISCOVERY_ENV": "._discovery",
    "DevLauncher": "._launcher",
    "EnvironmentFailedError": "._errors",
    "EnvironmentInfo": "._context",
    "EnvironmentNotFoundError": "._errors",
    "EnvironmentView": "._admin",
    "Environments": "._admin",
    "LauncherConfig": "._settings",
    "OperatorNotInstalledError": "._errors",
    "PortForwardLostError": "._errors",
    "ProvisioningTimeoutError": "._errors",
    "RealServiceContext": "._context",
    "RealServiceTestReport": "._report",
    "RealServicesManager": "._launcher",
    "ServiceCache": "._launcher",
    "ServiceDiscovery": "._discovery",
    "ServiceInfo": "._discovery",
    "ServiceNotFoundError": "._errors",
    "SpecError": "._errors",
    "Stack": "._stack",
    "StartResult": "._context",
    "SyncAuthTestClient": "._clients",
    "SyncBackendTestClient": "._clients",
    "SyncRealServiceContext": "._context",
    "SyncWebSocketTestClient": "._clients",
    "TestClientFactory": "._clients",
    "TestResults": "._report",
    "TestenvError": "._errors",
    "User": "._clients",
    "WebSocketTestClient": "._clients",
    "environment_section": "._report",
    "junit_properties": "._report",
    "load_spec": "._spec",
    "release_shared": "._launcher",
    "run_sync": "._clients",
    "set_front_end_values": "._settings",
    "spec_hash": "._spec",
    "write_report": "._report",
}

__all__ = [
    "DEFAULT_DISCOVERY_DIR",
    "DISCOVERY_ENV",
    "AuthTestClient",
    "BackendTestClient",
    "ClusterUnreachableError",
    "ConfigurationError",
    "DevLauncher",
    "EnvironmentFailedError",
    "EnvironmentInfo",
    "EnvironmentNotFoundError",
    "EnvironmentView",
    "Environments",
    "LauncherConfig",
    "OperatorNotInstalledError",
    "PortForwardLostError",
    "ProvisioningTimeoutError",
    "RealServiceContext",
    "RealServiceTestReport",
    "RealServicesManager",
    "ServiceCache",
    "ServiceDiscovery",
    "ServiceInfo",
    "ServiceNotFoundError",
    "SpecError",
    "Stack",
    "StartResult",
    "SyncAuthTestClient",
    "SyncBackendTestClient",
    "SyncRealServiceContext",
    "SyncWebSocketTestClient",
    "TestClientFactory",
    "TestResults",
    "TestenvError",
    "User",
    "WebSocketTestClient",
    "__version__",
    "environment_section",
    "junit_properties",
    "load_spec",
    "release_shared",
    "run_sync",
    "set_front_end_values",
    "spec_hash",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from .api import PROJECT_VERSION

        return PROJECT_VERSION
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'testenv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
