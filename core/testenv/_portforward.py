"""In-process port-forwards (kr8s) from an OS-chosen local port to a ready pod of a service.

Each TCP connection opens its own Kubernetes port-forward stream. The target is a *pod
selector*, not a fixed pod: when a stream to the current pod fails (pod deleted, node gone),
kr8s asks again for the ready pods and re-targets another one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
from kr8s.asyncio.portforward import PortForward
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from ._errors import PortForwardLostError
from ._local import free_port
from .api import DiscoveryRecord, pod_selector


class ReadyPods:
    """A kr8s ``APIObjectWithPods``: the ready pods matching a selector."""

    def __init__(self, api: Any, namespace: str, selector: dict[str, str]) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.current: str | None = None

    async def async_ready_pods(self) -> list[Any]:
        pods = [
            pod
            async for pod in self.api.async_get(
                "pods", namespace=self.namespace, label_selector=self.selector
            )
        ]
        ready = [
            p for p in pods if p.metadata.get("deletionTimestamp") is None and await p.async_ready()
        ]
        self.current = ready[0].name if ready else None
        return ready[:1]

    async def ready_pods(self) -> list[Any]:
        return await self.async_ready_pods()


class ServiceForward:
    """The port-forwards of one service: one per declared port, to one ready pod."""

    def __init__(self, api: Any, namespace: str, env_name: str, remote: DiscoveryRecord) -> None:
        self.remote = remote
        self.pods = ReadyPods(api, namespace, pod_selector(env_name, remote.name))
        #: Port name -> local port.
        self.local_ports: dict[str, int] = {}
        self._forwards: list[Any] = []

    @property
    def local_port(self) -> int:
        """The local end of the first port's forward."""
        return self.local_ports.get(self.remote.port_named(None).name, 0)

    async def start(self) -> int:
        if not await self.pods.async_ready_pods():
            raise PortForwardLostError(
                f"no ready pod for service {self.remote.name!r} (selector "
                f"{self.pods.selector}) in namespace {self.pods.namespace}"
            )
        ports = self.remote.ports or [self.remote.port_named(None)]
        for port in ports:
            # The OS picks the port; kr8s binds it again right away (local_port=<int>).
            forward = PortForward(cast(Any, self.pods), port.port, local_port=free_port())
            self._forwards.append(forward)
            self.local_ports[port.name] = int(await forward.start())
        return self.local_port

    def record(self) -> DiscoveryRecord:
        """The in-cluster record, rewritten to the local ends of the forwards."""
        return localize(self.remote, "127.0.0.1", self.local_ports)

    async def stop(self) -> None:
        forwards, self._forwards = self._forwards, []
        for forward in forwards:
            await forward.stop()


def _rewrite(url: str | None, host: str, port: int) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{host}:{port}" if user else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def localize(record: DiscoveryRecord, host: str, ports: int | Mapping[str, int]) -> DiscoveryRecord:
    """``record`` with its addresses at ``host``: ``ports`` maps port names to local ports
    (an int: the first port's)."""
    if isinstance(ports, int):
        ports = {record.port_named(None).name: ports}
    first = record.port_named(None)
    main = ports.get(first.name, record.port)
    return record.model_copy(
        update={
            "host": host,
            "port": main,
            "base_url": _rewrite(record.base_url, host, main),
            "health_url": _rewrite(record.health_url, host, main),
            "ws_url": _rewrite(record.ws_url, host, main),
            "url": _rewrite(record.url, host, main),
            "ports": [
                p.model_copy(
                    update={
                        "port": ports.get(p.name, p.port),
                        "url": _rewrite(p.url, host, ports.get(p.name, p.port)),
                    }
                )
                for p in record.ports
            ],
        }
    )


class _Unhealthy(Exception):
    """A health answer that is not 2xx (retried like a transport error)."""


async def verify(record: DiscoveryRecord, seconds: float = 30.0) -> dict[str, Any]:
    """GET the health URL through the forward until it answers 2xx (PortForwardLostError).
    A service without an HTTP health URL (TCP ports, exec probes) was checked by its
    readiness probe in the cluster: nothing more is checked here."""
    if record.health_url is None:
        return {"url": None, "ok": True, "checked": "readiness probe in the cluster"}
    health_url = record.health_url
    retrying = AsyncRetrying(
        stop=stop_after_delay(seconds),
        wait=wait_exponential(multiplier=0.05, max=1.0),
        retry=retry_if_exception_type((httpx.TransportError, _Unhealthy)),
        reraise=True,
    )
    last = "no attempt"
    async with httpx.AsyncClient(timeout=5.0) as client:
        try:
            async for attempt in retrying:
                with attempt:
                    t0 = time.monotonic()
                    response = await client.get(health_url)
                    if not response.is_success:
                        raise _Unhealthy(f"HTTP {response.status_code}")
                    return {
                        "url": record.health_url,
                        "status_code": response.status_code,
                        "ok": True,
                        "latency_ms": round((time.monotonic() - t0) * 1000, 1),
                    }
        except (httpx.TransportError, _Unhealthy) as exc:
            last = f"{type(exc).__name__}: {exc}"
    raise PortForwardLostError(
        f"service {record.name!r}: health check {record.health_url} through the port-forward "
        f"failed for {seconds:.0f}s ({last})"
    )
