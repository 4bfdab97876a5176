"""The forwarder against a stand-in for the kubelet's port-forward WebSocket end
(``v4.channel.k8s.io``: each channel first names its port; channel 0 data, 1 errors), which
pipes to a real local TCP echo server: bytes both ways, streams opened ahead and reused,
closed when unused, never closed under a connection using them, errors and re-authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from testenv import _portforward
from testenv._errors import PortForwardLostError
from testenv._portforward import PodPortForward, ReadyPods

PORT = 8080


@dataclass
class Kubelet:
    """Counts the streams opened and the ones still open; ``refuse`` answers every upgrade
    with that HTTP status; ``fail_dial`` sends an error on channel 1 instead of piping."""

    echo_port: int
    url: str = ""
    opened: int = 0
    open_now: int = 0
    refuse: int | None = None
    fail_dial: bool = False
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
        assert request.path.endswith(f"/portforward?ports={PORT}")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        await self._count(1)
        try:
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
class Api:
    auth: Auth


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def running_kubelet() -> AsyncIterator[Kubelet]:
    """In the test's own loop (an async fixture may run in another)."""
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    k = Kubelet(echo_port=echo_server.sockets[0].getsockname()[1])
    async with serve(k.handler, "127.0.0.1", 0, process_request=k.check) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        k.url = f"http://127.0.0.1:{port}"
        yield k
    echo_server.close()


def forward_to(kubelet: Kubelet) -> PodPortForward:
    api = Api(Auth(server=kubelet.url))
    pods = ReadyPods(api, "ns", {"app": "x"})
    pods.current = "pod-0"
    return PodPortForward(api, pods, PORT)


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
