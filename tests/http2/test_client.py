"""The HTTP/2 client (RFC 8441): ``connect(..., http2=True)`` and ``http2.connect_session``.

Our client against our server (``serve`` and ``serve_callbacks``, TLS on 127.0.0.1): the
server observes each WebSocket arriving as an HTTP/2 stream (``request.version``), the client
its own side (``http_version`` of the transport, the ``200``). Fallbacks to HTTP/1.1, refusals,
permessage-deflate, flow control with a stream that is not read, closing codes.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

import shakehands
from shakehands import Response
from shakehands.http2.client import GoawayFilter, connect_session
from shakehands.http2.server import HTTP2Connection
from shakehands.protocol.client import ClientProtocol
from shakehands.protocol.connection import State
from shakehands.protocol.errors import InvalidHandshake, InvalidStatus

from ..asyncio.asyncio_helpers import echo_server
from ..helpers import HOST

pytestmark = pytest.mark.timeout(60)


def versions_seen() -> tuple[list[str], Any]:
    """A ``process_request`` hook that records each request's HTTP version."""
    seen: list[str] = []

    def process_request(request: shakehands.Request) -> None:
        seen.append(request.version)

    return seen, process_request


async def test_connect_http2_echoes_over_an_extended_connect_stream(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    seen, process_request = versions_seen()
    async with echo_server(api, ssl=server_context, process_request=process_request) as server:
        uri = f"wss://{HOST}:{server.port}/echo"
        async with shakehands.connect(uri, ssl=client_context, http2=True) as ws:
            assert ws.transport.get_extra_info("http_version") == "2"
            assert ws.response is not None and ws.response.status == 200
            assert "sec-websocket-accept" not in ws.response.headers
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\xff" * 200_000)  # beyond the windows: 400 kB
            assert await ws.recv() == b"\x00\xff" * 200_000
            await ws.send("")
            assert await ws.recv() == ""
        assert ws.close_code == 1000
        assert seen == ["HTTP/2"]


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_framing_sizes_fragments_and_pings(
    api: str,
    compression: str | None,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    async with (
        echo_server(api, ssl=server_context, max_message_size=2**21) as server,
        shakehands.connect(
            f"wss://{HOST}:{server.port}/",
            ssl=client_context,
            http2=True,
            compression=compression,  # type: ignore[arg-type]
            max_message_size=2**21,
        ) as ws,
    ):
        assert ws.transport.get_extra_info("http_version") == "2"
        for size in (0, 1, 125, 126, 65535, 65536, 2**20):
            text = "é" * (size // 2) + "a" * (size % 2)
            await ws.send(text)
            assert await ws.recv() == text
            data = bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)
            await ws.send(data)
            assert await ws.recv() == data
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented"
        await ws.send([b"\x00", b"\x01" * 70_000, b""])
        assert await ws.recv() == b"\x00" + b"\x01" * 70_000
        latency = await asyncio.wait_for(ws.ping(b"over h2"), 10)  # its pong came
        assert latency >= 0


async def test_subprotocol_and_origin_over_http2(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    origins: list[str | None] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        origins.append(ws.request.headers.get("Origin"))
        await ws.send(f"{ws.subprotocol}")

    async with shakehands.serve(
        handler, HOST, 0, ssl=server_context, subprotocols=["b", "a"]
    ) as server:
        ws = await shakehands.connect(
            f"wss://{HOST}:{server.port}/",
            ssl=client_context,
            http2=True,
            subprotocols=["a", "c"],
            origin="https://example.test",
        )
        assert ws.subprotocol == "a"
        assert await ws.recv() == "a"
        await ws.close()
    assert origins == ["https://example.test"]


async def test_many_websockets_on_one_session(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    peers: set[Any] = set()

    def process_request(request: shakehands.Request) -> None:
        assert request.version == "HTTP/2"
        peers.add(request.remote_address)

    async with (
        echo_server(api, ssl=server_context, process_request=process_request) as server,
        connect_session(f"wss://{HOST}:{server.port}/", ssl=client_context) as session,
    ):
        sockets = [await session.connect(f"/{i}") for i in range(30)]
        streams = {ws.transport.get_extra_info("h2_stream_id") for ws in sockets}
        assert len(streams) == 30
        for round_ in range(3):
            for i, ws in enumerate(sockets):
                await ws.send(f"{i}:{round_}")
            for i, ws in enumerate(sockets):
                assert await ws.recv() == f"{i}:{round_}"
        await sockets[0].close()
        assert sockets[0].close_code == 1000
        await sockets[1].send("still here")
        assert await sockets[1].recv() == "still here"
        later = await session.connect("/later")
        await later.send("x")
        assert await later.recv() == "x"
    assert len(peers) == 1  # one TCP connection for all
    assert all(ws.close_code == 1000 for ws in sockets)


async def test_refused_streams_raise_invalid_status_and_the_session_goes_on(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    def process_request(request: shakehands.Request) -> Response | None:
        if request.path == "/missing":
            return Response(404, body=b"no such room")
        if request.path == "/private":
            return Response(403, body=b"go away")
        return None

    async with (
        echo_server(api, ssl=server_context, process_request=process_request) as server,
        connect_session(f"wss://{HOST}:{server.port}/", ssl=client_context) as session,
    ):
        with pytest.raises(InvalidStatus) as missing:
            await session.connect("/missing")
        assert missing.value.response.status == 404
        assert missing.value.response.body == b"no such room"
        assert "no such room" in str(missing.value)  # quoted, as over HTTP/1.1
        with pytest.raises(InvalidStatus) as private:
            await session.connect("/private")
        assert private.value.response.status == 403
        ws = await session.connect("/fine")
        await ws.send("ok")
        assert await ws.recv() == "ok"
        uri = f"wss://{HOST}:{server.port}/missing"
        with pytest.raises(InvalidStatus) as single:
            await shakehands.connect(uri, ssl=client_context, http2=True)
        assert single.value.response.status == 404
        assert "HTTP 404" in str(single.value)


async def test_fallback_when_the_server_has_http2_off(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    seen, process_request = versions_seen()
    async with echo_server(
        api, ssl=server_context, http2=False, process_request=process_request
    ) as server:
        uri = f"wss://{HOST}:{server.port}/"
        async with shakehands.connect(uri, ssl=client_context, http2=True) as ws:
            assert ws.response is not None and ws.response.status == 101
            assert ws.transport.get_extra_info("ssl_object").selected_alpn_protocol() in (
                "http/1.1",
                None,
            )
            await ws.send("hello")
            assert await ws.recv() == "hello"
        with pytest.raises(InvalidHandshake):
            await connect_session(uri, ssl=client_context).open()
    assert seen == ["HTTP/1.1"]


async def test_fallback_when_the_server_does_not_advertise_extended_connect(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(HTTP2Connection, "enable_connect_protocol", False)
    seen, process_request = versions_seen()

    async def hi(ws: shakehands.ServerConnection) -> None:
        await ws.send("hi")

    async with shakehands.serve(
        hi, HOST, 0, ssl=server_context, process_request=process_request
    ) as server:
        uri = f"wss://{HOST}:{server.port}/"
        opener = shakehands.connect(uri, ssl=client_context, http2=True)
        async with opener as ws:
            assert ws.response is not None and ws.response.status == 101
            assert ws.transport.get_extra_info("ssl_object").selected_alpn_protocol() == (
                "http/1.1"
            )
            assert await ws.recv() == "hi"
        # Remembered: the next attempt of this connect offers http/1.1 at once.
        assert opener._http11_only == {(HOST, server.port)}
        with pytest.raises(InvalidHandshake, match="does not accept WebSockets over HTTP/2"):
            await connect_session(uri, ssl=client_context).open()
    assert seen == ["HTTP/1.1"]


async def test_ws_uri_with_http2_uses_http11() -> None:
    seen, process_request = versions_seen()
    async with echo_server("coroutine", process_request=process_request) as server:
        ws = await shakehands.connect(f"ws://{HOST}:{server.port}/", http2=True)
        assert ws.response is not None and ws.response.status == 101
        await ws.send("plain")
        assert await ws.recv() == "plain"
        await ws.close()
    assert seen == ["HTTP/1.1"]
    with pytest.raises(ValueError, match="wss://"):
        connect_session(f"ws://{HOST}:1/")


async def test_permessage_deflate_over_http2(
    api: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async with echo_server(api, ssl=server_context) as server:
        uri = f"wss://{HOST}:{server.port}/"
        async with shakehands.connect(uri, ssl=client_context, http2=True) as ws:
            assert ws.response is not None
            assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            message = "compressible " * 60_000  # 780 kB of text
            await ws.send(message)
            assert await ws.recv() == message
        async with shakehands.connect(uri, ssl=client_context, http2=True, compression=None) as ws:
            assert ws.response is not None
            assert "sec-websocket-extensions" not in ws.response.headers
            await ws.send("raw")
            assert await ws.recv() == "raw"


async def test_a_stream_that_is_not_read_does_not_stall_the_others(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    chunk = b"\x01" * 2**18  # 256 KiB, four times a stream window
    count = 16

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/flood":
            for _ in range(count):
                await ws.send(chunk)
            await ws.send("done")
        async for message in ws:
            await ws.send(message)

    async with (
        shakehands.serve(handler, HOST, 0, ssl=server_context) as server,
        connect_session(f"wss://{HOST}:{server.port}/", ssl=client_context, max_queue=1) as session,
    ):
        flood = await session.connect("/flood")
        chat = await session.connect("/chat")
        # flood is not read: its stream window fills and its queue too; chat goes on.
        for i in range(50):
            await chat.send(f"m{i}")
            assert await chat.recv() == f"m{i}"
        received = [await flood.recv() for _ in range(count)]
        assert received == [chunk] * count
        assert await flood.recv() == "done"
        await chat.send("after")
        assert await chat.recv() == "after"


async def test_closing_codes_both_ways(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server_saw: list[int | None] = []
    done = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path == "/server-closes":
            await ws.close(4001, "bye from server")
            return
        await ws.wait_closed()
        server_saw.append(ws.close_code)
        done.set()

    async with (
        shakehands.serve(handler, HOST, 0, ssl=server_context) as server,
        connect_session(f"wss://{HOST}:{server.port}/", ssl=client_context) as session,
    ):
        ws = await session.connect("/server-closes")
        with pytest.raises(shakehands.ConnectionClosed):
            await ws.recv()
        assert (ws.close_code, ws.close_reason) == (4001, "bye from server")
        ws = await session.connect("/client-closes")
        await ws.close(4002, "bye from client")
        assert ws.close_code == 4002
        await asyncio.wait_for(done.wait(), 10)
    assert server_saw == [4002]


async def test_shutdown_closes_client_streams_with_1001(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.wait_closed()

    server = await shakehands.serve(handler, HOST, 0, ssl=server_context)
    session = await connect_session(f"wss://{HOST}:{server.port}/", ssl=client_context).open()
    sockets = [await session.connect(f"/{i}") for i in range(3)]
    server.close()
    await server.wait_closed()
    for ws in sockets:
        with pytest.raises(shakehands.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1001
    await session.close()


# -------------------------------------------------------------------------------------------
# The core's seam, no I/O
# -------------------------------------------------------------------------------------------


def test_core_builds_the_extended_connect() -> None:
    core = ClientProtocol(
        "wss://example.test:8443/chat?room=1",
        origin="https://example.test",
        subprotocols=["chat"],
        compression="deflate",
    )
    core.use_http2()
    core.send_request()
    assert core.data_to_send() == []
    fields = core.http2_request_fields()
    assert fields[:5] == [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", "/chat?room=1"),
        (":authority", "example.test:8443"),
    ]
    names = [name for name, _ in fields[5:]]
    assert names == [
        "sec-websocket-version",
        "origin",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    ]
    assert ("sec-websocket-version", "13") in fields
    assert core.request.method == "CONNECT" and core.request.version == "HTTP/2"


def test_core_checks_the_answer() -> None:
    core = ClientProtocol("wss://example.test/", subprotocols=["chat"])
    core.use_http2()
    core.receive_http2_response(Response(200, {"sec-websocket-protocol": "chat"}))
    assert core.state is State.OPEN
    assert core.subprotocol == "chat"
    assert isinstance(core.events_received()[0], Response)

    refused = ClientProtocol("wss://example.test/")
    refused.use_http2()
    refused.receive_http2_response(Response(403, body=b"no"))
    assert isinstance(refused.handshake_exc, InvalidStatus)
    assert refused.handshake_exc.response.status == 403

    upgraded = ClientProtocol("wss://example.test/")
    upgraded.use_http2()
    upgraded.receive_http2_response(Response(101))
    assert isinstance(upgraded.handshake_exc, InvalidStatus)

    wrong = ClientProtocol("wss://example.test/", subprotocols=["chat"])
    wrong.use_http2()
    wrong.receive_http2_response(Response(200, {"sec-websocket-protocol": "other"}))
    assert wrong.handshake_exc is not None and "not offered" in str(wrong.handshake_exc)

    http11 = ClientProtocol("wss://example.test/")
    with pytest.raises(InvalidHandshake):
        http11.receive_http2_response(Response(200))


async def test_a_server_that_never_sends_settings_times_out(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    server_context.set_alpn_protocols(["h2"])
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # TLS, ALPN h2, then not a byte

    server = await asyncio.start_server(silent, HOST, 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(shakehands.OpenTimeout) as timeout:
            await shakehands.connect(
                f"wss://{HOST}:{port}/", ssl=client_context, http2=True, open_timeout=0.5
            )
        assert timeout.value.phase == "HTTP/2 SETTINGS"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_session_paths_keep_the_query(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    seen: list[str] = []

    def process_request(request: shakehands.Request) -> None:
        seen.append(request.target)

    async with (
        echo_server("coroutine", ssl=server_context, process_request=process_request) as server,
        connect_session(f"wss://{HOST}:{server.port}/base", ssl=client_context) as session,
    ):
        await session.connect()
        await session.connect("room?id=7")
    assert seen == ["/base", "/room?id=7"]


def test_http2_option_is_checked() -> None:
    with pytest.raises(TypeError, match="http2 must be a bool or None"):
        shakehands.connect("wss://example.test/", http2="yes")  # type: ignore[arg-type]


def test_a_session_checks_its_options_before_any_io() -> None:
    with pytest.raises(TypeError, match="unknown client option"):
        connect_session("wss://example.test/", max_mesage_size=1)  # type: ignore[call-arg]


def test_goaway_filter_at_every_split() -> None:
    """Frames from a real h2 server connection, a graceful GOAWAY among them, fed in two
    parts at every possible split and byte by byte: the GOAWAY is taken out, everything else
    passes unchanged, in order."""
    import h2.config
    import h2.connection
    from hyperframe.frame import GoAwayFrame

    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    head = server.data_to_send()
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = 5
    goaway.error_code = 0
    data_frame = bytes.fromhex("000003000000000001") + b"abc"  # DATA, stream 1
    stream = head + data_frame + goaway.serialize() + data_frame + b"\x00" * 9  # empty DATA
    expected = head + data_frame + data_frame + b"\x00" * 9
    for split in range(len(stream) + 1):
        goaways = GoawayFilter()
        first, seen = goaways.feed(stream[:split])
        second, more = goaways.feed(stream[split:])
        assert first + second == expected, split
        assert seen + more == [(5, 0)], split
    goaways = GoawayFilter()
    out = b""
    seen = []
    for i in range(len(stream)):
        part, found = goaways.feed(stream[i : i + 1])
        out += part
        seen += found
    assert (out, seen) == (expected, [(5, 0)])
