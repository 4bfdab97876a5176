"""In-process port-forwards (kr8s) from an OS-chosen local port to a ready pod of a service.

Each TCP connection opens its own Kubernetes port-forward stream. The target is a *pod
selector*, not a fixed pod: when a stream to the current pod fails (pod deleted, node gone),
kr8s asks again for the ready pods and re-targets another one.
"""

from __future__ import annotations

import time
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
    """One service's port-forward."""

    def __init__(self, api: Any, namespace: str, env_name: str, remote: DiscoveryRecord) -> None:
        self.remote = remote
        self.pods = ReadyPods(api, namespace, pod_selector(env_name, remote.name))
        self.local_port = 0
        self._forward: Any = None

    async def start(self) -> int:
        if not await self.pods.async_ready_pods():
            raise PortForwardLostError(
                f"no ready pod for service {self.remote.name!r} (selector "
                f"{self.pods.selector}) in namespace {self.pods.namespace}"
            )
        # The OS picks the port; kr8s binds it again right away (local_port=<int>).
        self._forward = PortForward(cast(Any, self.pods), self.remote.port, local_port=free_port())
        self.local_port = int(await self._forward.start())
        return self.local_port

    def record(self) -> DiscoveryRecord:
        """The in-cluster record, rewritten to the local end of the forward."""
        return localize(self.remote, "127.0.0.1", self.local_port)

    async def stop(self) -> None:
        if self._forward is not None:
            await self._forward.stop()
            self._forward = None


def localize(record: DiscoveryRecord, host: str, port: int) -> DiscoveryRecord:
    def rewrite(url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))

    return record.model_copy(
        update={
            "host": host,
            "port": port,
            "base_url": rewrite(record.base_url),
            "health_url": rewrite(record.health_url),
            "ws_url": rewrite(record.ws_url),
        }
    )


class _Unhealthy(Exception):
    """A health answer that is not 2xx (retried like a transport error)."""


async def verify(record: DiscoveryRecord, seconds: float = 30.0) -> dict[str, Any]:
    """GET the health URL through the forward until it answers 2xx (PortForwardLostError)."""
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
                    response = await client.get(record.health_url)
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
