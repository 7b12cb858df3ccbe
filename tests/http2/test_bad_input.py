"""Bad input over HTTP/2: refused streams, and floods that end the connection, bounded.

Each case is a hostile client written with ``h2`` (and raw frames where ``h2`` would not send
them) over a real TLS socket to 127.0.0.1. A bad request is refused on its stream and the
connection carries on; a flood (rapid reset, PING, SETTINGS, WINDOW_UPDATE overflow, HPACK
bomb, too many streams) ends the connection with GOAWAY, and the server goes on serving.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hyperframe.frame import ContinuationFrame, HeadersFrame, WindowUpdateFrame

import shakehands
from shakehands.http2.server import HTTP2Connection

from ..asyncio.asyncio_helpers import echo_server, wait_for_condition
from .h2_helpers import H2Client, h2_client

pytestmark = pytest.mark.timeout(60)

ENHANCE_YOUR_CALM = 0xB
FLOW_CONTROL_ERROR = 0x3
PROTOCOL_ERROR = 0x1


async def still_serving(port: int, certificate: tuple[Path, Path]) -> None:
    """A new connection to the server echoes: it survived."""
    async with h2_client(port, certificate) as client:
        stream = client.websocket()
        await client.accepted(stream)
        client.send_text(stream, "alive")
        assert await client.message(stream) == "alive"


async def echo_still_works(client: H2Client) -> None:
    stream = client.websocket()
    await client.accepted(stream)
    client.send_text(stream, "carry on")
    assert await client.message(stream) == "carry on"
    assert client.goaways == []


# -----------------------------------------------------------------------------------------
# Refused streams
# -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        pytest.param({"protocol": None}, 501, id="connect-without-protocol"),
        pytest.param({"protocol": "chat"}, 501, id="wrong-protocol"),
        pytest.param({"version": None}, 426, id="no-version"),
        pytest.param({"version": "8"}, 426, id="wrong-version"),
    ],
)
async def test_bad_extended_connect_is_refused_on_its_stream(
    api: str,
    certificate: tuple[Path, Path],
    server_context: ssl.SSLContext,
    kwargs: dict[str, str | None],
    status: int,
) -> None:
    async with (
        echo_server(api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        if kwargs.get("protocol", "websocket") is None:
            # A plain CONNECT (RFC 9113 §8.5) has neither :scheme nor :path.
            port = server.port
            bad = client.request(
                "CONNECT",
                pseudo=[(":method", "CONNECT"), (":authority", f"localhost:{port}")],
                end=False,
            )
        else:
            bad = client.websocket(**kwargs)  # type: ignore[arg-type]
        await client.wait(bad, lambda s: s.ended or s.reset is not None)
        assert bad.status == status
        if status == 426:
            assert bad.headers is not None and bad.headers["sec-websocket-version"] == "13"
        await echo_still_works(client)


async def test_extended_connect_without_the_setting_is_reset(
    certificate: tuple[Path, Path],
    server_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(HTTP2Connection, "enable_connect_protocol", False)

    def page(request: shakehands.Request) -> shakehands.Response | None:
        return None if request.is_upgrade else shakehands.Response(200, body=b"page")

    async with (
        echo_server("coroutine", ssl=server_context, process_request=page) as server,
        h2_client(server.port, certificate) as client,
    ):
        assert not client.peer_extended_connect
        stream = client.websocket()
        await client.wait(stream, lambda s: s.reset is not None or s.ended)
        assert stream.reset == PROTOCOL_ERROR and stream.status is None
        get = client.request("GET", "/")
        await client.wait(get, lambda s: s.ended)
        assert get.status == 200 and bytes(get.data) == b"page"
        assert client.goaways == []


async def test_too_many_header_fields_get_431(
    api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(api, ssl=server_context, max_headers=20) as server,
        h2_client(server.port, certificate) as client,
    ):
        bad = client.websocket(extra=[(f"x-h{i}", "v") for i in range(30)])
        await client.wait(bad, lambda s: s.ended or s.reset is not None)
        assert bad.status == 431
        await echo_still_works(client)


async def test_max_connections_answers_503_on_the_stream(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server("coroutine", ssl=server_context, max_connections=1) as server,
        h2_client(server.port, certificate) as client,
    ):
        first = client.websocket()
        await client.accepted(first)
        second = client.websocket()
        await client.wait(second, lambda s: s.ended)
        assert second.status == 503
        client.send_text(first, "first still works")
        assert await client.message(first) == "first still works"


# -----------------------------------------------------------------------------------------
# Floods: GOAWAY, and the server goes on
# -----------------------------------------------------------------------------------------


async def test_rapid_reset_gets_goaway(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context) as server:
        async with h2_client(server.port, certificate) as client:
            for _ in range(HTTP2Connection.reset_limit * 3):
                stream = client.websocket()
                client.conn.reset_stream(stream.stream_id)
            client.flush()
            await client.wait_closed()
            assert client.goaways[-1][1] == ENHANCE_YOUR_CALM
        await still_serving(server.port, certificate)


@pytest.mark.parametrize("kind", ["ping", "settings"])
async def test_control_frame_flood_gets_goaway(
    kind: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context) as server:
        async with h2_client(server.port, certificate) as client:
            for i in range(HTTP2Connection.control_limit * 3):
                if kind == "ping":
                    client.conn.ping(i.to_bytes(8, "big"))
                else:
                    client.conn.update_settings({0x4: 65535 + i % 2})  # INITIAL_WINDOW_SIZE
            client.flush()
            await client.wait_closed()
            assert client.goaways[-1][1] == ENHANCE_YOUR_CALM
        await still_serving(server.port, certificate)


async def test_window_update_overflow_is_a_connection_error(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context) as server:
        async with h2_client(server.port, certificate) as client:
            frame = WindowUpdateFrame(0)
            frame.window_increment = 2**31 - 1  # on top of 65535: beyond 2**31 - 1
            client.send_raw(frame.serialize())
            await client.wait_closed()
            assert client.goaways[-1][1] == FLOW_CONTROL_ERROR
        await still_serving(server.port, certificate)


async def test_stream_window_update_overflow_is_refused(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server("coroutine", ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        stream = client.websocket()
        await client.accepted(stream)
        frame = WindowUpdateFrame(stream.stream_id)
        frame.window_increment = 2**31 - 1
        client.send_raw(frame.serialize())
        await client.wait(stream, lambda s: s.reset is not None or s.ended)
        assert stream.reset == FLOW_CONTROL_ERROR  # a stream error: the connection lives
        await wait_for_condition(lambda: not server.connections)  # its WebSocket is gone
        await echo_still_works(client)


@pytest.mark.parametrize("shape", ["large", "bomb"])
async def test_header_list_over_the_limit_ends_the_connection(
    shape: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context) as server:
        async with h2_client(server.port, certificate) as client:
            if shape == "large":
                extra = [(f"x-big-{i}", "v" * 1000) for i in range(40)]  # 40 kB
            else:
                # HPACK bomb: one 4 kB field in the dynamic table, then 1-byte references
                # to it: a few kB on the wire, 400 kB decoded.
                extra = [("x-bomb", "b" * 4000)] * 100
            stream = client.websocket(extra=extra)
            await client.wait_closed()
            assert stream.status is None
            assert client.goaways == [(0, ENHANCE_YOUR_CALM)]  # one GOAWAY, h2's
        await still_serving(server.port, certificate)


async def test_more_streams_than_the_setting_ends_the_connection(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context, http2_max_streams=5) as server:
        async with h2_client(server.port, certificate) as client:
            assert client.conn.remote_settings.max_concurrent_streams == 5
            await client.websockets(5)
            # h2 will not open a 6th: a raw HEADERS frame does.
            block = client.conn.encoder.encode(
                [
                    (":method", "CONNECT"),
                    (":protocol", "websocket"),
                    (":scheme", "https"),
                    (":path", "/"),
                    (":authority", "localhost"),
                    ("sec-websocket-version", "13"),
                ]
            )
            frame = HeadersFrame(101, block, flags=["END_HEADERS"])
            client.send_raw(frame.serialize())
            await client.wait_closed()
            assert client.goaways and client.goaways[-1][1] == PROTOCOL_ERROR
        await still_serving(server.port, certificate)


async def test_continuation_flood_ends_the_connection(
    certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with echo_server("coroutine", ssl=server_context) as server:
        async with h2_client(server.port, certificate) as client:
            # A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION
            # frames (CVE-2024-27316). h2 keeps at most 64 of them.
            frames = [HeadersFrame(1, b"")] + [ContinuationFrame(1, b"") for _ in range(200)]
            client.send_raw(b"".join(f.serialize() for f in frames))
            await client.wait_closed()
            assert client.goaways and client.goaways[-1][1] != 0
        await still_serving(server.port, certificate)


def test_http2_option_is_validated() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        pass

    with pytest.raises(TypeError, match="http2"):
        shakehands.serve(handler, "127.0.0.1", 0, http2="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http2_max_streams"):
        shakehands.serve(handler, "127.0.0.1", 0, http2_max_streams=0)
