"""permessage-deflate on real sockets: both server APIs, the shakehands client, and interop with
the ``websockets`` and ``aiohttp`` implementations of RFC 7692 in both directions."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import shakehands
from shakehands import ConnectionClosedError, DeflateOptions

from ..helpers import OP_BINARY, OP_CLOSE, accept_for, close_payload, frame
from .asyncio_helpers import RawClient, echo_server, uri

pytestmark = pytest.mark.timeout(60)

TEXT = '{"event": "tick", "symbol": "SHAKE", "price": 42.0, "note": "json compresses well"}' * 40


async def test_negotiated_by_default(api: str) -> None:
    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        assert ws.protocol.deflate is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        assert (
            extensions == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        )
        for message in (TEXT, TEXT.encode(), "", b"", "é" * 70_000):
            await ws.send(message)
            assert await ws.recv() == message


async def test_off_on_either_side(api: str) -> None:
    async with echo_server(api, compression=None) as server:
        async with shakehands.connect(uri(server)) as ws:
            assert ws.protocol.deflate is None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send(TEXT)
            assert await ws.recv() == TEXT
        async with shakehands.connect(uri(server), compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.request.headers
    async with echo_server(api) as server, shakehands.connect(uri(server), compression=None) as ws:
        assert ws.protocol.deflate is None
        await ws.send(TEXT)
        assert await ws.recv() == TEXT


@pytest.mark.parametrize(
    "options",
    [
        DeflateOptions(server_max_window_bits=15, client_max_window_bits=15, memory_level=8),
        DeflateOptions(server_max_window_bits=9, client_max_window_bits=8, memory_level=1),
        DeflateOptions(server_no_context_takeover=True, client_no_context_takeover=True),
        DeflateOptions(client_max_window_bits=None),
    ],
)
async def test_settings_round_trip(api: str, options: DeflateOptions) -> None:
    async with (
        echo_server(api, compression=options) as server,
        shakehands.connect(uri(server), compression=options) as ws,
    ):
        assert ws.protocol.deflate is not None
        for _ in range(5):
            await ws.send(TEXT)
            assert await ws.recv() == TEXT
        await ws.send([TEXT[:100], TEXT[100:2000], TEXT[2000:]])
        assert await ws.recv() == TEXT


async def test_compress_false_on_the_wire() -> None:
    """A raw client negotiates deflate and reads the server's frames: RSV1 only where asked."""
    seen: list[int] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.send(TEXT)
        await ws.send(TEXT, compress=False)
        await ws.send(b"\x00" * 1000)

    async with shakehands.serve(handler, "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = RawClient(reader, writer)
        headers = await client.handshake(
            server.port, extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
        inflater = zlib.decompressobj(-15)
        for _ in range(3):
            b0 = (await reader.readexactly(1))[0]
            seen.append(b0 & 0x40)
            length = (await reader.readexactly(1))[0] & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            payload = await reader.readexactly(length)
            if b0 & 0x40:
                payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
            assert payload in (TEXT.encode(), b"\x00" * 1000)
        assert seen == [0x40, 0, 0x40]
        writer.close()


async def test_bomb_over_socket_closes_1009(api: str) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(64))
    bomb += compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
    async with echo_server(api, max_message_size=1 << 20) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = RawClient(reader, writer)
        await client.handshake(
            server.port, extra=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        data = bytearray(frame(OP_BINARY, bomb))
        data[0] |= 0x40  # RSV1: compressed
        client.send(bytes(data))
        code, _ = await client.read_close()
        assert code == 1009
        client.send_frame(OP_CLOSE, close_payload(1009))
        assert await client.read_eof() == b""
        # The server still serves.
        async with shakehands.connect(uri(server)) as ws:
            await ws.send("after the bomb")
            assert await ws.recv() == "after the bomb"


async def test_client_rejects_bad_server_answer() -> None:
    """A server answering with parameters we did not offer: the client fails the handshake."""

    async def bad_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = [
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        ][0]
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(key.decode()).encode() + b"\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15\r\n\r\n"
        )
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(bad_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(shakehands.NegotiationError):
            await shakehands.connect(f"ws://127.0.0.1:{port}/")


# ---------------------------------------------------------------------------------------------
# Interop: other RFC 7692 implementations, both directions
# ---------------------------------------------------------------------------------------------


async def test_websockets_client_compressed(api: str) -> None:
    async with echo_server(api) as server, ws_connect(uri(server)) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        for message in (TEXT, TEXT.encode(), "ü" * 100_000):
            await ws.send(message)
            assert await ws.recv() == message


async def test_aiohttp_client_compressed(api: str) -> None:
    async with (
        echo_server(api) as server,
        aiohttp.ClientSession() as session,
        session.ws_connect(uri(server), compress=15) as ws,
    ):
        assert ws.compress
        await ws.send_str(TEXT)
        assert (await ws.receive()).data == TEXT
        await ws.send_bytes(TEXT.encode())
        assert (await ws.receive()).data == TEXT.encode()


async def test_client_against_websockets_server() -> None:
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        for options in ("deflate", DeflateOptions(server_no_context_takeover=True)):
            async with shakehands.connect(f"ws://127.0.0.1:{port}/", compression=options) as ws:
                assert ws.protocol.deflate is not None
                for _ in range(3):
                    await ws.send(TEXT)
                    assert await ws.recv() == TEXT
                await ws.send(TEXT, compress=False)
                assert await ws.recv() == TEXT


async def test_websockets_server_limit_applies_to_inflated_size() -> None:
    """Our client sending a message that inflates past the other side's limit gets 1009."""

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0, max_size=10_000) as server:
        port = server.sockets[0].getsockname()[1]
        async with shakehands.connect(f"ws://127.0.0.1:{port}/") as ws:
            await ws.send(b"\x00" * 20_000)  # a few dozen bytes on the wire
            with pytest.raises(ConnectionClosedError):
                await ws.recv()
            assert ws.close_code == 1009
    assert websockets.__version__
