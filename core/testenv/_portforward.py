"""In-process port-forwards from an OS-chosen local port to a ready pod of a service.

Two ways to carry a local connection to the pod, the first one the cluster supports:

- **A tunnel** (what kubectl does, Kubernetes >= 1.31): one WebSocket to the pod's
  ``portforward`` subresource carrying SPDY; each local connection is a pair of streams in
  it, opened with two frames (``_tunnel``, ``_spdy``).
- **A WebSocket per connection** (``v4.channel.k8s.io``: channel 0 carries the bytes,
  channel 1 the errors, each opened by two bytes naming the port). Opening one costs a TCP
  and TLS handshake and an upgrade through the API server and the kubelet, so while
  connections keep arriving the forward opens the next ones ahead (*spares*) and closes
  them unused after :data:`SPARE_SECONDS`: an idle forward holds no connection to the
  service.

The target is a *pod selector*, not a fixed pod: when the tunnel or a stream to the current
pod fails (pod deleted, node gone), the forward asks again for the ready pods and
re-targets.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from kr8s.asyncio.objects import Pod
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    WebSocketException,
)

from ._errors import PortForwardLostError
from ._spdy import TUNNEL_PROTOCOL
from ._tls import client_tls
from ._tunnel import SpdyTunnel, TunnelConnection, TunnelStream, spawn
from .api import DiscoveryRecord, pod_selector

log = logging.getLogger("testenv")

#: How long a stream opened ahead waits for the next local connection before it is closed
#: (well below the idle timeouts with which servers drop a silent new connection).
SPARE_SECONDS = 3.0
#: How many streams are kept open ahead while connections arrive (opened concurrently: one
#: ahead only hides one opening per connection, several overlap their handshakes).
SPARES = 2
#: How much of what a client sent the tunnel keeps until the first answer, to send it again
#: when the kubelet fails the stream before anything came back (a pod that went away).
REPLAY_LIMIT = 1 << 20
#: Attempts to open a stream (re-reading the ready pods between them) before giving up.
OPEN_ATTEMPTS = 5
PROTOCOL = "v4.channel.k8s.io"
DATA, ERROR = 0, 1


def serving(pod: Mapping[str, Any]) -> bool:
    """A pod that takes connections: Ready as listed (no second read) and not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def pods_of(
    api: Any, namespace: str | None, selector: dict[str, str]
) -> list[dict[str, Any]]:
    """The pods matching ``selector`` in ``namespace``, as listed (one request)."""
    listed = api.async_get(Pod, namespace=namespace, label_selector=selector)
    return [pod.raw async for pod in listed]


#: What a kr8s auth builds its TLS context from (a new context when one changes).
_TLS_SOURCES = (
    "client_cert_file",
    "client_key_file",
    "server_ca_file",
    "_insecure_skip_tls_verify",
)
#: kr8s auth -> (what its context was built from, the context).
_API_TLS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], ssl.SSLContext]] = (
    weakref.WeakKeyDictionary()
)


async def api_tls(auth: Any) -> ssl.SSLContext:
    """The TLS context of the WebSockets to the API server, built once per credentials:
    kr8s builds a new one on every call, reading the key and certificates again (some ms
    per connection opened)."""
    source = tuple(getattr(auth, a, None) for a in _TLS_SOURCES)
    cached = _API_TLS.get(auth)
    if cached is not None and cached[0] == source:
        return cached[1]
    built: ssl.SSLContext | bool = await auth.ssl_context()
    # True: no certificates in the kubeconfig, the default verification.
    context = built if isinstance(built, ssl.SSLContext) else client_tls()
    _API_TLS[auth] = (source, context)
    return context


class ReadyPods:
    """The ready pods matching a selector; ``current`` is the one streams go to."""

    def __init__(self, api: Any, namespace: str, selector: dict[str, str]) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.current: str | None = None

    async def async_ready_pods(self) -> list[dict[str, Any]]:
        """Read the pods again and choose one (:meth:`choose`)."""
        return self.choose(await pods_of(self.api, self.namespace, self.selector))

    def _selects(self, pod: Mapping[str, Any]) -> bool:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in self.selector.items())

    def choose(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of ``pods`` (any pods: those the selector does not match are left), the first
        that serves becomes :attr:`current`; returns it (in a list: none, or one)."""
        ready = [p for p in pods if serving(p) and self._selects(p)]
        self.current = ready[0]["metadata"]["name"] if ready else None
        return ready[:1]


class _Stream:
    """One open per-connection stream (its two port headers already read)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.opened = time.monotonic()

    @property
    def usable(self) -> bool:
        return self.ws.close_code is None and time.monotonic() - self.opened < SPARE_SECONDS


class PodPortForward:
    """Listen on 127.0.0.1 (a port the OS picks); pipe each accepted connection to ``port``
    of the current ready pod, through the tunnel or else a stream of its own.

    ``tunnel=False`` never tries the tunnel (per-connection streams only)."""

    def __init__(self, api: Any, pods: ReadyPods, port: int, *, tunnel: bool = True) -> None:
        self.api = api
        self.pods = pods
        self.port = port
        self.local_port = 0
        self._server: asyncio.Server | None = None
        #: None: not tried yet; False: this cluster has no tunnel (per-connection streams).
        self._tunnel_works: bool | None = None if tunnel else False
        self._tunnel: SpdyTunnel | None = None
        self._tunnel_lock = asyncio.Lock()
        #: Per-connection streams being opened or open ahead, oldest first.
        self._spares: collections.deque[asyncio.Task[_Stream]] = collections.deque()
        self._pipes: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def mode(self) -> str:
        """``tunnel``, ``streams`` or ``unknown`` (nothing opened yet)."""
        return {True: "tunnel", False: "streams", None: "unknown"}[self._tunnel_works]

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.local_port = int(self._server.sockets[0].getsockname()[1])
        if self._tunnel_works is False:
            self._open_ahead()
        else:  # ready before the first connection (and says which way connections go)
            await self._ensure_tunnel()
        return self.local_port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        spares, self._spares = list(self._spares), collections.deque()
        for task in [*self._pipes, *spares, *self._background]:
            task.cancel()
        await asyncio.gather(*self._pipes, *spares, *self._background, return_exceptions=True)
        for task in spares:
            if task.done() and not task.cancelled() and task.exception() is None:
                await task.result().ws.close()
        if self._tunnel is not None:
            await self._tunnel.close()

    # -- connecting ------------------------------------------------------------------------
    async def _ws_target(self, *, tunnel: bool) -> tuple[str, dict[str, Any]]:
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
            f"{self.pods.current}/portforward"
        )
        query = "" if tunnel else urlencode({"ports": self.port})
        headers = {"Authorization": f"Bearer {auth.token}"} if auth.token else {}
        options: dict[str, Any] = {
            "compression": None,
            "max_size": None,
            # No keepalive pings: a late pong would close a connection a test still holds;
            # the kubelet's streaming idle timeout ends an abandoned one.
            "ping_interval": None,
            "proxy": auth.proxy or True,
            "user_agent_header": "testenv",
        }
        if tunnel:
            headers["Sec-WebSocket-Protocol"] = TUNNEL_PROTOCOL
            options["create_connection"] = TunnelConnection
        else:
            options["subprotocols"] = [PROTOCOL]
        options["additional_headers"] = headers
        if scheme == "wss":
            options["ssl"] = await api_tls(auth)
            if auth.tls_server_name:
                options["server_hostname"] = auth.tls_server_name
        return urlunsplit((scheme, server.netloc, path, query, "")), options

    async def _connect(self, *, tunnel: bool, attempts: int) -> ClientConnection:
        """A WebSocket to the current pod's portforward: re-target another ready pod and
        retry when the pod is gone; re-authenticate once on 401/403."""
        problem = "no attempt"
        for attempt in range(attempts):
            url, options = await self._ws_target(tunnel=tunnel)
            try:
                return await connect(url, **options)
            except InvalidStatus as exc:
                status = exc.response.status_code
                problem = f"HTTP {status} from {url.split('?')[0]}"
                if status in (401, 403) and attempt == 0:
                    await self.api.auth.reauthenticate()
                    continue
            except (OSError, WebSocketException, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            self.pods.current = None
            if attempt + 1 < attempts:
                await asyncio.sleep(0.1 * attempt)  # backoff between attempts
        raise PortForwardLostError(
            f"cannot open a port-forward to port {self.port} of a pod matching "
            f"{self.pods.selector} in namespace {self.pods.namespace}: {problem}"
        )

    # -- the tunnel ------------------------------------------------------------------------
    async def _ensure_tunnel(self) -> SpdyTunnel | None:
        """The open tunnel, opened (again) if need be; None when this cluster has none."""
        async with self._tunnel_lock:
            if self._tunnel is not None:
                if self._tunnel.alive:
                    return self._tunnel
                self._tunnel = None
                self.pods.current = None  # it closed: the pod may be gone, look again
            if self._tunnel_works is False:
                return None
            try:
                ws = await self._connect(tunnel=True, attempts=2)
            except PortForwardLostError as exc:
                if self._tunnel_works is None:  # never worked here: use streams
                    log.debug("testenv: no port-forward tunnel (%s); streams instead", exc)
                    self._tunnel_works = False
                    return None
                raise
            if ws.subprotocol != TUNNEL_PROTOCOL or not isinstance(ws, TunnelConnection):
                await ws.close()
                self._tunnel_works = False
                return None
            self._tunnel_works = True
            self._tunnel = SpdyTunnel(ws, self._tunnel_failed)
            return self._tunnel

    def _tunnel_failed(self, tunnel: SpdyTunnel, message: str) -> None:
        """The kubelet could not reach the port for one connection. Its usual reason is a
        pod that is gone (the kubelet keeps the tunnel and fails each new stream), so the
        tunnel is retired (its open connections finish) and the next connection opens a
        new one to a ready pod; the connection that failed is replayed there when nothing
        had come back yet (see :meth:`_pipe_tunnel`)."""
        log.info("testenv: port-forward to %s port %s: %s", self.pods.current, self.port, message)
        tunnel.retire()
        if self._tunnel is tunnel:
            self._tunnel = None
            self.pods.current = None

    # -- per-connection streams ------------------------------------------------------------
    async def _open(self) -> _Stream:
        ws = await self._connect(tunnel=False, attempts=OPEN_ATTEMPTS)
        try:
            for _ in (DATA, ERROR):  # each channel first names its port
                await ws.recv()
        except ConnectionClosed as exc:
            self.pods.current = None
            raise PortForwardLostError(
                f"the port-forward to port {self.port} of pod {self.pods.current} closed at "
                f"once ({exc})"
            ) from exc
        return _Stream(ws)

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
                spawn(self._background, stream.ws.close())

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
            tunnel = await self._ensure_tunnel()
            if tunnel is not None:
                await self._pipe_tunnel(reader, writer, await tunnel.open(self.port))
            else:
                stream = await self._take()
                try:
                    await self._pipe(reader, writer, stream.ws)
                finally:
                    await stream.ws.close()
        except (PortForwardLostError, ConnectionClosed) as exc:
            log.warning("testenv: %s", exc)
        except OSError as exc:  # the local client went away: nothing to say
            log.debug("testenv: local connection to port %s: %s", self.local_port, exc)
        except asyncio.CancelledError:
            # stop(): end quietly (asyncio's stream callback of Python 3.11 reports a
            # cancelled handler task as an error).
            pass
        finally:
            self._pipes.discard(task)
            writer.close()

    async def _pipe_tunnel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: TunnelStream
    ) -> None:
        """Pipe until the remote end is done. A stream the kubelet fails before anything
        came back (the pod went away since the tunnel was opened) is replaced once by one
        in a new tunnel, and what the client had sent is sent again: it never reached a
        server."""
        sent = bytearray()  # what the client sent, while a replay is still possible
        replayable = True
        switching = asyncio.Lock()  # no byte sent both by a replay and by upstream
        current = stream
        client_done = False

        def deliver(data: bytes) -> None:
            nonlocal replayable
            replayable = False
            sent.clear()
            if not writer.transport.is_closing():
                writer.write(data)  # buffered by the transport: the tunnel never waits

        async def upstream() -> None:
            nonlocal replayable, client_done
            while data := await reader.read(65536):
                async with switching:
                    if replayable:
                        sent.extend(data)
                        if len(sent) > REPLAY_LIMIT:
                            replayable = False
                            sent.clear()
                    await current.send(data)
            async with switching:
                client_done = True
                await current.finish()

        current.attach(deliver)
        up = asyncio.create_task(upstream())
        try:
            for attempt in range(2):
                await asyncio.wait([up, current.done], return_when=asyncio.FIRST_COMPLETED)
                if up.done() and not up.cancelled() and up.exception() is None:
                    await current.done  # half-closed by the client: the answer may still come
                if not (current.error and replayable and attempt == 0):
                    break
                async with switching:
                    tunnel = await self._ensure_tunnel()
                    if tunnel is None:
                        break
                    await current.close()
                    current = await tunnel.open(self.port)
                    current.attach(deliver)
                    if sent:
                        await current.send(bytes(sent))
                    if client_done:
                        await current.finish()
            if current.error:
                log.warning(
                    "testenv: port-forward to port %s of %s: %s",
                    self.port,
                    self.pods.selector,
                    current.error,
                )
            if not writer.transport.is_closing():
                await writer.drain()
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
            await current.close()

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

    async def start(self, listed: list[dict[str, Any]] | None = None) -> int:
        """Forward every port; ``listed``: pods just read (else they are read here)."""
        chosen = self.pods.choose(listed) if listed is not None else None
        if not chosen and not await self.pods.async_ready_pods():
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

    @property
    def mode(self) -> str:
        """How connections are carried: ``tunnel``, ``streams`` (or ``unknown``)."""
        return self._forwards[0].mode if self._forwards else "unknown"

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
    async with httpx.AsyncClient(timeout=5.0, verify=client_tls()) as client:
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
