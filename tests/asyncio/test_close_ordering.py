"""Answers to messages received before a close or a protocol violation leave before our close
frame (coroutine API), even when the application reads them later, within a bounded wait."""

from __future__ import annotations

import asyncio

import pytest

import shakehands

from ..helpers import OP_CLOSE, OP_TEXT, accept_for, close_payload, frame
from .asyncio_helpers import RawClient

pytestmark = pytest.mark.timeout(30)


async def test_server_answers_before_failing(api: str) -> None:
    """A message and a bad frame in one read: the echo, then close 1002."""

    async def slow_echo(ws: shakehands.ServerConnection) -> None:
        await asyncio.sleep(0.2)  # the violation is already known when we read
        async for message in ws:
            await ws.send(message)

    class Echo(shakehands.Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            ws.send(message)

    context = (
        shakehands.serve(slow_echo, "127.0.0.1", 0, compression=None)
        if api == "coroutine"
        else shakehands.serve_callbacks(Echo(), "127.0.0.1", 0, compression=None)
    )
    async with context as server:
        client = await RawClient.open(server.port)
        await client.handshake(server.port)
        bad = bytearray(frame(OP_TEXT, b"x"))
        bad[0] |= 0x20  # RSV2
        client.send(frame(OP_TEXT, b"one") + frame(OP_TEXT, b"two") + bytes(bad))
        assert await client.read_frame() == (True, OP_TEXT, b"one")
        assert await client.read_frame() == (True, OP_TEXT, b"two")
        code, _ = await client.read_close()
        assert code == 1002
        # Our side of the close: without it the server waits its close_timeout (10 s) for our
        # close frame before the `async with` can end.
        await client.close()


async def test_server_answers_before_echoing_close() -> None:
    async def slow_echo(ws: shakehands.ServerConnection) -> None:
        await asyncio.sleep(0.2)
        async for message in ws:
            await ws.send(message)

    async with shakehands.serve(slow_echo, "127.0.0.1", 0, compression=None) as server:
        client = await RawClient.open(server.port)
        await client.handshake(server.port)
        client.send(frame(OP_TEXT, b"last words") + frame(OP_CLOSE, close_payload(1000)))
        assert await client.read_frame() == (True, OP_TEXT, b"last words")
        assert await client.read_close() == (1000, "")


async def test_close_not_held_forever_by_an_application_that_does_not_read() -> None:
    done = asyncio.Event()

    async def never_reads(ws: shakehands.ServerConnection) -> None:
        await done.wait()

    async with shakehands.serve(never_reads, "127.0.0.1", 0, compression=None) as server:
        client = await RawClient.open(server.port)
        await client.handshake(server.port)
        client.send(frame(OP_TEXT, b"unread") + frame(OP_CLOSE, close_payload(1000)))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await client.read_close() == (1000, "")
        # Held for close_hold_limit (1 s), not for as long as the handler runs.
        assert loop.time() - started < 5
        done.set()


async def test_client_answers_messages_sent_with_the_101() -> None:
    """The server's first message and a violation arrive with the 101 in one packet: the client
    application still gets to answer the message before the client's close frame leaves."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        bad = bytearray(frame(OP_TEXT, b"x", mask=False))
        bad[0] |= 0x10  # RSV3
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + accept_for(key).encode()
            + b"\r\n\r\n"
            + frame(OP_TEXT, b"hello", mask=False)
            + bytes(bad)
        )
        await writer.drain()
        received.put_nowait(await reader.read(1 << 16))
        writer.close()

    tcp = await asyncio.start_server(server, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        async with shakehands.connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
            message = await ws.recv()
            await ws.send(message)
            with pytest.raises(shakehands.ConnectionClosedError):
                await ws.recv()
        data = await asyncio.wait_for(received.get(), 5)
        # Masked frames from the client: first opcode text, then close.
        assert data[0] == 0x80 | OP_TEXT
        second = 2 + 4 + (data[1] & 0x7F)
        assert data[second] == 0x80 | OP_CLOSE
        key = data[second + 2 : second + 6]
        code = bytes(b ^ key[i] for i, b in enumerate(data[second + 6 : second + 8]))
        assert int.from_bytes(code, "big") == 1002
