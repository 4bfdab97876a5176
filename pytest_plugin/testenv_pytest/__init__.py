"""testenv's pytest plugin: tests against real services, provisioned per test session.

In real mode the plugin creates a ``TestEnvironment`` in Kubernetes, waits for it to become
Ready, port-forwards every service to a local port and hands out typed clients; in local mode
it runs the same services as local processes. Use the ``real_services`` fixture::

    async def test_websocket_auth_flow(real_services):
        token = await real_services.auth_client.login("test@example.com", "password")
        ws = await real_services.websocket_factory(token)
        await ws.connect()
        await ws.send_chat("Hello")
        assert (await ws.receive())["type"] == "chat_response"

Options: ``pytest --help``, group "testenv" (each also an ini key and a TESTENV_* variable).
The plugin is a thin layer over the core library: import clients, errors and the plan's names
from :mod:`testenv`. They are re-exported here, loaded on first access so that loading the
plugin stays cheap.
"""

from __future__ import annotations

from typing import Any

_REEXPORTED = (
    "AuthTestClient",
    "BackendTestClient",
    "ClusterUnreachableError",
    "EnvironmentFailedError",
    "EnvironmentInfo",
    "OperatorNotInstalledError",
    "PortForwardLostError",
    "ProvisioningTimeoutError",
    "RealServiceContext",
    "ServiceDiscovery",
    "ServiceInfo",
    "SyncAuthTestClient",
    "SyncBackendTestClient",
    "SyncRealServiceContext",
    "SyncWebSocketTestClient",
    "TestClientFactory",
    "TestenvError",
    "User",
    "WebSocketTestClient",
)
__all__ = list(_REEXPORTED)


def __getattr__(name: str) -> Any:
    if name in _REEXPORTED:
        import testenv

        return getattr(testenv, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
