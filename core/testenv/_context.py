"""What the fixtures hand out, and the contract between the launcher and its two providers
(a TestEnvironment in Kubernetes, or local processes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._clients import (
    AuthTestClient,
    BackendTestClient,
    SyncAuthTestClient,
    SyncBackendTestClient,
    SyncWebSocketTestClient,
    TestClientFactory,
    WebSocketTestClient,
)
from ._discovery import ServiceDiscovery, ServiceInfo
from .api import DiscoveryRecord

Progress = Callable[[str], None]


@dataclass
class EnvironmentInfo:
    """The environment behind the fixtures."""

    mode: str  # "real" or "local"
    name: str
    namespace: str | None = None
    context: str | None = None
    reused: bool = False
    kept: bool = False
    shared: bool = False
    spec_hash: str | None = None
    #: the warm pool (TestEnvironmentPool) the environment was claimed from
    pool: str | None = None
    #: seconds from the start of provisioning until the services answered their health check
    startup_time: float | None = None
    #: phases: status.timings of the environment (real) or per-service start times (local)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class StartResult:
    records: dict[str, DiscoveryRecord]
    environment: EnvironmentInfo
    health: dict[str, dict[str, Any]] = field(default_factory=dict)


class Provider(Protocol):
    """Brings the services up and down (runs in the launcher's background loop)."""

    async def start(self, progress: Progress) -> StartResult: ...

    async def stop(self) -> None: ...

    async def forensics(self) -> str: ...

    async def secret(self, name: str) -> str: ...

    async def reset(self, progress: Progress) -> None: ...


@dataclass(kw_only=True)
class _ServicesContext:
    """What both contexts hold besides their clients. The plan builds a context from its three
    clients only; the plugin's fixtures fill in the rest."""

    discovery: ServiceDiscovery | None = None
    environment: EnvironmentInfo | None = None
    factory: TestClientFactory | None = None

    @property
    def services(self) -> dict[str, ServiceInfo]:
        """Every known service's endpoint (empty without a discovery)."""
        if self.discovery is None:
            return {}
        return {n: self.discovery.get_service_info_sync(n) for n in self.discovery.services()}


@dataclass(kw_only=True)
class RealServiceContext(_ServicesContext):
    """The ``real_services`` fixture: typed clients for the running services."""

    auth_client: AuthTestClient
    backend_client: BackendTestClient
    #: ``await websocket_factory(token)`` -> a not yet connected :class:`WebSocketTestClient`
    websocket_factory: Callable[[str], Awaitable[WebSocketTestClient]]


@dataclass(kw_only=True)
class SyncRealServiceContext(_ServicesContext):
    """The ``real_services_sync`` fixture: blocking clients for the running services."""

    auth_client: SyncAuthTestClient
    backend_client: SyncBackendTestClient
    #: ``websocket_factory(token)`` -> a not yet connected :class:`SyncWebSocketTestClient`
    websocket_factory: Callable[[str], SyncWebSocketTestClient]
