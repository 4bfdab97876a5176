"""testenv pytest plugin: tests against real services, provisioned per test session.

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
"""

from ._context import EnvironmentInfo, RealServiceContext, SyncRealServiceContext
from ._errors import (
    ClusterUnreachableError,
    EnvironmentFailedError,
    OperatorNotInstalledError,
    PortForwardLostError,
    ProvisioningTimeoutError,
    TestenvError,
)
from .clients import (
    AuthTestClient,
    BackendTestClient,
    SyncAuthTestClient,
    SyncBackendTestClient,
    SyncWebSocketTestClient,
    TestClientFactory,
    User,
    WebSocketTestClient,
)
from .discovery import ServiceDiscovery, ServiceInfo

__all__ = [
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
]
