"""WebSockets over HTTP/2 (RFC 8441): echo, many streams on one connection, options, GET.

The server is shakehands' (``serve`` and ``serve_callbacks``, TLS on 127.0.0.1); the peer is an
HTTP/2 client driven with ``h2`` directly (``h2_helpers``).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import Response
from shakehands.protocol.extensions.permessage_deflate import DeflateOptions

from ..asyncio.asyncio_helpers import echo_server
from ..helpers import HOST
from .h2_helpers import h2_client

pytestmark = pytest.mark.timeout(60)


async def test_server_advertises_extended_connect_and_echoes(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server(api, ssl=server_context) as server:
        assert server.config.http2 is True
        async with h2_client(server.port, certificate) as client:
            assert client.peer_extended_connect
            stream = client.websocket("/echo")
            await client.accepted(stream)
            assert stream.headers is not None
            assert "sec-websocket-accept" not in stream.headers
            client.send_text(stream, "hello")
            assert await client.message(stream) == "hello"
            client.send_binary(stream, b"\x00\xff" * 50_000)  # beyond one window: 100 kB
            assert await client.message(stream) == b"\x00\xff" * 50_000
            client.close_ws(stream)
            await client.wait(stream, lambda s: s.ended)
            assert stream.ws is not None and stream.ws.close_code == 1000


async def test_many_websockets_on_one_connection(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        streams = [client.websocket(f"/{i}") for i in range(20)]
        for stream in streams:
            await client.accepted(stream)
        for round_ in range(3):
            for i, stream in enumerate(streams):
                client.send_text(stream, f"{i}:{round_}")
            for i, stream in enumerate(streams):
                assert await client.message(stream) == f"{i}:{round_}"
        assert len(server.connections) == 20
        for stream in streams:
            client.close_ws(stream)
        for stream in streams:
            await client.wait(stream, lambda s: s.ended)


async def test_handler_sees_the_same_api_and_an_http2_request(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    seen: dict[str, Any] = {}

    def process_request(request: shakehands.Request) -> None:
        request.context["who"] = "alice"

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        seen["version"] = ws.request.version
        seen["host"] = ws.request.headers["Host"]
        seen["path"] = ws.request.path
        seen["subprotocol"] = ws.subprotocol
        seen["context"] = dict(ws.context)
        seen["remote"] = ws.remote_address
        await ws.send(await ws.recv())

    async with (
        shakehands.serve(
            handler,
            HOST,
            0,
            ssl=server_context,
            subprotocols=["chat"],
            process_request=process_request,
        ) as server,
        h2_client(server.port, certificate) as client,
    ):
        stream = client.websocket("/room?x=1", [("sec-websocket-protocol", "superchat, chat")])
        await client.accepted(stream)
        assert stream.headers is not None
        assert stream.headers["sec-websocket-protocol"] == "chat"
        client.send_text(stream, "hi")
        assert await client.message(stream) == "hi"
        local = client.writer.get_extra_info("sockname")
        port = server.port
    assert seen["version"] == "HTTP/2"
    assert seen["host"] == f"localhost:{port}"
    assert seen["path"] == "/room"
    assert seen["subprotocol"] == "chat"
    assert seen["context"] == {"who": "alice"}
    assert tuple(seen["remote"][:2]) == tuple(local[:2])


async def test_permessage_deflate_over_http2(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        stream = client.websocket(compression=DeflateOptions())
        await client.accepted(stream)
        assert stream.headers is not None
        assert "permessage-deflate" in stream.headers["sec-websocket-extensions"]
        text = "compress me " * 10_000
        client.send_text(stream, text)
        assert await client.message(stream) == text


async def test_origin_policy_refuses_the_stream_only(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context, origins=["https://good.test"]) as server,
        h2_client(server.port, certificate) as client,
    ):
        bad = client.websocket(extra=[("origin", "https://evil.test")])
        await client.wait(bad, lambda s: s.ended)
        assert bad.status == 403
        good = client.websocket(extra=[("origin", "https://good.test")])
        await client.accepted(good)
        client.send_text(good, "still here")
        assert await client.message(good) == "still here"


async def test_get_goes_through_process_request(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async def process_request(request: shakehands.Request) -> Response | None:
        if request.path == "/page":
            return Response(200, [("Content-Type", "text/html")], b"<p>page</p>" * 10_000)
        return None

    async with (
        echo_server(api, ssl=server_context, process_request=process_request) as server,
        h2_client(server.port, certificate) as client,
    ):
        page = client.request("GET", "/page")
        await client.wait(page, lambda s: s.ended)
        assert page.status == 200
        assert page.headers is not None and page.headers["content-type"] == "text/html"
        assert "connection" not in page.headers
        assert bytes(page.data) == b"<p>page</p>" * 10_000
        head = client.request("HEAD", "/page")
        await client.wait(head, lambda s: s.ended)
        assert head.status == 200 and not head.data
        # Not answered by the hook: the core refuses a GET (a WebSocket here is a CONNECT).
        other = client.request("GET", "/other")
        await client.wait(other, lambda s: s.ended)
        assert other.status == 405
        assert other.headers is not None and other.headers["allow"] == "CONNECT"
        post = client.request("POST", "/other")
        await client.wait(post, lambda s: s.ended)
        assert post.status == 405
        # The connection carries on.
        stream = client.websocket()
        await client.accepted(stream)
        client.send_text(stream, "ok")
        assert await client.message(stream) == "ok"


async def test_http11_still_works_on_the_same_port(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server(api, ssl=server_context) as server:
        context = ssl.create_default_context(cafile=str(certificate[0]))
        async with shakehands.connect(f"wss://localhost:{server.port}/", ssl=context) as ws:
            await ws.send("over 1.1")
            assert await ws.recv() == "over 1.1"
        context.set_alpn_protocols(["http/1.1"])
        async with shakehands.connect(f"wss://localhost:{server.port}/", ssl=context) as ws:
            await ws.send("alpn 1.1")
            assert await ws.recv() == "alpn 1.1"


async def test_http2_false_offers_only_http11(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context, http2=False) as server:
        context = ssl.create_default_context(cafile=str(certificate[0]))
        context.set_alpn_protocols(["h2", "http/1.1"])
        reader, writer = await asyncio.open_connection(
            HOST, server.port, ssl=context, server_hostname="localhost"
        )
        try:
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        finally:
            writer.close()
            await writer.wait_closed()


def test_http2_true_without_tls_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs TLS"):
        shakehands.serve(echo_handler_unused, HOST, 0, http2=True)


async def echo_handler_unused(ws: shakehands.ServerConnection) -> None:
    await ws.close()


def test_the_blocking_server_refuses_http2_true() -> None:
    with pytest.raises(ValueError, match="only the asyncio servers speak HTTP/2"):
        shakehands.sync.serve(lambda ws: None, HOST, 0, http2=True)
