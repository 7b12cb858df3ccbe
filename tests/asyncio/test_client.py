"""The shakehands client on real sockets: against shakehands servers, and against hand-made
servers (asyncio.start_server on 127.0.0.1) that answer wrongly on purpose."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

import shakehands
from shakehands import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidResponse,
    InvalidStatus,
    InvalidURI,
)

from ..helpers import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_for,
    close_payload,
    frame,
    frame_header,
)
from .asyncio_helpers import RawServer, RawServerConnection, echo_handler, echo_server, uri

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------------------------------------
# Against a shakehands server
# ---------------------------------------------------------------------------------------------


async def test_connect_context_manager_and_awaitable(api: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(5):
            async with shakehands.connect(uri(server)) as ws:
                assert isinstance(ws, shakehands.ClientConnection)
                assert ws.open
                await ws.send("a")
                assert await ws.recv() == "a"
            assert not ws.open
            assert ws.close_code == 1000
            ws = await shakehands.connect(uri(server))
            await ws.send(b"b")
            assert await ws.recv() == b"b"
            await ws.close()
            assert ws.close_code == 1000
            await ws.close()  # closing twice does nothing


async def test_client_request_response_addresses(api: str) -> None:
    async with (
        echo_server(api) as server,
        asyncio.timeout(5),
        shakehands.connect(
            uri(server, "/x?y=z"), origin="http://o.test", extra_headers={"X-A": "1"}
        ) as ws,
    ):
        assert ws.request is not None
        assert ws.request.target == "/x?y=z"
        assert ws.request.headers["Origin"] == "http://o.test"
        assert ws.request.headers["X-A"] == "1"
        assert ws.request.headers["Host"] == f"{HOST}:{server.port}"
        assert ws.response is not None and ws.response.status == 101
        assert ws.remote_address == (HOST, server.port)
        assert ws.local_address[0] == HOST


async def test_async_for_on_client_ends_quietly_on_server_close(api: str) -> None:
    class Sender(shakehands.Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            for i in range(3):
                ws.send(str(i))
            ws.close()

    async def handler(ws: shakehands.ServerConnection) -> None:
        for i in range(3):
            await ws.send(str(i))

    if api == "coroutine":
        server_cm = shakehands.serve(handler, HOST, 0)
    else:
        server_cm = shakehands.serve_callbacks(Sender(), HOST, 0)
    async with server_cm as server, asyncio.timeout(5), shakehands.connect(uri(server)) as ws:
        assert [m async for m in ws] == ["0", "1", "2"]
        assert ws.close_code == 1000
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_client_ping_returns_latency(api: str) -> None:
    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        async with asyncio.timeout(5):
            latency = await ws.ping()
            assert isinstance(latency, float)
            assert 0 <= latency < 1
            assert isinstance(await ws.ping(b"custom"), float)
            # Several pings in flight: each resolves.
            latencies = await asyncio.gather(*(ws.ping() for _ in range(5)))
            assert all(isinstance(x, float) for x in latencies)


async def test_client_ping_same_payload_twice_is_an_error(api: str) -> None:
    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        async with asyncio.timeout(5):
            first = asyncio.ensure_future(ws.ping(b"dup"))
            await asyncio.sleep(0)  # the first ping is sent and waits for its pong
            with pytest.raises(ValueError):
                await ws.ping(b"dup")
            assert isinstance(await first, float)


async def test_ping_after_close_raises(api: str) -> None:
    async with echo_server(api) as server, asyncio.timeout(5):
        ws = await shakehands.connect(uri(server))
        await ws.close()
        with pytest.raises(ConnectionClosedOK):
            await ws.ping()


async def test_client_message_too_big_1009(api: str) -> None:
    class Big(shakehands.Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            ws.send(b"x" * 2000)

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.send(b"x" * 2000)
        await ws.wait_closed()

    server_cm = (
        shakehands.serve(handler, HOST, 0)
        if api == "coroutine"
        else shakehands.serve_callbacks(Big(), HOST, 0)
    )
    async with server_cm as server, asyncio.timeout(5):
        ws = await shakehands.connect(uri(server), max_message_size=1000)
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        # We received no close frame; we sent 1009.
        assert excinfo.value.sent_code == 1009


# ---------------------------------------------------------------------------------------------
# Bad URIs, refused and failed connections
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["http://127.0.0.1/", "127.0.0.1:80", "ws:///path", "ws://127.0.0.1/#frag", "ws://1.2:x/"],
)
async def test_invalid_uri(bad: str) -> None:
    with pytest.raises(InvalidURI):
        await shakehands.connect(bad)


async def test_ssl_context_with_ws_uri_is_an_error() -> None:
    import ssl

    with pytest.raises(ValueError):
        shakehands.connect(f"ws://{HOST}:1/", ssl=ssl.create_default_context())


async def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    # Nobody listens on that port any more.
    async with asyncio.timeout(5):
        with pytest.raises(OSError):
            await shakehands.connect(f"ws://{HOST}:{port}/")


async def test_open_timeout_when_server_never_answers() -> None:
    async def silent(conn: RawServerConnection) -> None:
        await conn.read_request()
        await conn.read_eof()

    async with RawServer(silent) as raw:
        start = time.monotonic()
        async with asyncio.timeout(5):
            with pytest.raises(TimeoutError):
                await shakehands.connect(raw.uri, open_timeout=0.3)
            assert 0.25 < time.monotonic() - start < 2
            # The client dropped the connection.
            await raw.finished()


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 101 Switching",  # then EOF
    ],
    ids=["200", "bad accept", "no upgrade", "garbage", "truncated"],
)
async def test_bad_handshake_responses(response: bytes) -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.read_request()
        conn.writer.write(response)
        await conn.writer.drain()
        conn.writer.close()

    async with RawServer(script) as raw, asyncio.timeout(5):
        with pytest.raises(InvalidResponse) as excinfo:
            await shakehands.connect(raw.uri)
        if response.startswith(b"HTTP/1.1 200"):
            assert isinstance(excinfo.value, InvalidStatus)
            assert excinfo.value.response.status == 200
            assert excinfo.value.response.body == b"hello"


async def test_oversized_response_headers_are_an_invalid_response() -> None:
    # Not HeadersTooLarge ("request headers too large", the server's 431): the server is at
    # fault, and the client says so in response wording.
    async def script(conn: RawServerConnection) -> None:
        await conn.read_request()
        conn.writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        )
        await conn.writer.drain()
        conn.writer.close()

    async with RawServer(script) as raw, asyncio.timeout(5):
        with pytest.raises(InvalidResponse, match="response headers too large") as excinfo:
            await shakehands.connect(raw.uri)
        assert not isinstance(excinfo.value, shakehands.HeadersTooLarge)


async def test_server_picks_subprotocol_not_offered() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.accept(b"Sec-WebSocket-Protocol: evil\r\n")
        await conn.read_eof()

    async with RawServer(script) as raw, asyncio.timeout(5):
        with pytest.raises(InvalidResponse):
            await shakehands.connect(raw.uri, subprotocols=["good"])


async def test_server_closes_during_handshake() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.read_request()

    async with RawServer(script) as raw, asyncio.timeout(5):
        with pytest.raises(InvalidResponse):
            await shakehands.connect(raw.uri)


# ---------------------------------------------------------------------------------------------
# Wire behaviour against a hand-made server
# ---------------------------------------------------------------------------------------------


async def test_client_masks_frames_and_answers_pings() -> None:
    async def script(conn: RawServerConnection) -> None:
        headers = await conn.accept()
        assert headers["sec-websocket-version"] == "13"
        assert headers["upgrade"].lower() == "websocket"
        # The very first frame may arrive in the same segment as the 101.
        assert await conn.read_frame() == (True, OP_TEXT, b"hello")
        conn.send_frame(OP_PING, b"are you there")
        assert await conn.read_frame() == (True, OP_PONG, b"are you there")
        conn.send_frame(OP_BINARY, b"\x01" * 70000)
        assert await conn.read_frame() == (True, OP_BINARY, b"\x01" * 70000)
        conn.send_frame(OP_CLOSE, close_payload(1000, "bye"))
        assert await conn.read_frame() == (True, OP_CLOSE, close_payload(1000))
        # The server closes TCP first; the client then sees EOF and closes too.
        conn.writer.close()

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri)
        await ws.send("hello")
        assert await ws.recv() == b"\x01" * 70000
        await ws.send(b"\x01" * 70000)
        with pytest.raises(ConnectionClosedOK) as excinfo:
            await ws.recv()
        assert (excinfo.value.code, excinfo.value.reason) == (1000, "bye")
        await ws.wait_closed()
        await raw.finished()


async def test_first_frame_in_the_same_segment_as_the_101() -> None:
    async def script(conn: RawServerConnection) -> None:
        headers = await conn.read_request()
        conn.writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_for(headers['sec-websocket-key'])}\r\n\r\n".encode()
            + frame(OP_TEXT, b"welcome", mask=False)
        )
        await conn.read_eof()

    async with (
        RawServer(script) as raw,
        asyncio.timeout(5),
        shakehands.connect(raw.uri, close_timeout=0.2) as ws,
    ):
        assert await ws.recv() == "welcome"


async def test_masked_frame_from_server_fails_with_1002() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        conn.send_frame(OP_TEXT, b"masked", mask=True)
        fin, opcode, payload = await conn.read_frame()
        assert opcode == OP_CLOSE
        assert struct.unpack("!H", payload[:2])[0] == 1002
        # The client closes TCP itself after failing the connection.
        assert await conn.read_eof() == b""

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri)
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert excinfo.value.sent_code == 1002
        await ws.wait_closed()
        await raw.finished()


async def test_client_oversized_frame_header_1009() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        conn.writer.write(frame_header(OP_BINARY, 100 * 2**20, mask=False))
        fin, opcode, payload = await conn.read_frame()
        assert opcode == OP_CLOSE
        assert struct.unpack("!H", payload[:2])[0] == 1009

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri)
        with pytest.raises(ConnectionClosedError):
            await ws.recv()
        await raw.finished()


async def test_client_close_timeout_when_server_never_answers_close() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        assert (await conn.read_frame())[1] == OP_CLOSE
        # No answer; the client must give up after close_timeout and close TCP.
        assert await conn.read_eof() == b""

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri, close_timeout=0.3)
        start = time.monotonic()
        await ws.close()
        assert 0.25 < time.monotonic() - start < 2
        assert ws.close_code == 1006
        await raw.finished()


async def test_client_close_timeout_when_server_keeps_tcp_open() -> None:
    """The server answers the close frame but never closes TCP: the client closes it after
    close_timeout (RFC 6455 §7.1.1 lets the server close first)."""

    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        assert await conn.read_frame() == (True, OP_CLOSE, close_payload(1000))
        conn.send_frame(OP_CLOSE, close_payload(1000))
        assert await conn.read_eof() == b""

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri, close_timeout=0.3)
        start = time.monotonic()
        await ws.close()
        assert 0.25 < time.monotonic() - start < 2
        assert ws.close_code == 1000
        await raw.finished()


async def test_client_sees_1006_when_server_vanishes() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        conn.writer.transport.abort()

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri)
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert excinfo.value.code == 1006
        with pytest.raises(ConnectionClosedError):
            await ws.send("x")


async def test_client_against_shakehands_server_many_sizes() -> None:
    async with (
        shakehands.serve(echo_handler, HOST, 0, max_message_size=None) as server,
        asyncio.timeout(10),
        shakehands.connect(uri(server), max_message_size=None) as ws,
    ):
        for size in (0, 1, 125, 126, 127, 65535, 65536, 65537, 3 * 2**20):
            payload = bytes([size % 251]) * size
            await ws.send(payload)
            assert await ws.recv() == payload


@pytest.mark.parametrize(
    "answer",
    # (An HTTP/1.0 answer is read as one: NotWebSocketServer, see tests/client/test_errors.py.)
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"HTTP/2.0 200 OK\r\n\r\n", b"\x00\x01garbage"],
    ids=["ssh", "http/2.0", "binary"],
)
async def test_invalid_status_line_is_quoted(answer: bytes) -> None:
    """``invalid status line`` shows what came instead (cut short), at once."""

    async def script(conn: RawServerConnection) -> None:
        await conn.read_request()
        conn.writer.write(answer)
        await conn.reader.read()  # hold the connection open until the client leaves

    async with RawServer(script) as raw, asyncio.timeout(5):
        with pytest.raises(InvalidResponse) as excinfo:
            await shakehands.connect(raw.uri)
    line = answer.partition(b"\r\n")[0]
    assert str(excinfo.value) == f"invalid status line: {line!r}"


async def test_a_long_invalid_status_line_is_cut_short() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.read_request()
        conn.writer.write(b"NOPE " + b"x" * 500 + b"\r\n\r\n")
        await conn.reader.read()

    async with RawServer(script) as raw, asyncio.timeout(5):
        with pytest.raises(InvalidResponse) as excinfo:
            await shakehands.connect(raw.uri)
    assert str(excinfo.value) == "invalid status line: " + repr(b"NOPE " + b"x" * 55) + "..."
