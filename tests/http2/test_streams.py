"""The life of a stream and of a connection: peers that reset or end a stream, broadcasts to
many streams, an idle connection.
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


@pytest.mark.parametrize("how", ["reset", "end-stream"])
async def test_a_stream_the_peer_drops_ends_its_handler_only(
    how: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    codes: list[int | None] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            codes.append(ws.close_code)

    async with (
        shakehands.serve(handler, HOST, 0, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        dropped, kept = await client.websockets(2)
        if how == "reset":
            client.conn.reset_stream(dropped.stream_id)
        else:
            client.conn.end_stream(dropped.stream_id)  # EOF without a close frame
        client.flush()
        await wait_for_condition(lambda: codes == [1006])
        await wait_for_condition(lambda: len(server.connections) == 1)
        client.send_text(kept, "kept")
        assert await client.message(kept) == "kept"
        assert client.goaways == []


async def test_broadcast_reaches_every_stream(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        streams = await client.websockets(10)
        await wait_for_condition(lambda: len(server.connections) == 10)
        shakehands.broadcast(server.connections, "to all")
        for stream in streams:
            assert await client.message(stream) == "to all"


async def test_a_connection_without_streams_is_closed_after_open_timeout(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context, open_timeout=0.5) as server:
        async with h2_client(server.port, certificate) as client:
            stream = client.websocket()
            await client.accepted(stream)  # a stream: the timer stops
            client.close_ws(stream)
            await client.wait(stream, lambda s: s.ended)
            await client.wait_closed()  # no stream left: closed after open_timeout
            assert client.goaways and client.goaways[-1][1] == 0
        await asyncio.sleep(0)


async def test_handshake_timeout_resets_the_stream(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    release = asyncio.Event()

    async def slow(request: shakehands.Request) -> Any:
        await release.wait()

    async with (
        echo_server(
            "coroutine", ssl=server_context, process_request=slow, open_timeout=0.5
        ) as server,
        h2_client(server.port, certificate) as client,
    ):
        stream = client.websocket()
        await client.wait(stream, lambda s: s.reset is not None)
        assert stream.status is None
        release.set()
        await wait_for_condition(lambda: not server.connections)
