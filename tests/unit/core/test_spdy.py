"""SPDY/3 frames as the port-forward tunnel writes and reads them."""

from __future__ import annotations

import struct
import zlib

import pytest

from testenv import _spdy


def test_frames_are_read_back_whatever_pieces_the_bytes_arrive_in() -> None:
    headers = _spdy.HeaderCompressor()
    wire = (
        _spdy.syn_stream(1, headers.block({"streamType": "error", "port": "8080"}), fin=True)
        + _spdy.syn_stream(3, headers.block({"streamtype": "data", "port": "8080"}))
        + _spdy.data_frame(3, b"hello")
        + _spdy.data_frame(3, fin=True)
        + _spdy.rst_stream(3)
        + _spdy.ping(b"\x00\x00\x00\x07")
    )
    reader = _spdy.FrameReader()
    frames = [f for i in range(len(wire)) for f in reader.feed(wire[i : i + 1])]
    assert [(f.control, f.type, f.stream_id, f.fin) for f in frames] == [
        (True, _spdy.SYN_STREAM, 1, True),
        (True, _spdy.SYN_STREAM, 3, False),
        (False, 0, 3, False),
        (False, 0, 3, True),
        (True, _spdy.RST_STREAM, 3, False),
        (True, _spdy.PING, 0, False),
    ]
    assert frames[2].data == b"hello"
    assert struct.unpack(">II", frames[4].data) == (3, _spdy.CANCEL)
    # Control frames say SPDY version 3; header names go out in lower case, and the blocks
    # of a session share one zlib stream (the second needs the first's context).
    assert wire[:2] == b"\x80\x03"
    inflate = zlib.decompressobj()
    assert _spdy.parse_header_block(inflate, frames[0].data[10:]) == {
        "streamtype": "error",
        "port": "8080",
    }
    assert _spdy.parse_header_block(inflate, frames[1].data[10:])["streamtype"] == "data"


def test_a_data_frame_holds_at_most_its_24_bit_length() -> None:
    assert len(_spdy.data_frame(1, b"x" * _spdy.MAX_DATA)) == 8 + _spdy.MAX_DATA
    with pytest.raises(ValueError, match="at most"):
        _spdy.data_frame(1, b"x" * (_spdy.MAX_DATA + 1))
