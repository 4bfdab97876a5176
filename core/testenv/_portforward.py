"""In-process port-forwards from an OS-chosen local port to a ready pod of a service.

Each local TCP connection gets its own Kubernetes port-forward stream: a WebSocket to the
pod's ``portforward`` subresource (``v4.channel.k8s.io``: channel 0 carries the bytes,
channel 1 the errors, each opened by two bytes naming the port). Opening one costs a TCP
and TLS handshake, an upgrade through the API server and the kubelet, and the kubelet's
dial into the pod: most of a short request's time. So while connections keep arriving, the
forward opens the next stream ahead (a *spare*), and closes it unused after
:data:`SPARE_SECONDS`: an idle forward holds no connection to the service.

The target is a *pod selector*, not a fixed pod: when opening a stream to the current pod
fails (pod deleted, node gone), the forward asks again for the ready pods and re-targets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._errors import PortForwardLostError
from .api import DiscoveryRecord, pod_selector

log = logging.getLogger("testenv")

#: How long a stream opened ahead waits for the next local connection before it is closed
#: (well below the idle timeouts with which servers drop a silent new connection).
SPARE_SECONDS = 3.0
#: How many streams are kept open ahead while connections arrive (opened concurrently: one
#: ahead only hides one opening per connection, several overlap their handshakes).
SPARES = 2
#: Attempts to open a stream (re-reading the ready pods between them) before giving up.
OPEN_ATTEMPTS = 5
PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1


class ReadyPods:
    """The ready pods matching a selector; ``current`` is the one streams go to."""

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


class _Stream:
    """One open port-forward stream (its two port headers already read)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.opened = time.monotonic()

    @property
    def usable(self) -> bool:
        return self.ws.close_code is None and time.monotonic() - self.opened < SPARE_SECONDS


class PodPortForward:
    """Listen on 127.0.0.1 (a port the OS picks); pipe each accepted connection to ``port``
    of the current ready pod through a stream of its own."""

    def __init__(self, api: Any, pods: ReadyPods, port: int) -> None:
        self.api = api
        self.pods = pods
        self.port = port
        self.local_port = 0
        self._server: asyncio.Server | None = None
        #: Streams being opened or open ahead, oldest first.
        self._spares: collections.deque[asyncio.Task[_Stream]] = collections.deque()
        self._pipes: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Future[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.local_port = int(self._server.sockets[0].getsockname()[1])
        self._open_ahead()
        return self.local_port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        spares, self._spares = list(self._spares), collections.deque()
        for task in [*self._pipes, *spares]:
            task.cancel()
        await asyncio.gather(*self._pipes, *spares, return_exceptions=True)
        for task in spares:
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().ws.close()

    # -- streams ---------------------------------------------------------------------------
    async def _ws_target(self) -> tuple[str, dict[str, Any]]:
        auth = self.api.auth
        if not self.pods.current:
            await self.pods.async_ready_pods()
        if not self.pods.current:
            raise PortForwardLostError(
                f"no ready pod matches {self.pods.selector} in namespace {self.pods.namespace}"
            )
        server = urlsplit(auth.server)
        scheme = "wss" if server.scheme == "https" else "ws"
        path = (
            f"{server.path.rstrip('/')}/api/v1/namespaces/{self.pods.namespace}/pods/"
            f"{self.pods.current}/portforward?{urlencode({'ports': self.port})}"
        )
        options: dict[str, Any] = {
            "subprotocols": [PROTOCOL],
            "compression": None,
            "max_size": None,
            # The kubelet's WebSocket end does not answer pings reliably; the lease and the
            # kubelet's own idle timeout bound a stream's life instead.
            "ping_interval": None,
            "proxy": auth.proxy or True,
            "user_agent_header": "testenv",
        }
        if auth.token:
            options["additional_headers"] = {"Authorization": f"Bearer {auth.token}"}
        if scheme == "wss":
            context = await auth.ssl_context()
            options["ssl"] = ssl.create_default_context() if context is True else context
            if auth.tls_server_name:
                options["server_hostname"] = auth.tls_server_name
        return urlunsplit((scheme, server.netloc, path, "", "")), options

    async def _open(self) -> _Stream:
        """A new stream to the current pod: re-target another ready pod and retry when the
        pod is gone; re-authenticate once on 401/403."""
        problem = "no attempt"
        for attempt in range(OPEN_ATTEMPTS):
            url, options = await self._ws_target()
            try:
                ws = await connect(url, **options)
            except InvalidStatus as exc:
                status = exc.response.status_code
                problem = f"HTTP {status} from {url.split('?')[0]}"
                if status in (401, 403) and attempt == 0:
                    await self.api.auth.reauthenticate()
                    continue
            except (OSError, WebSocketException, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                try:
                    for _ in (DATA, ERROR):  # each channel first names its port
                        await ws.recv()
                    return _Stream(ws)
                except ConnectionClosed as exc:
                    problem = f"the stream closed at once ({exc})"
            self.pods.current = None
            await asyncio.sleep(0.1 * attempt)  # backoff between attempts, not a wait on state
        raise PortForwardLostError(
            f"cannot open a port-forward to port {self.port} of a pod matching "
            f"{self.pods.selector} in namespace {self.pods.namespace}: {problem}"
        )

    def _open_ahead(self) -> None:
        while len(self._spares) < SPARES:
            task = asyncio.create_task(self._open())
            task.add_done_callback(self._expire_spare)
            self._spares.append(task)

    def _expire_spare(self, task: asyncio.Task[_Stream]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        stream = task.result()

        def expire() -> None:
            if task in self._spares:  # still nobody's: close it
                self._spares.remove(task)
                closing = asyncio.ensure_future(stream.ws.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

        asyncio.get_running_loop().call_later(SPARE_SECONDS, expire)

    async def _take(self) -> _Stream:
        """The spare when it is (or is about to be) usable, else a new stream; either way
        the next one is opened ahead."""
        spare = self._spares.popleft() if self._spares else None
        self._open_ahead()
        if spare is not None:
            with contextlib.suppress(Exception):
                stream = await spare
                if stream.usable:
                    return stream
                await stream.ws.close()
        return await self._open()

    # -- piping ----------------------------------------------------------------------------
    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            stream = await self._take()
        except PortForwardLostError as exc:
            log.warning("testenv: %s", exc)
            writer.close()
            self._pipes.discard(task)
            return
        try:
            await self._pipe(reader, writer, stream.ws)
        finally:
            self._pipes.discard(task)
            writer.close()
            await stream.ws.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: ClientConnection
    ) -> None:
        async def upstream() -> None:
            while data := await reader.read(65536):
                await ws.send(b"\x00" + data)

        async def downstream() -> None:
            async for message in ws:
                if not isinstance(message, bytes) or not message:
                    continue
                if message[0] == DATA:
                    writer.write(message[1:])
                    await writer.drain()
                elif message[0] == ERROR:
                    log.warning(
                        "testenv: port-forward to %s port %s: %s",
                        self.pods.current,
                        self.port,
                        message[1:].decode(errors="replace"),
                    )
                    return

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class ServiceForward:
    """The port-forwards of one service: one per declared port, to one ready pod."""

    def __init__(self, api: Any, namespace: str, env_name: str, remote: DiscoveryRecord) -> None:
        self.remote = remote
        self.pods = ReadyPods(api, namespace, pod_selector(env_name, remote.name))
        #: Port name -> local port.
        self.local_ports: dict[str, int] = {}
        self._forwards: list[PodPortForward] = []
        self.api = api

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
            forward = PodPortForward(self.api, self.pods, port.port)
            self._forwards.append(forward)
            self.local_ports[port.name] = await forward.start()
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
