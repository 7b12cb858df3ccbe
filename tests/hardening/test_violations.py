"""Protocol violations after the handshake, beyond those of tests/asyncio/test_server.py: the
reserved bits, permessage-deflate abuse (bad streams, bombs), and frame limits.

Each violation is sent alone, with nothing after it: the close frame with the right code must
come from what the server read (no waiting for more bytes), then the TCP connection is closed
and the server holds nothing for it.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import Any

import pytest

import shakehands

from ..asyncio.asyncio_helpers import RawClient, echo_server, uri, wait_for_condition
from ..helpers import OP_BINARY, OP_CLOSE, OP_TEXT, frame, frame_header, mask_payload

pytestmark = pytest.mark.timeout(30)

DEFLATE = [("Sec-WebSocket-Extensions", "permessage-deflate")]


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]  # RFC 7692 §7.2.1


def raw_frame(b0: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked frame with the first byte given as is (FIN, RSV bits, opcode)."""
    header = bytearray(frame_header(0, len(payload)))
    header[0] = b0
    return bytes(header) + mask + mask_payload(payload, mask)


BOMB = deflate(b"\x00" * (8 * 2**20))  # 8 MiB of zeros in about 8 KiB

CASES: dict[str, tuple[bytes, int, bool]] = {
    # name: (bytes after the handshake, expected close code, with permessage-deflate)
    "RSV2 set": (raw_frame(0x80 | 0x20 | OP_TEXT, b"x"), 1002, False),
    "RSV3 set": (raw_frame(0x80 | 0x10 | OP_TEXT, b"x"), 1002, False),
    "RSV1 without deflate": (raw_frame(0x80 | 0x40 | OP_TEXT, deflate(b"x")), 1002, False),
    "64-bit length with the top bit": (
        bytes([0x82, 0xFF]) + struct.pack("!Q", 2**63 + 5) + b"\x00" * 4,
        1002,
        False,
    ),
    "text ends inside a UTF-8 sequence": (frame(OP_TEXT, b"euro \xe2\x82"), 1007, False),
    "overlong UTF-8 encoding": (frame(OP_TEXT, b"\xc0\xaf"), 1007, False),
    "UTF-16 surrogate in UTF-8": (frame(OP_TEXT, b"\xed\xa0\x80"), 1007, False),
    "code point above U+10FFFF": (frame(OP_TEXT, b"\xf4\x90\x80\x80"), 1007, False),
    "deflate: RSV1 on a ping": (raw_frame(0x80 | 0x40 | 0x9, b""), 1002, True),
    "deflate: RSV1 on a continuation": (
        raw_frame(0x40 | OP_TEXT, deflate(b"a")) + raw_frame(0x80 | 0x40, deflate(b"b")),
        1002,
        True,
    ),
    "deflate: RSV2 set": (raw_frame(0x80 | 0x60 | OP_TEXT, deflate(b"x")), 1002, True),
    "deflate: invalid stream": (raw_frame(0x80 | 0x40 | OP_BINARY, b"\xff" * 32), 1007, True),
    "deflate: invalid UTF-8 inside": (
        raw_frame(0x80 | 0x40 | OP_TEXT, deflate(b"ok \xff")),
        1007,
        True,
    ),
    "deflate: 8 MiB bomb in 8 KiB": (raw_frame(0x80 | 0x40 | OP_BINARY, BOMB), 1009, True),
    "deflate: bomb, frame not even complete": (
        # The header announces more than is sent: the 1009 must not wait for the rest.
        raw_frame(0x80 | 0x40 | OP_BINARY, BOMB + b"\x00" * 100_000)[: 14 + len(BOMB)],
        1009,
        True,
    ),
}


async def open_raw(port: int, compress: bool) -> RawClient:
    client = await RawClient.open(port)
    headers = await client.handshake(port, extra=DEFLATE if compress else None)
    assert ("sec-websocket-extensions" in headers) is compress
    return client


@pytest.mark.parametrize("case", list(CASES))
async def test_violation_gets_its_close_code_at_once(api: str, case: str) -> None:
    data, expected, compress = CASES[case]
    async with echo_server(api) as server:
        async with asyncio.timeout(10):
            client = await open_raw(server.port, compress)
            client.send(data)  # and nothing more: no later byte may be needed
            code, _ = await client.read_close()
            assert code == expected
            assert await client.read_eof() == b""
            await client.close()
            await wait_for_condition(lambda: not server.connections)
            async with shakehands.connect(uri(server)) as ws:
                await ws.send("next")
                assert await ws.recv() == "next"


async def test_frame_over_max_frame_size_1009(api: str) -> None:
    async with echo_server(api, max_frame_size=1000) as server:
        async with asyncio.timeout(10):
            client = await open_raw(server.port, False)
            client.send(frame_header(OP_BINARY, 1001) + b"\x00\x00\x00\x00")  # header only
            assert (await client.read_close())[0] == 1009
            await client.close()


async def test_messages_before_the_violation_are_answered_first(api: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(10):
            client = await open_raw(server.port, False)
            client.send(frame(OP_TEXT, b"one") + frame(OP_TEXT, b"two") + frame(0x3, b"bad"))
            frames = []
            while True:
                _, opcode, payload = await client.read_frame()
                frames.append((opcode, payload))
                if opcode == OP_CLOSE:
                    break
            assert frames[:2] == [(OP_TEXT, b"one"), (OP_TEXT, b"two")]
            assert frames[-1][1][:2] == struct.pack("!H", 1002)
            await client.close()


async def test_handler_sees_the_failure_and_the_connection_is_released() -> None:
    seen: list[Any] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            await ws.recv()
        except shakehands.ConnectionClosedError as exc:
            seen.append(exc.sent_code)

    async with shakehands.serve(handler, "127.0.0.1", 0) as server:
        async with asyncio.timeout(10):
            client = await open_raw(server.port, False)
            client.send(frame(OP_TEXT, b"\xff"))
            assert (await client.read_close())[0] == 1007
            assert await client.read_eof() == b""
            await client.close()
            await wait_for_condition(lambda: not server.connections and seen != [])
    assert seen == [1007]
