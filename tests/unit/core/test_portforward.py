"""The forwarder against a stand-in for the API server's port-forward WebSocket end, which
pipes to a real local TCP echo server. Both ways it speaks: the SPDY tunnel (every local
connection a pair of streams in one WebSocket) and a WebSocket per connection
(``v4.channel.k8s.io``: each channel first names its port; channel 0 data, 1 errors). Bytes
both ways, one WebSocket for many connections, streams opened ahead and reused, closed when
unused, never closed under a connection using them, errors, re-authentication, falling back
when the cluster has no tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from testenv import _portforward, _spdy
from testenv._errors import PortForwardLostError
from testenv._portforward import PodPortForward, ReadyPods, serving
from testenv._tunnel import TunnelConnection

PORT = 8080


@dataclass
class Kubelet:
    """Counts the WebSockets opened and the ones still open; ``refuse`` answers every
    upgrade with that HTTP status; ``fail_dial`` answers with the kubelet's error instead of
    piping; ``tunnel``: whether it offers the SPDY tunnel."""

    echo_port: int
    url: str = ""
    opened: int = 0
    open_now: int = 0
    refuse: int | None = None
    fail_dial: bool = False
    tunnel: bool = True
    #: Tunnelled connections to refuse (as the kubelet does once the pod is gone).
    refuse_streams: int = 0
    #: Tunnelled connections piped to the echo server.
    tunnelled: int = 0
    sockets: list[ServerConnection] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, predicate: Any) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), 10)

    async def _count(self, delta: int) -> None:
        async with self.changed:
            self.open_now += delta
            self.opened += max(delta, 0)
            self.changed.notify_all()

    def check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.tokens.append(request.headers.get("Authorization"))
        if self.refuse is not None:
            return connection.respond(self.refuse, "refused\n")
        if request.headers.get("Sec-WebSocket-Protocol") == _spdy.TUNNEL_PROTOCOL:
            assert request.path.endswith("/portforward")
        else:
            assert request.path.endswith(f"/portforward?ports={PORT}")
        return None

    def wants_tunnel(self, request: Request) -> bool:
        return self.tunnel and request.headers.get("Sec-WebSocket-Protocol") == (
            _spdy.TUNNEL_PROTOCOL
        )

    def answer(self, connection: ServerConnection, request: Request, response: Response) -> None:
        if self.wants_tunnel(request):
            response.headers["Sec-WebSocket-Protocol"] = _spdy.TUNNEL_PROTOCOL

    async def handler(self, ws: ServerConnection) -> None:
        await self._count(1)
        self.sockets.append(ws)
        try:
            assert ws.request is not None
            if self.wants_tunnel(ws.request):
                await self.tunnel_handler(ws)
                return
            if "?ports=" not in ws.request.path:  # an older kubelet: no port, no stream
                await ws.close(1011, "no ports")
                return
            header = struct.pack("<H", PORT)
            await ws.send(b"\x00" + header)
            await ws.send(b"\x01" + header)
            if self.fail_dial:
                await ws.send(b"\x01error forwarding port 8080: connection refused")
                return
            reader, writer = await asyncio.open_connection("127.0.0.1", self.echo_port)

            async def down() -> None:
                while data := await reader.read(65536):
                    await ws.send(b"\x00" + data)

            pump = asyncio.create_task(down())
            try:
                async for message in ws:
                    assert isinstance(message, bytes) and message[0] == 0
                    writer.write(message[1:])
                    await writer.drain()
            finally:
                pump.cancel()
                writer.close()
        finally:
            await self._count(-1)

    async def tunnel_handler(self, ws: ServerConnection) -> None:
        """SPDY: an error and a data stream per connection, tied by their request id."""
        frames, inflate = _spdy.FrameReader(), zlib.decompressobj()
        error_streams: dict[str, int] = {}
        writers: dict[int, asyncio.StreamWriter] = {}
        pumps: list[asyncio.Task[None]] = []

        async def pump(data_id: int, error_id: int, reader: asyncio.StreamReader) -> None:
            while chunk := await reader.read(65536):
                await ws.send(_spdy.data_frame(data_id, chunk))
            await ws.send(
                _spdy.data_frame(data_id, fin=True) + _spdy.data_frame(error_id, fin=True)
            )

        try:
            async for message in ws:
                assert isinstance(message, bytes)
                for frame in frames.feed(message):
                    if frame.control and frame.type == _spdy.SYN_STREAM:
                        headers = _spdy.parse_header_block(inflate, frame.data[10:])
                        assert headers["port"] == str(PORT)
                        if headers["streamtype"] == "error":
                            assert frame.fin  # the client never writes to it
                            error_streams[headers["requestid"]] = frame.stream_id
                            continue
                        error_id = error_streams[headers["requestid"]]
                        if self.fail_dial or self.refuse_streams > 0:
                            self.refuse_streams = max(0, self.refuse_streams - 1)
                            refused = b"error forwarding port 8080: connection refused"
                            await ws.send(_spdy.data_frame(error_id, refused, fin=True))
                            continue
                        reader, writer = await asyncio.open_connection("127.0.0.1", self.echo_port)
                        writers[frame.stream_id] = writer
                        self.tunnelled += 1
                        pumps.append(asyncio.create_task(pump(frame.stream_id, error_id, reader)))
                    elif not frame.control and frame.stream_id in writers:
                        writer = writers[frame.stream_id]
                        writer.write(frame.data)
                        if frame.fin:
                            writer.write_eof()
        finally:
            for task in pumps:
                task.cancel()
            for writer in writers.values():
                writer.close()


@dataclass
class Auth:
    server: str
    token: str | None = "t0"
    proxy: str | None = None
    tls_server_name: str | None = None
    reauthenticated: int = 0

    async def ssl_context(self) -> bool:
        return True

    async def reauthenticate(self) -> None:
        self.reauthenticated += 1
        self.token = f"t{self.reauthenticated}"


@dataclass
class Pod:
    name: str = "pod-0"
    raw: dict[str, Any] = field(
        default_factory=lambda: {
            "metadata": {"name": "pod-0", "labels": {"app": "x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
    )


@dataclass
class Api:
    auth: Auth

    async def async_get(self, *args: Any, **kwargs: Any) -> AsyncIterator[Pod]:
        yield Pod()  # the ready pods, when the forward looks again


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class LenientConnection(ServerConnection):
    """Like the API server, takes ``SPDY/3.1+portforward.k8s.io`` (not an RFC 7230 token,
    which websockets' server refuses) and leaves the answer to ``Kubelet.answer``."""

    def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.process_subprotocol = lambda headers: None  # type: ignore[method-assign]
        super().__init__(protocol, *args, **kwargs)


@contextlib.asynccontextmanager
async def running_kubelet() -> AsyncIterator[Kubelet]:
    """In the test's own loop (an async fixture may run in another)."""
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    k = Kubelet(echo_port=echo_server.sockets[0].getsockname()[1])
    async with serve(
        k.handler,
        "127.0.0.1",
        0,
        process_request=k.check,
        process_response=k.answer,
        create_connection=LenientConnection,
    ) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        k.url = f"http://127.0.0.1:{port}"
        yield k
    echo_server.close()


def forward_to(kubelet: Kubelet, *, tunnel: bool = False) -> PodPortForward:
    api = Api(Auth(server=kubelet.url))
    pods = ReadyPods(api, "ns", {"app": "x"})
    pods.current = "pod-0"
    return PodPortForward(api, pods, PORT, tunnel=tunnel)


async def round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    writer.close()
    return got


async def test_bytes_go_both_ways_and_each_connection_gets_a_stream_of_its_own() -> None:
    async with running_kubelet() as kubelet:
        forward = forward_to(kubelet)
        port = await forward.start()
        try:
            big = bytes(range(256)) * 4096  # 1 MiB: several frames each way
            assert await round_trip(port, big) == big
            for i in range(5):
                assert await round_trip(port, f"hello {i}".encode()) == f"hello {i}".encode()
            # 6 connections, 6 streams used, and at most SPARES more opened ahead.
            assert 6 <= kubelet.opened <= 6 + _portforward.SPARES
            assert kubelet.tokens[0] == "Bearer t0"
        finally:
            await forward.stop()
        await kubelet.wait_for(lambda: kubelet.open_now == 0)


async def test_a_stream_is_opened_ahead_and_closed_when_nobody_uses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_kubelet() as kubelet:
        monkeypatch.setattr(_portforward, "SPARE_SECONDS", 0.2)
        monkeypatch.setattr(_portforward, "SPARES", 1)
        forward = forward_to(kubelet)
        await forward.start()
        try:
            # Opened ahead before any connection arrives...
            await kubelet.wait_for(lambda: kubelet.opened == 1)
            # ... and closed unused: an idle forward holds no connection to the service.
            await kubelet.wait_for(lambda: kubelet.open_now == 0)
        finally:
            await forward.stop()


async def test_the_spare_timer_never_closes_a_stream_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_kubelet() as kubelet:
        monkeypatch.setattr(_portforward, "SPARE_SECONDS", 0.2)
        monkeypatch.setattr(_portforward, "SPARES", 1)
        forward = forward_to(kubelet)
        port = await forward.start()
        try:
            await kubelet.wait_for(lambda: kubelet.opened == 1)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"first")
            assert await reader.readexactly(5) == b"first"
            # Held until the next spare has opened and expired: our stream's own timer (it was
            # opened ahead too, earlier) has fired by then.
            await kubelet.wait_for(lambda: kubelet.opened >= 2 and kubelet.open_now == 1)
            writer.write(b"still here")
            assert await reader.readexactly(10) == b"still here"
            writer.close()
        finally:
            await forward.stop()


async def test_an_error_on_the_error_channel_closes_the_local_connection() -> None:
    async with running_kubelet() as kubelet:
        kubelet.fail_dial = True
        forward = forward_to(kubelet)
        port = await forward.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"anyone?")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing sent
            writer.close()
        finally:
            await forward.stop()


async def test_refused_upgrades_reauthenticate_once_then_name_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_kubelet() as kubelet:
        monkeypatch.setattr(_portforward, "OPEN_ATTEMPTS", 2)
        kubelet.refuse = 401
        forward = forward_to(kubelet)
        with pytest.raises(PortForwardLostError, match=r"HTTP 401 .*pods/pod-0/portforward"):
            await forward._open()
        assert forward.api.auth.reauthenticated == 1
        assert kubelet.tokens[-1] == "Bearer t1"  # the second attempt carried the new token


# -- the tunnel ---------------------------------------------------------------------------


async def test_the_tunnel_carries_every_connection_in_one_websocket() -> None:
    async with running_kubelet() as kubelet:
        forward = forward_to(kubelet, tunnel=True)
        port = await forward.start()
        try:
            for i in range(6):
                assert await round_trip(port, f"hello {i}".encode()) == f"hello {i}".encode()
            big = bytes(range(256)) * 4096
            answers = await asyncio.gather(*(round_trip(port, big) for _ in range(5)))
            assert all(a == big for a in answers)
            assert forward.mode == "tunnel"
            assert kubelet.opened == 1 and kubelet.tunnelled == 11
        finally:
            await forward.stop()
        await kubelet.wait_for(lambda: kubelet.open_now == 0)


async def test_a_refused_stream_is_replayed_in_a_new_tunnel() -> None:
    """The kubelet keeps a tunnel to a pod that is gone and refuses each new stream: the
    connection is carried over to a new tunnel with what the client had sent, unseen."""
    async with running_kubelet() as kubelet:
        forward = forward_to(kubelet, tunnel=True)
        port = await forward.start()
        try:
            assert await round_trip(port, b"before") == b"before"
            kubelet.refuse_streams = 1
            assert await round_trip(port, b"hello" * 1000) == b"hello" * 1000
            assert kubelet.opened == 2 and kubelet.tunnelled == 2
            assert await round_trip(port, b"after") == b"after"
            assert kubelet.opened == 2  # the new tunnel stays
        finally:
            await forward.stop()


async def test_a_refused_connection_ends_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_kubelet() as kubelet:
        forward = forward_to(kubelet, tunnel=True)
        port = await forward.start()
        try:
            held_reader, held = await asyncio.open_connection("127.0.0.1", port)
            held.write(b"held")
            assert await held_reader.readexactly(4) == b"held"
            kubelet.fail_dial = True
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"anyone?")
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing sent
            writer.close()
            assert "connection refused" in caplog.text  # the kubelet's words reach the log
            assert kubelet.opened == 2  # tried once more, in a new tunnel
            # The connection held in the first (retired) tunnel is undisturbed.
            held.write(b"still here")
            assert await held_reader.readexactly(10) == b"still here"
            held.close()
            kubelet.fail_dial = False
            assert await round_trip(port, b"again") == b"again"
        finally:
            await forward.stop()


async def test_a_tunnel_the_server_closed_is_opened_again() -> None:
    async with running_kubelet() as kubelet:
        forward = forward_to(kubelet, tunnel=True)
        port = await forward.start()
        try:
            assert await round_trip(port, b"one") == b"one"
            await kubelet.sockets[0].close()  # e.g. the pod went away
            await kubelet.wait_for(lambda: kubelet.open_now == 0)
            assert await round_trip(port, b"two") == b"two"
            assert kubelet.opened == 2
        finally:
            await forward.stop()


async def test_without_a_tunnel_each_connection_gets_its_own_websocket() -> None:
    async with running_kubelet() as kubelet:
        kubelet.tunnel = False  # an older cluster: the upgrade names no subprotocol
        forward = forward_to(kubelet, tunnel=True)
        port = await forward.start()
        try:
            for i in range(3):
                assert await round_trip(port, f"old {i}".encode()) == f"old {i}".encode()
            assert forward.mode == "streams"
            assert kubelet.tunnelled == 0
        finally:
            await forward.stop()


def _pod(ready: str, **metadata: Any) -> dict[str, Any]:
    conditions = [{"type": "ContainersReady", "status": "True"}]
    conditions.append({"type": "Ready", "status": ready})
    return {"metadata": metadata, "status": {"conditions": conditions}}


def test_a_forward_goes_only_to_a_listed_pod_that_is_ready_and_not_being_deleted() -> None:
    assert serving(_pod("True"))
    assert not serving(_pod("False"))
    assert not serving(_pod("True", deletionTimestamp="2026-12-07T00:00:00Z"))
    assert not serving({"metadata": {}, "status": {}})  # just created: no conditions yet


def test_of_the_pods_listed_for_the_environment_a_service_forwards_to_a_ready_one_of_its_own() -> (
    None
):
    pods = ReadyPods(Api(Auth(server="http://unused")), "ns", {"app": "x"})
    other = {**_pod("True"), "metadata": {"name": "other", "labels": {"app": "y"}}}
    starting = {**_pod("False"), "metadata": {"name": "starting", "labels": {"app": "x"}}}
    ready = {**_pod("True"), "metadata": {"name": "ready", "labels": {"app": "x"}}}
    assert pods.choose([other, starting, ready]) == [ready]
    assert pods.current == "ready"
    assert pods.choose([other, starting]) == []
    assert pods.current is None


class CertAuth:
    """A kr8s auth with certificates: each ssl_context() call builds a new context."""

    def __init__(self, with_certificates: bool = True) -> None:
        self.client_cert_file = "/tmp/cert-1" if with_certificates else None
        self.built = 0

    async def ssl_context(self) -> ssl.SSLContext | bool:
        if self.client_cert_file is None:
            return True
        self.built += 1
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def test_the_api_servers_tls_context_is_built_once_per_credentials() -> None:
    auth = CertAuth()
    first = await _portforward.api_tls(auth)
    assert await _portforward.api_tls(auth) is first
    assert auth.built == 1
    auth.client_cert_file = "/tmp/cert-2"  # re-authenticated: new certificate files
    assert await _portforward.api_tls(auth) is not first
    assert auth.built == 2
    # Without certificates in the kubeconfig: the default verifying context.
    plain = await _portforward.api_tls(CertAuth(with_certificates=False))
    assert plain.verify_mode == ssl.CERT_REQUIRED


async def test_the_tunnel_gets_whole_messages_in_order_fragmented_or_early() -> None:
    """Messages reach the tunnel from the WebSocket's parser, not through a queue: one sent
    in fragments arrives whole, those that came before the tunnel attached come first, and
    a message is written at once while the connection is open."""

    async def server(ws: ServerConnection) -> None:
        await ws.send([b"fr", b"ag", b"ments"])  # one message in three frames
        await ws.send(b"whole")
        async for message in ws:
            await ws.send(message)

    async with serve(server, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", create_connection=TunnelConnection) as ws:
            assert isinstance(ws, TunnelConnection)
            # The pong comes after both messages: they have been parsed, nobody took them.
            await (await ws.ping())
            got: list[bytes] = []
            echoed = asyncio.Event()

            def on_message(message: bytes) -> None:
                got.append(message)
                if len(got) == 3:
                    echoed.set()

            ws.receive_with(on_message)
            assert got == [b"fragments", b"whole"]
            assert ws.send_now(b"echo")
            await echoed.wait()
            assert got[2] == b"echo"
        assert not ws.send_now(b"late")  # closed: the caller must await send(), which raises
