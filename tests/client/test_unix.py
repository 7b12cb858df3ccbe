"""Both clients over Unix domain sockets (issue 15, item 4, client side): ``unix_connect(path,
uri)`` against websockets' real ``unix_serve`` and against shakehands servers listening on a
Unix socket (``sock=``)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection as WebsocketsConnection
from websockets.asyncio.server import unix_serve as websockets_unix_serve

import shakehands
from shakehands import sync

from .client_helpers import sync_server
from .conftest import Client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[str]:
    # Unix socket paths are limited to about 100 bytes: pytest's tmp_path may be longer.
    short = Path("/tmp") / f"sh-{tmp_path.name[-20:]}.sock"
    short.unlink(missing_ok=True)
    yield str(short)
    short.unlink(missing_ok=True)


def unix_listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    return sock


async def test_against_websockets_unix_serve(client: Client, socket_path: str) -> None:
    async def where(ws: WebsocketsConnection) -> None:
        await ws.send(f"{ws.request.headers['Host']} {ws.request.path}")

    async with websockets_unix_serve(where, socket_path):
        opened = await client.open("ws://localhost/", unix_path=socket_path, recv=True)
        assert opened.received == "localhost /"
        opened = await client.open("ws://api.internal/v1?x=1", unix_path=socket_path, recv=True)
        assert opened.received == "api.internal /v1?x=1"
    assert opened.uri == "ws://api.internal/v1?x=1"


async def test_default_uri(socket_path: str) -> None:
    async def hello(ws: WebsocketsConnection) -> None:
        await ws.send(ws.request.headers["Host"])

    async with websockets_unix_serve(hello, socket_path):
        async with shakehands.unix_connect(socket_path) as ws:
            assert await ws.recv() == "localhost"

        def blocking() -> str | bytes:
            with sync.unix_connect(socket_path) as sws:
                return sws.recv()

        assert await asyncio.to_thread(blocking) == "localhost"


async def test_against_shakehands_asyncio_server(client: Client, socket_path: str) -> None:
    async def echo(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def first(ws: shakehands.ServerConnection) -> None:
        await ws.send("over unix")

    async with shakehands.serve(first, sock=unix_listener(socket_path)):
        opened = await client.open("ws://localhost/", unix_path=socket_path, recv=True)
    assert opened.received == "over unix"


def test_sync_client_against_shakehands_sync_server(socket_path: str) -> None:
    def echo(ws: sync.ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with sync_server(echo, sock=unix_listener(socket_path)), sync.unix_connect(socket_path) as ws:
        ws.send("ping over unix")
        assert ws.recv() == "ping over unix"
