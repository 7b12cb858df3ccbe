"""Our HTTP/2 client against an independent RFC 8441 server: hypercorn (wsproto inside).

hypercorn serves an ASGI echo app over TLS on 127.0.0.1 with ALPN ``h2``; it advertises
``SETTINGS_ENABLE_CONNECT_PROTOCOL``. Each case checks that the WebSocket did arrive as an
HTTP/2 stream on both sides (the ASGI scope's ``http_version``, our transport's), then runs the
protocol cases that matter: framing (text and binary, 0 bytes to 1 MiB), fragmentation, control
frames, UTF-8 (valid, and invalid: 1007), close codes (valid both ways, invalid: 1002), limits
(1009 both ways) and permessage-deflate (hypercorn negotiates it over HTTP/2).

Skipped when hypercorn is not installed (it is in the ``dev`` extra, so CI runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands.http2.client import connect_session

from ..helpers import HOST, frame, free_port

hypercorn_asyncio = pytest.importorskip("hypercorn.asyncio")
hypercorn_config = pytest.importorskip("hypercorn.config")

pytestmark = pytest.mark.timeout(60)


class EchoApp:
    """An ASGI app: echoes every message; ``close:CODE`` closes with that code. Records the
    HTTP version of each WebSocket and the close code the client sent."""

    def __init__(self) -> None:
        self.versions: list[str] = []
        self.disconnects: list[int] = []
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not here"})
            return
        self.versions.append(scope["http_version"])
        await receive()  # websocket.connect
        if scope["path"] == "/refuse":
            await send({"type": "websocket.close"})
            return
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if "chat" in scope.get("subprotocols", []):
            accept["subprotocol"] = "chat"
        await send(accept)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message.get("code", 1005))
                self.disconnected.set()
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:])})
                return
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes")})


@contextlib.asynccontextmanager
async def hypercorn_server(
    certificate: tuple[Path, Path], **settings: Any
) -> AsyncIterator[tuple[int, EchoApp]]:
    """hypercorn on 127.0.0.1 with TLS and ALPN h2 + http/1.1, serving :class:`EchoApp`."""
    app = EchoApp()
    port = free_port()
    config = hypercorn_config.Config()
    config.bind = [f"{HOST}:{port}"]
    config.certfile, config.keyfile = str(certificate[0]), str(certificate[1])
    config.accesslog = None
    config.errorlog = None
    # hypercorn forgets a stream it failed without a frame (no close frame, END_STREAM or
    # RST_STREAM); the client learns of it when hypercorn closes the idle connection.
    config.keep_alive_timeout = 1
    for name, value in settings.items():
        setattr(config, name, value)
    stop = asyncio.Event()
    task = asyncio.create_task(hypercorn_asyncio.serve(app, config, shutdown_trigger=stop.wait))
    try:
        for _ in range(500):  # until it listens (bounded: 5 s)
            if task.done():
                task.result()
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            break
        yield port, app
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def server(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[int, EchoApp]]:
    async with hypercorn_server(certificate) as running:
        yield running


def uri(port: int, path: str = "/") -> str:
    return f"wss://{HOST}:{port}{path}"


async def test_over_http2_on_both_sides_and_framing(
    server: tuple[int, EchoApp], client_context: ssl.SSLContext
) -> None:
    port, app = server
    async with shakehands.connect(
        uri(port), ssl=client_context, http2=True, max_message_size=2**21, subprotocols=["chat"]
    ) as ws:
        assert ws.transport.get_extra_info("http_version") == "2"
        assert ws.response is not None and ws.response.status == 200
        assert ws.subprotocol == "chat"
        for size in (0, 1, 125, 126, 65535, 65536, 2**20):
            await ws.send("é" * (size // 2) + "a" * (size % 2))
            assert await ws.recv() == "é" * (size // 2) + "a" * (size % 2)
            await ws.send(bytes(range(256)) * (size // 256) + b"\x07" * (size % 256))
            assert await ws.recv() == bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented"
        await ws.send([b"\x00", b"\x01" * 70_000, b""])
        assert await ws.recv() == b"\x00" + b"\x01" * 70_000
        latency = await asyncio.wait_for(ws.ping(b"ping over h2"), 10)  # its pong came
        assert latency >= 0
    assert ws.close_code == 1000  # hypercorn answered our 1000 with 1000
    assert app.versions == ["2"]


async def test_many_websockets_on_one_connection(
    server: tuple[int, EchoApp], client_context: ssl.SSLContext
) -> None:
    port, app = server
    async with connect_session(uri(port), ssl=client_context) as session:
        sockets = [await session.connect(f"/{i}") for i in range(20)]
        for i, ws in enumerate(sockets):
            await ws.send(f"hello {i}")
        for i, ws in enumerate(sockets):
            assert await ws.recv() == f"hello {i}"
    assert app.versions == ["2"] * 20


async def test_invalid_utf8_fails_the_websocket(
    server: tuple[int, EchoApp], client_context: ssl.SSLContext
) -> None:
    port, _ = server
    ws = await shakehands.connect(uri(port), ssl=client_context, http2=True, compression=None)
    assert ws.transport.get_extra_info("http_version") == "2"
    ws.transport.write(frame(0x1, b"valid then \xff\xfe"))
    with pytest.raises(shakehands.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    # wsproto fails the connection without a close frame (RFC 6455 §7.1.7 allows it) and
    # hypercorn then forgets the stream without a word: the invalid text is never echoed,
    # no 1007 comes, and the WebSocket ends when hypercorn closes the idle connection.
    assert ws.close_code == 1006


async def test_close_codes(server: tuple[int, EchoApp], client_context: ssl.SSLContext) -> None:
    port, app = server
    # One connection per case: hypercorn 0.18 drops the whole HTTP/2 connection when DATA
    # (our close frame's answer) arrives on a stream it has ended (see docs/http2.md).
    ws = await shakehands.connect(uri(port), ssl=client_context, http2=True)
    await ws.send("close:4001")
    with pytest.raises(shakehands.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4001
    ws = await shakehands.connect(uri(port), ssl=client_context, http2=True)
    await ws.close(4002, "bye")
    assert ws.close_code == 4002  # hypercorn's answer echoes it
    ws = await shakehands.connect(uri(port), ssl=client_context, http2=True, compression=None)
    ws.transport.write(frame(0x8, struct.pack("!H", 999)))  # a code nobody may send
    with pytest.raises(shakehands.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code != 999  # not echoed: failed (1006) or refused (1002)
    assert ws.close_code in (1002, 1006)
    assert app.versions == ["2"] * 3


async def test_limits_1009_both_ways(
    certificate: tuple[Path, Path], client_context: ssl.SSLContext
) -> None:
    async with hypercorn_server(certificate, websocket_max_message_size=4096) as (port, _):
        ours = await shakehands.connect(
            uri(port), ssl=client_context, http2=True, max_message_size=1000
        )
        await ours.send(b"x" * 2000)  # hypercorn takes it, echoes it: over our limit
        with pytest.raises(shakehands.ConnectionClosed):
            await asyncio.wait_for(ours.recv(), 10)
        assert ours.protocol.close_sent is not None
        assert ours.protocol.close_sent.code == 1009
        theirs = await shakehands.connect(uri(port), ssl=client_context, http2=True)
        await theirs.send(b"y" * 8000)  # over hypercorn's limit
        with pytest.raises(shakehands.ConnectionClosed):
            await asyncio.wait_for(theirs.recv(), 10)
        assert theirs.close_code == 1009


async def test_permessage_deflate(
    server: tuple[int, EchoApp], client_context: ssl.SSLContext
) -> None:
    port, app = server
    async with shakehands.connect(uri(port), ssl=client_context, http2=True) as ws:
        assert ws.response is not None
        extensions = ws.response.headers.get("sec-websocket-extensions") or ""
        assert extensions.startswith("permessage-deflate")
        message = "deflate over HTTP/2 " * 40_000  # 800 kB, compressible
        await ws.send(message)
        assert await ws.recv() == message
        await ws.send(b"\x00" * 100_000)
        assert await ws.recv() == b"\x00" * 100_000
    assert app.versions == ["2"]


async def test_refused_request_raises_invalid_status(
    server: tuple[int, EchoApp], client_context: ssl.SSLContext
) -> None:
    port, _ = server
    # An ASGI app that closes before accepting: hypercorn answers the stream with 403.
    async with connect_session(uri(port), ssl=client_context) as session:
        with pytest.raises(shakehands.InvalidStatus) as refused:
            await session.connect("/refuse")
        assert refused.value.response.status == 403
        ws = await session.connect("/")
        await ws.send("still fine")
        assert await ws.recv() == "still fine"
