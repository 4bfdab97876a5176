"""One WebSocket to a pod's ``portforward`` carrying SPDY (what kubectl does): each local
connection becomes a pair of streams in it, opened with two frames (see ``_spdy``).

Bytes take no task hop on their way: a message that arrives is parsed and handed to its
local connection inside the WebSocket's ``data_received`` (:class:`TunnelConnection`), and
a frame to send is written at once while the connection is open and its buffer is not full.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, NegotiationError
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State
from websockets.typing import Subprotocol

from . import _spdy
from ._spdy import TUNNEL_PROTOCOL

log = logging.getLogger("testenv")

#: Bytes of one data frame sent (the local read size).
CHUNK = 65536


def spawn(tasks: set[asyncio.Future[Any]], awaitable: Awaitable[Any]) -> None:
    """Run ``awaitable`` as a task kept in ``tasks`` until it is done (the loop holds tasks
    weakly), its outcome retrieved: whoever owns ``tasks`` cancels and awaits what is left
    when it closes, and learns of a failure from the state it left behind."""
    task = asyncio.ensure_future(awaitable)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


class TunnelConnection(ClientConnection):
    """The tunnel's WebSocket.

    - websockets refuses a subprotocol that is not an RFC 7230 token, and Kubernetes names
      the tunnel ``SPDY/3.1+portforward.k8s.io`` (a "/"): the request carries the header as
      it is, and this accepts exactly that answer (or none: a cluster without the tunnel).
    - Binary messages go to the receiver given to :meth:`receive_with` as they are parsed
      (``process_event``, the subclass hook websockets documents), not through its queue and
      a reading task; what arrives before a receiver is set waits for it.
    """

    def __init__(self, protocol: ClientProtocol, *args: Any, **kwargs: Any) -> None:
        protocol.process_subprotocol = _accept_tunnel  # type: ignore[method-assign]
        super().__init__(protocol, *args, **kwargs)
        self._on_message: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []
        self._fragments: list[bytes] | None = None

    def receive_with(self, on_message: Callable[[bytes], None]) -> None:
        """Hand every binary message to ``on_message`` (those already here first)."""
        self._on_message = on_message
        early, self._early = self._early, []
        for message in early:
            on_message(message)

    def process_event(self, event: Event) -> None:
        if not isinstance(event, Frame) or event.opcode not in (Opcode.BINARY, Opcode.CONT):
            super().process_event(event)  # the handshake, text, control frames
            return
        if event.opcode is Opcode.BINARY and event.fin:
            self._deliver(bytes(event.data))
            return
        if event.opcode is Opcode.BINARY:
            self._fragments = []
        if self._fragments is not None:
            self._fragments.append(bytes(event.data))
            if event.fin:
                message, self._fragments = b"".join(self._fragments), None
                self._deliver(message)

    def _deliver(self, message: bytes) -> None:
        if self._on_message is None:
            self._early.append(message)
        else:
            self._on_message(message)

    def send_now(self, message: bytes) -> bool:
        """Write a binary message at once when the connection is open and its buffer below
        the high-water mark; False otherwise (then ``await send()``: it waits or raises)."""
        if self.protocol.state is not State.OPEN or self.paused:
            return False
        self.protocol.send_binary(message)
        self.send_data()
        return True


def _accept_tunnel(headers: Headers) -> Subprotocol | None:
    values = headers.get_all("Sec-WebSocket-Protocol")
    if not values:
        return None
    if values == [TUNNEL_PROTOCOL]:
        return Subprotocol(TUNNEL_PROTOCOL)
    raise NegotiationError(f"unexpected subprotocol {', '.join(values)}")


class TunnelStream:
    """A local connection's two streams: bytes out on the data stream, bytes in handed to
    the :meth:`attach`-ed sink as they arrive (no task hop), :attr:`done` once the remote
    end has finished, the kubelet's complaint (if any) in :attr:`error`."""

    def __init__(self, tunnel: SpdyTunnel, error_id: int, data_id: int) -> None:
        self.tunnel = tunnel
        self.error_id = error_id
        self.data_id = data_id
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error = ""
        self._sink: Callable[[bytes], None] | None = None
        self._early: list[bytes] = []
        self._error_bytes = bytearray()
        self.sent_fin = False

    @property
    def ended(self) -> bool:
        return self.done.done()

    def attach(self, sink: Callable[[bytes], None]) -> None:
        """Where incoming bytes go (what arrived before is handed over first)."""
        self._sink = sink
        early, self._early = self._early, []
        for data in early:
            sink(data)

    async def send(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            await self.tunnel.send(_spdy.data_frame(self.data_id, data[start : start + CHUNK]))

    async def finish(self) -> None:
        """Half-close: nothing more to send (the remote end may still answer)."""
        if not self.sent_fin:
            self.sent_fin = True
            await self.tunnel.send(_spdy.data_frame(self.data_id, fin=True))

    async def close(self) -> None:
        """Forget the streams; reset them unless both ends had finished."""
        self.tunnel.forget(self)
        if not (self.sent_fin and self.ended) and self.tunnel.alive:
            try:
                await self.tunnel.send(
                    _spdy.rst_stream(self.data_id) + _spdy.rst_stream(self.error_id)
                )
            except ConnectionClosed:
                pass

    def _end(self, reason: str = "") -> None:
        if reason and not self.error:
            self.error = reason
        if not self.done.done():
            self.done.set_result(None)

    def _on_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        if stream_id == self.data_id:
            if data:
                if self._sink is not None:
                    self._sink(data)
                else:
                    self._early.append(data)
            if fin:
                self._end()
        else:  # the error stream: the kubelet's message, then its end
            self._error_bytes += data
            if fin and self._error_bytes:
                self._end(self._error_bytes.decode(errors="replace").strip())


class SpdyTunnel:
    """The SPDY session in one port-forward WebSocket (``_spdy.TUNNEL_PROTOCOL``)."""

    def __init__(self, ws: TunnelConnection, on_error: Callable[[SpdyTunnel, str], None]) -> None:
        self.ws = ws
        self._on_error = on_error
        self._next_id = 1  # client streams are odd
        self._requests = itertools.count()
        self._headers = _spdy.HeaderCompressor()
        self._reader = _spdy.FrameReader()
        self._streams: dict[int, TunnelStream] = {}
        # Header blocks share one zlib stream: they must reach the wire in compression order.
        self._opening = asyncio.Lock()
        self._going_away = False
        self._closer: asyncio.Future[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()
        ws.receive_with(self._on_message)
        self._receiver = asyncio.create_task(self._until_closed())

    @property
    def alive(self) -> bool:
        return not self._going_away and self.ws.close_code is None and not self._receiver.done()

    async def send(self, frame: bytes) -> None:
        if not self.ws.send_now(frame):
            await self.ws.send(frame)  # waits for room, or raises ConnectionClosed

    async def open(self, port: int) -> TunnelStream:
        request = str(next(self._requests))
        async with self._opening:
            error_id, data_id = self._next_id, self._next_id + 2
            self._next_id += 4
            stream = TunnelStream(self, error_id, data_id)
            self._streams[error_id] = self._streams[data_id] = stream
            common = {"port": str(port), "requestid": request}
            # The error stream only ever carries the kubelet's message: our side of it is
            # finished at once (FIN on the SYN_STREAM), as kubectl does.
            frames = _spdy.syn_stream(
                error_id, self._headers.block({"streamtype": "error", **common}), fin=True
            ) + _spdy.syn_stream(data_id, self._headers.block({"streamtype": "data", **common}))
            await self.send(frames)
        return stream

    def forget(self, stream: TunnelStream) -> None:
        self._streams.pop(stream.error_id, None)
        self._streams.pop(stream.data_id, None)
        if self._going_away and not self._streams and self._closer is None:
            self._closer = asyncio.ensure_future(self.ws.close())  # its last stream ended

    def retire(self) -> None:
        """No new streams here (the pod behind it is going away, or it failed one); the
        open ones finish, then the WebSocket closes."""
        self._going_away = True
        if not self._streams and self._closer is None:
            self._closer = asyncio.ensure_future(self.ws.close())

    async def close(self) -> None:
        self._going_away = True
        await self.ws.close()
        self._receiver.cancel()
        await asyncio.gather(self._receiver, return_exceptions=True)

    async def _until_closed(self) -> None:
        try:
            await self.ws.wait_closed()
        finally:
            reason = "the port-forward connection closed"
            if self.ws.close_code is not None:
                reason += f" ({self.ws.close_code} {self.ws.close_reason})".rstrip()
            for stream in list(self._streams.values()):
                stream._end(reason)
            self._streams.clear()

    def _on_message(self, message: bytes) -> None:
        try:
            for frame in self._reader.feed(message):
                self._dispatch(frame)
        except Exception:  # a frame we cannot read: this tunnel is done, not the loop
            log.exception("testenv: unreadable port-forward frame; closing the tunnel")
            self.retire()
            if self._closer is None:
                self._closer = asyncio.ensure_future(self.ws.close())

    def _send_soon(self, frame: bytes) -> None:
        """Send from a callback: at once, or from a task when the buffer is full."""
        if self.ws.send_now(frame):
            return
        spawn(self._pending, self.ws.send(frame))

    def _dispatch(self, frame: _spdy.Frame) -> None:
        if not frame.control:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                stream._on_data(frame.stream_id, frame.data, frame.fin)
                if stream.error:
                    self._on_error(self, stream.error)
            return
        if frame.type == _spdy.PING:
            self._send_soon(_spdy.ping(frame.data))
        elif frame.type == _spdy.RST_STREAM:
            stream = self._streams.get(frame.stream_id)
            if stream is not None:
                (status,) = struct.unpack_from(">I", frame.data, 4)
                stream._end(f"stream reset by the server (status {status})")
        elif frame.type == _spdy.GOAWAY:
            self._going_away = True  # no new streams here; the open ones finish
        elif frame.type == _spdy.SYN_REPLY and frame.fin:
            stream = self._streams.get(frame.stream_id)
            if stream is not None and frame.stream_id == stream.data_id:
                stream._end()
        # SYN_REPLY (accepted), SETTINGS, HEADERS, WINDOW_UPDATE: nothing to do.
