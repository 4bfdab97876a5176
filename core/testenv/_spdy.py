"""The little of SPDY/3 that a Kubernetes port-forward client needs.

kubectl multiplexes every local connection of a port-forward as a pair of SPDY streams (an
*error* stream and a *data* stream tied by a request id, the port in their headers) over one
upgraded connection to the pod's ``portforward`` subresource. Since Kubernetes 1.31
(``PortForwardWebsockets``, beta) that connection may be a WebSocket whose binary messages
carry the SPDY bytes (subprotocol :data:`TUNNEL_PROTOCOL`): one handshake, then a new local
connection costs two frames instead of a TCP, TLS and WebSocket handshake of its own.

Frames (SPDY/3, draft-mbelshe-httpbis-spdy-00), big-endian::

    control: 1 bit 1 | 15 bits version (3) | 16 bits type | 8 bits flags | 24 bits length | data
    data:    1 bit 0 | 31 bits stream id                 | 8 bits flags | 24 bits length | data

Header blocks are zlib-compressed, one compression context per direction for the whole
session, sync-flushed after each block. Sent blocks use no preset dictionary (a receiver
needs SPDY's dictionary only for a stream that announces it); received header blocks are
never read, so the client needs no dictionary at all.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
#: RST_STREAM status: the stream is no longer needed.
CANCEL = 5
#: Control frames whose data starts with the stream id.
_STREAM_CONTROL = {SYN_STREAM, SYN_REPLY, RST_STREAM, HEADERS, WINDOW_UPDATE}
MAX_DATA = 0xFFFFFF


@dataclass(frozen=True)
class Frame:
    control: bool
    #: The control frame's type (0 for data frames).
    type: int
    #: The stream a data frame or a stream control frame is about (0 otherwise).
    stream_id: int
    flags: int
    data: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


def _control(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body


def data_frame(stream_id: int, payload: bytes = b"", *, fin: bool = False) -> bytes:
    if len(payload) > MAX_DATA:
        raise ValueError(f"a data frame carries at most {MAX_DATA} bytes")
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


def syn_stream(stream_id: int, header_block: bytes, *, fin: bool = False) -> bytes:
    """Open a stream (no associated stream, priority 0)."""
    body = struct.pack(">IIH", stream_id & 0x7FFFFFFF, 0, 0) + header_block
    return _control(SYN_STREAM, FLAG_FIN if fin else 0, body)


def rst_stream(stream_id: int, status: int = CANCEL) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, status))


def ping(body: bytes) -> bytes:
    """A PING frame with this (4-byte id) body: the answer to a server's PING."""
    return _control(PING, 0, body)


def window_update(stream_id: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, delta))


class HeaderCompressor:
    """Header blocks of one direction of a session (one zlib stream, sync-flushed)."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj()

    def block(self, headers: Mapping[str, str]) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, value in headers.items():
            for text in (name.lower(), value):
                encoded = text.encode()
                raw += struct.pack(">I", len(encoded)) + encoded
        return self._zlib.compress(bytes(raw)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


def parse_header_block(decompressor: zlib._Decompress, block: bytes) -> dict[str, str]:
    """The name/value pairs of a header block sent without a preset dictionary (tests, and
    a server written with this module)."""
    raw = decompressor.decompress(block)
    (count,) = struct.unpack_from(">I", raw)
    offset, headers = 4, {}
    for _ in range(count):
        pair = []
        for _ in range(2):
            (size,) = struct.unpack_from(">I", raw, offset)
            pair.append(raw[offset + 4 : offset + 4 + size].decode())
            offset += 4 + size
        headers[pair[0]] = pair[1]
    return headers


class FrameReader:
    """Frames out of a byte stream that arrives in pieces of any size."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames = []
        while len(buffer) >= 8:
            length = int.from_bytes(buffer[5:8], "big")
            if len(buffer) < 8 + length:
                break
            flags = buffer[4]
            body = bytes(buffer[8 : 8 + length])
            if buffer[0] & 0x80:
                kind = int.from_bytes(buffer[2:4], "big")
                stream_id = (
                    int.from_bytes(body[:4], "big") & 0x7FFFFFFF
                    if kind in _STREAM_CONTROL and len(body) >= 4
                    else 0
                )
                frames.append(Frame(True, kind, stream_id, flags, body))
            else:
                stream_id = int.from_bytes(buffer[:4], "big") & 0x7FFFFFFF
                frames.append(Frame(False, 0, stream_id, flags, body))
            del buffer[: 8 + length]
        return frames
