"""HTTP/2 flow control per stream, errors on one stream, and graceful shutdown.

A slow stream must not stall the others, in either direction; a WebSocket protocol error
closes that WebSocket only; ``server.close()`` sends GOAWAY and closes every WebSocket with
1001. The peer is the ``h2``-driven client of ``h2_helpers``.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

import shakehands

from ..asyncio.asyncio_helpers import echo_server, wait_for_condition
from ..helpers import HOST
from .h2_helpers import h2_client

pytestmark = pytest.mark.timeout(60)

CHUNK = 16_384
TOTAL = 64  # chunks the flood handler sends: 1 MiB, far beyond the windows and write_limit


class Flood(shakehands.Listener):
    """Callback API: ``/flood`` gets TOTAL chunks at once; anything else is an echo."""

    def __init__(self) -> None:
        self.queued = 0

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        if ws.request is not None and ws.request.path == "/flood":
            for _ in range(TOTAL):
                ws.send(b"x" * CHUNK)
                self.queued += 1

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(message)


async def test_a_stream_that_never_reads_does_not_stall_the_others(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    progress = {"sent": 0}

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/flood":
            for _ in range(TOTAL):
                await ws.send(b"x" * CHUNK)  # waits while the stream's buffer is full
                progress["sent"] += 1
            await ws.wait_closed()
        else:
            async for message in ws:
                await ws.send(message)

    listener = Flood()
    server_cm: Any = (
        shakehands.serve(handler, HOST, 0, ssl=server_context)
        if api == "coroutine"
        else shakehands.serve_callbacks(listener, HOST, 0, ssl=server_context)
    )
    async with server_cm as server, h2_client(server.port, certificate) as client:
        slow = client.websocket("/flood")
        slow.reading = False  # never acknowledges: its window closes at 64 KiB
        await client.accepted(slow)
        fast = client.websocket("/echo")
        await client.accepted(fast)
        await client.wait(slow, lambda s: len(s.data) >= 60_000)
        for i in range(50):
            client.send_text(fast, f"message {i}")
            assert await client.message(fast) == f"message {i}"
        assert len(slow.data) < 2**17  # the stream window, not the megabyte
        if api == "coroutine":
            assert progress["sent"] < TOTAL  # send() waits: backpressure reached the handler
        # The slow reader reads at last: everything arrives, in order.
        client.start_reading(slow)
        received = 0
        while received < TOTAL * CHUNK:
            message = await client.message(slow)
            assert message == b"x" * CHUNK
            received += len(message)


async def test_a_handler_that_never_reads_closes_its_window_only(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/deaf":
            await ws.wait_closed()  # never reads: its queue fills, reading pauses
        else:
            async for message in ws:
                await ws.send(message)

    async with (
        shakehands.serve(handler, HOST, 0, ssl=server_context, max_queue=2) as server,
        h2_client(server.port, certificate) as client,
    ):
        deaf = client.websocket("/deaf")
        await client.accepted(deaf)
        echo = client.websocket("/echo")
        await client.accepted(echo)
        for _ in range(64):
            client.send_binary(deaf, b"y" * CHUNK)  # 1 MiB offered; the window takes 64 KiB
        await wait_for_condition(lambda: client.conn.local_flow_control_window(deaf.stream_id) == 0)
        assert len(deaf.pending) > 2**19  # the rest waits on the client: the server holds none
        for i in range(20):
            client.send_text(echo, f"still {i}")
            assert await client.message(echo) == f"still {i}"


async def test_a_protocol_error_closes_that_websocket_only(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        bad, good = await client.websockets(2)
        # A frame with the reserved opcode 3, masked: 1002 from the server.
        client.conn.send_data(bad.stream_id, b"\x83\x80abcd")
        client.flush()
        await client.wait(bad, lambda s: s.ended or s.reset is not None)
        assert bad.ws is not None and bad.ws.close_code == 1002
        client.send_text(good, "unharmed")
        assert await client.message(good) == "unharmed"
        assert client.goaways == []


async def test_graceful_shutdown_goaway_and_1001(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        streams = await client.websockets(3)
        server.close()
        for stream in streams:
            await client.wait(stream, lambda s: s.ended)
            assert stream.ws is not None and stream.ws.close_code == 1001
        await client.wait_closed()
        assert client.goaways, "no GOAWAY"
        last, code = client.goaways[0]
        assert code == 0 and last == streams[-1].stream_id
        await asyncio.wait_for(server.wait_closed(), 10)
