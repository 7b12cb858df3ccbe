"""Interoperability on real sockets: the ``websockets`` and ``aiohttp`` clients against both
shakehands servers, and the shakehands client against ``websockets`` and ``aiohttp`` servers.
No compression anywhere: shakehands negotiates no extension."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import WSMsgType, web
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import shakehands
from shakehands import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from ..helpers import HOST
from .asyncio_helpers import echo_server, uri, wait_for_condition

pytestmark = pytest.mark.timeout(30)


class CloseRecorder(shakehands.Listener):
    """Echo, but "close:CODE:REASON" closes from the server; records on_close."""

    def __init__(self) -> None:
        self.closes: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            ws.close(int(code), reason)
        else:
            ws.send(message)

    def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
        self.closes.put_nowait((code, reason))


def closing_echo_server(api: str, **options: Any) -> tuple[Any, asyncio.Queue[tuple[int, str]]]:
    """Like :func:`echo_server`, plus server-side closes on demand and a queue of the close
    codes and reasons the server received."""
    closes: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    if api == "callback":
        listener = CloseRecorder()
        return shakehands.serve_callbacks(listener, HOST, 0, **options), listener.closes

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    _, code, reason = message.split(":", 2)
                    await ws.close(int(code), reason)
                else:
                    await ws.send(message)
        finally:
            await ws.wait_closed()
            closes.put_nowait((ws.close_code or 0, ws.close_reason or ""))

    return shakehands.serve(handler, HOST, 0, **options), closes


# ---------------------------------------------------------------------------------------------
# websockets client -> shakehands servers
# ---------------------------------------------------------------------------------------------


async def test_websockets_client_echo(api: str) -> None:
    async with (
        echo_server(api, max_message_size=None) as server,
        asyncio.timeout(10),
        ws_connect(uri(server), compression=None) as ws,
    ):
        for message in ["hello", "ünïcødé 🎉", "", b"\x00\xff", b"", b"z" * 700_000]:
            await ws.send(message)
            assert await ws.recv() == message
        # Fragmented by websockets, reassembled by shakehands.
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented"
        await ws.send([b"a", b"b", b"c"])
        assert await ws.recv() == b"abc"


async def test_websockets_client_ping(api: str) -> None:
    async with (
        echo_server(api) as server,
        asyncio.timeout(5),
        ws_connect(uri(server), compression=None) as ws,
    ):
        pong_waiter = await ws.ping(b"interop")
        latency = await pong_waiter
        assert 0 <= latency < 1


async def test_websockets_client_answers_shakehands_keepalive(api: str) -> None:
    async with (
        echo_server(api, ping_interval=0.1, ping_timeout=0.1) as server,
        asyncio.timeout(5),
        ws_connect(uri(server), compression=None, ping_interval=None) as ws,
    ):
        await asyncio.sleep(0.6)
        await ws.send("alive")
        assert await ws.recv() == "alive"


async def test_websockets_client_close_codes(api: str) -> None:
    server_cm, closes = closing_echo_server(api)
    async with server_cm as server, asyncio.timeout(5):
        # Client-initiated, custom code and reason.
        async with ws_connect(uri(server), compression=None) as ws:
            await ws.close(4000, "client bye")
            assert ws.close_code == 4000
        assert await closes.get() == (4000, "client bye")
        # Server-initiated.
        async with ws_connect(uri(server), compression=None) as ws:
            await ws.send("close:4001:server bye")
            with pytest.raises(websockets.ConnectionClosedError) as excinfo:
                await ws.recv()
            assert excinfo.value.rcvd is not None
            assert (excinfo.value.rcvd.code, excinfo.value.rcvd.reason) == (4001, "server bye")
            assert ws.close_code == 4001
        assert (await closes.get())[0] == 4001
        # A normal close.
        async with ws_connect(uri(server), compression=None) as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
        assert await closes.get() == (1000, "")


async def test_websockets_client_subprotocol_and_refusal(api: str) -> None:
    def process_request(request: shakehands.Request) -> shakehands.Response | None:
        if request.path == "/forbidden":
            return shakehands.Response(403, body=b"nope\n")
        return None

    async with echo_server(
        api, subprotocols=["v2.chat"], process_request=process_request
    ) as server:
        async with asyncio.timeout(5):
            async with ws_connect(
                uri(server), compression=None, subprotocols=["v1.chat", "v2.chat"]
            ) as ws:
                assert ws.subprotocol == "v2.chat"
            with pytest.raises(websockets.InvalidStatus) as excinfo:
                await ws_connect(uri(server, "/forbidden"), compression=None)
            assert excinfo.value.response.status_code == 403
            assert excinfo.value.response.body == b"nope\n"


async def test_websockets_client_sees_1001_on_server_close(api: str) -> None:
    async with echo_server(api) as server, asyncio.timeout(5):
        ws = await ws_connect(uri(server), compression=None)
        server.close()
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1001
        await server.wait_closed()


# ---------------------------------------------------------------------------------------------
# aiohttp client -> shakehands servers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_aiohttp_client_echo(api: str, session: aiohttp.ClientSession) -> None:
    async with (
        echo_server(api, max_message_size=None) as server,
        asyncio.timeout(10),
        session.ws_connect(uri(server), compress=0, autoping=True) as ws,
    ):
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_str("")
        assert await ws.receive_str() == ""
        await ws.send_bytes(b"\x00\x01")
        assert await ws.receive_bytes() == b"\x00\x01"
        big = b"q" * 2_000_000
        await ws.send_bytes(big)
        assert await ws.receive_bytes() == big


async def test_aiohttp_client_ping_pong(api: str, session: aiohttp.ClientSession) -> None:
    async with (
        echo_server(api) as server,
        asyncio.timeout(5),
        session.ws_connect(uri(server), compress=0, autoping=False) as ws,
    ):
        await ws.ping(b"hi there")
        message = await ws.receive()
        assert message.type == WSMsgType.PONG
        assert message.data == b"hi there"


async def test_aiohttp_client_answers_shakehands_keepalive(
    api: str, session: aiohttp.ClientSession
) -> None:
    async with (
        echo_server(api, ping_interval=0.1, ping_timeout=0.1) as server,
        asyncio.timeout(5),
        session.ws_connect(uri(server), compress=0, autoping=True) as ws,
    ):
        # aiohttp answers pings only while someone reads: keep a receive pending.
        receiving = asyncio.ensure_future(ws.receive())
        await asyncio.sleep(0.6)
        assert not receiving.done()
        await ws.send_str("alive")
        message = await receiving
        assert message.data == "alive"


async def test_aiohttp_client_close_codes(api: str, session: aiohttp.ClientSession) -> None:
    server_cm, closes = closing_echo_server(api)
    async with server_cm as server, asyncio.timeout(5):
        async with session.ws_connect(uri(server), compress=0) as ws:
            await ws.close(code=4000, message=b"aiohttp bye")
            assert ws.close_code == 4000
        assert await closes.get() == (4000, "aiohttp bye")

        async with session.ws_connect(uri(server), compress=0) as ws:
            await ws.send_str("close:4002:from server")
            message = await ws.receive()
            assert message.type == WSMsgType.CLOSE
            assert message.data == 4002
            assert message.extra == "from server"
        # aiohttp answers a close frame with 1000 rather than echoing the code (a SHOULD in
        # RFC 6455 §5.5.1); the server records what it received.
        assert (await closes.get())[0] == 1000


async def test_aiohttp_client_refused(api: str, session: aiohttp.ClientSession) -> None:
    async with echo_server(
        api, process_request=lambda request: shakehands.Response(404, body=b"none\n")
    ) as server:
        async with asyncio.timeout(5):
            with pytest.raises(aiohttp.WSServerHandshakeError) as excinfo:
                await session.ws_connect(uri(server), compress=0)
            assert excinfo.value.status == 404


# ---------------------------------------------------------------------------------------------
# shakehands client -> websockets server
# ---------------------------------------------------------------------------------------------


async def websockets_echo(ws: Any) -> None:
    async for message in ws:
        if isinstance(message, str) and message.startswith("close:"):
            _, code, reason = message.split(":", 2)
            await ws.close(int(code), reason)
        else:
            await ws.send(message)


def ws_port(server: Any) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


async def test_shakehands_client_against_websockets_server() -> None:
    async with ws_serve(websockets_echo, HOST, 0, compression=None, max_size=None) as server:
        url = f"ws://{HOST}:{ws_port(server)}/"
        async with asyncio.timeout(10), shakehands.connect(url, max_message_size=None) as ws:
            for message in ["hello", "ünïcødé 🎉", "", b"\x00\xff", b"", b"y" * 3_000_000]:
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(["frag", "ment", "ed"])
            assert await ws.recv() == "fragmented"
            await ws.send(iter([b"1", b"2"]))
            assert await ws.recv() == b"12"
            assert 0 <= await ws.ping(b"shakehands") < 1


async def test_shakehands_client_close_codes_with_websockets_server() -> None:
    closes: list[tuple[int | None, str | None]] = []

    async def handler(ws: Any) -> None:
        try:
            await websockets_echo(ws)
        finally:
            closes.append((ws.close_code, ws.close_reason))

    async with ws_serve(handler, HOST, 0, compression=None) as server:
        url = f"ws://{HOST}:{ws_port(server)}/"
        async with asyncio.timeout(5):
            ws = await shakehands.connect(url)
            await ws.close(4000, "shakehands bye")
            assert ws.close_code == 4000
            await wait_for_condition(lambda: len(closes) == 1)
            assert closes[0] == (4000, "shakehands bye")

            ws = await shakehands.connect(url)
            await ws.send("close:4003:websockets bye")
            with pytest.raises(ConnectionClosedError) as excinfo:
                await ws.recv()
            assert (excinfo.value.code, excinfo.value.reason) == (4003, "websockets bye")
            await ws.wait_closed()

            async with shakehands.connect(url) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
            await wait_for_condition(lambda: len(closes) == 3)
            assert closes[2] == (1000, "")


async def test_shakehands_client_subprotocol_and_refusal_with_websockets_server() -> None:
    def process_request(connection: Any, request: Any) -> Any:
        if request.path == "/teapot":
            return connection.respond(418, "short and stout\n")
        return None

    async with ws_serve(
        websockets_echo,
        HOST,
        0,
        compression=None,
        subprotocols=["b", "a"],
        process_request=process_request,
    ) as server:
        url = f"ws://{HOST}:{ws_port(server)}"
        async with asyncio.timeout(5):
            async with shakehands.connect(url + "/", subprotocols=["a", "b"]) as ws:
                assert ws.subprotocol in ("a", "b")
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(url + "/teapot")
            assert excinfo.value.response.status == 418
            assert excinfo.value.response.body == b"short and stout\n"


async def test_shakehands_client_answers_websockets_keepalive() -> None:
    async with ws_serve(
        websockets_echo, HOST, 0, compression=None, ping_interval=0.1, ping_timeout=0.1
    ) as server:
        url = f"ws://{HOST}:{ws_port(server)}/"
        async with asyncio.timeout(5), shakehands.connect(url, ping_interval=None) as ws:
            await asyncio.sleep(0.6)
            await ws.send("alive")
            assert await ws.recv() == "alive"


# ---------------------------------------------------------------------------------------------
# shakehands client -> aiohttp server
# ---------------------------------------------------------------------------------------------


CLOSES = web.AppKey("closes", list)


async def aiohttp_ws_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False, autoping=True, protocols=("chat",), max_msg_size=0)
    await ws.prepare(request)
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            if message.data.startswith("close:"):
                _, code, reason = message.data.split(":", 2)
                await ws.close(code=int(code), message=reason.encode())
            else:
                await ws.send_str(message.data)
        elif message.type == WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    request.app[CLOSES].append((ws.close_code, request.path))
    return ws


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[tuple[str, list[Any]]]:
    app = web.Application()
    app[CLOSES] = []
    app.router.add_get("/ws", aiohttp_ws_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    assert host == HOST
    try:
        yield f"ws://{HOST}:{port}", app[CLOSES]
    finally:
        await runner.cleanup()


async def test_shakehands_client_against_aiohttp_server(
    aiohttp_server: tuple[str, list[Any]],
) -> None:
    base, _ = aiohttp_server
    async with asyncio.timeout(10), shakehands.connect(base + "/ws", max_message_size=None) as ws:
        for message in ["hello", "ünïcødé 🎉", "", b"\x00\xff", b"", b"w" * 3_000_000]:
            await ws.send(message)
            assert await ws.recv() == message
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented"
        assert 0 <= await ws.ping(b"to aiohttp") < 1


async def test_shakehands_client_subprotocol_with_aiohttp_server(
    aiohttp_server: tuple[str, list[Any]],
) -> None:
    base, _ = aiohttp_server
    async with asyncio.timeout(5):
        async with shakehands.connect(base + "/ws", subprotocols=["other", "chat"]) as ws:
            assert ws.subprotocol == "chat"
        async with shakehands.connect(base + "/ws") as ws:
            assert ws.subprotocol is None


async def test_shakehands_client_close_codes_with_aiohttp_server(
    aiohttp_server: tuple[str, list[Any]],
) -> None:
    base, closes = aiohttp_server
    async with asyncio.timeout(5):
        ws = await shakehands.connect(base + "/ws")
        await ws.close(4000, "bye aiohttp")
        assert ws.close_code == 1000  # aiohttp answers with 1000 instead of echoing 4000
        await wait_for_condition(lambda: len(closes) == 1)
        assert closes[0] == (4000, "/ws")

        ws = await shakehands.connect(base + "/ws")
        await ws.send("close:4004:bye shakehands")
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert (excinfo.value.code, excinfo.value.reason) == (4004, "bye shakehands")
        await ws.wait_closed()

        async with shakehands.connect(base + "/ws") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1000


async def test_shakehands_client_refused_by_aiohttp_server(
    aiohttp_server: tuple[str, list[Any]],
) -> None:
    base, _ = aiohttp_server
    async with asyncio.timeout(5):
        with pytest.raises(InvalidStatus) as excinfo:
            await shakehands.connect(base + "/no-such-route")
        assert excinfo.value.response.status == 404


async def test_shakehands_client_answers_aiohttp_heartbeat() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, heartbeat=0.1)
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with asyncio.timeout(5), shakehands.connect(f"ws://{HOST}:{port}/") as ws:
            await asyncio.sleep(0.6)
            await ws.send("alive")
            assert await ws.recv() == "alive"
    finally:
        await runner.cleanup()
