"""Servers on real sockets: echo, process_request, refused handshakes, closing, timeouts.

Every test that applies to both server APIs runs against ``serve`` (coroutine handlers) and
``serve_callbacks`` (a Listener) through the ``api`` fixture.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    Listener,
    Request,
    Response,
)

from ..helpers import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    accept_for,
    close_payload,
    frame,
    frame_header,
    make_key,
    upgrade_request,
)
from ..test_docs import README_SERVERS, start_server_block, stop
from .asyncio_helpers import (
    RawClient,
    echo_handler,
    echo_server,
    raw_exchange,
    uri,
    wait_for_condition,
)

pytestmark = pytest.mark.timeout(30)


async def assert_echo(server: shakehands.Server[Any], message: str | bytes = "ping") -> None:
    """A fresh shakehands client gets ``message`` echoed: the server is up and serving."""
    async with asyncio.timeout(5), shakehands.connect(uri(server)) as ws:
        await ws.send(message)
        assert await ws.recv() == message


def serve_api(api: str, handler: Any, listener: Listener, **options: Any) -> Any:
    if api == "coroutine":
        return shakehands.serve(handler, HOST, 0, **options)
    return shakehands.serve_callbacks(listener, HOST, 0, **options)


# ---------------------------------------------------------------------------------------------
# Echo
# ---------------------------------------------------------------------------------------------


async def test_echo_text_binary_empty(api: str) -> None:
    messages: list[str | bytes] = [
        "hello",
        "滴水之恩当以涌泉相报 🎉",
        b"\x00\x01\x02\xff",
        "",
        b"",
    ]
    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        async with asyncio.timeout(5):
            for message in messages:
                await ws.send(message)
                echoed = await ws.recv()
                assert echoed == message
                assert type(echoed) is type(message)


async def test_echo_bytearray_and_memoryview(api: str) -> None:
    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        async with asyncio.timeout(5):
            await ws.send(bytearray(b"abc"))
            assert await ws.recv() == b"abc"
            await ws.send(memoryview(b"xyzw")[1:3])
            assert await ws.recv() == b"yz"


@pytest.mark.parametrize("size", [1024, 65536, 2**20, 16 * 2**20], ids=["1K", "64K", "1M", "16M"])
async def test_echo_large_binary(api: str, size: int) -> None:
    payload = bytes(range(256)) * (size // 256)
    async with (
        echo_server(api, max_message_size=None) as server,
        shakehands.connect(uri(server), max_message_size=None) as ws,
    ):
        async with asyncio.timeout(20):
            await ws.send(payload)
            assert await ws.recv() == payload


async def test_echo_large_text(api: str) -> None:
    text = "é漢🎉x" * (2**20 // 10)  # about 1 MiB of UTF-8 with 1- to 4-byte characters
    async with (
        echo_server(api, max_message_size=4 * 2**20) as server,
        shakehands.connect(uri(server), max_message_size=4 * 2**20) as ws,
    ):
        async with asyncio.timeout(10):
            await ws.send(text)
            assert await ws.recv() == text


async def test_echo_fragmented_iterable(api: str) -> None:
    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        async with asyncio.timeout(5):
            await ws.send(["frag", "mented ", "", "tëxt"])
            assert await ws.recv() == "fragmented tëxt"
            await ws.send([b"\x01", b"\x02\x03", b"\x04" * 70000])
            assert await ws.recv() == b"\x01\x02\x03" + b"\x04" * 70000
            # A multi-byte character cut across fragments is reassembled.
            encoded = "漢字".encode()
            await ws.send(iter([encoded[:2], encoded[2:]]))
            assert await ws.recv() == encoded
            # An empty iterable sends nothing: the next message is the next one echoed.
            await ws.send([])
            await ws.send("after")
            assert await ws.recv() == "after"


async def test_echo_fragmented_async_iterable(api: str) -> None:
    async def fragments() -> Any:
        for part in ("a", "sync ", "frag", "ments"):
            await asyncio.sleep(0)
            yield part

    async def binary_fragments() -> Any:
        for i in range(10):
            yield bytes([i]) * 1000

    async with echo_server(api) as server, shakehands.connect(uri(server)) as ws:
        async with asyncio.timeout(5):
            await ws.send(fragments())
            assert await ws.recv() == "async fragments"
            await ws.send(binary_fragments())
            assert await ws.recv() == b"".join(bytes([i]) * 1000 for i in range(10))


async def test_fragments_on_the_wire(api: str) -> None:
    """The server reassembles fragments sent by a raw client, with a ping in between."""
    async with echo_server(api) as server:
        client = await RawClient.open(server.port)
        try:
            async with asyncio.timeout(5):
                await client.handshake(server.port)
                client.send_frame(OP_TEXT, b"he", fin=False)
                client.send_frame(0x9, b"p")  # ping between fragments
                client.send_frame(0x0, b"llo", fin=False)
                client.send_frame(0x0, b"", fin=True)
                assert await client.read_frame() == (True, 0xA, b"p")
                assert await client.read_frame() == (True, OP_TEXT, b"hello")
                client.send_frame(OP_CLOSE, close_payload(1000))
                assert await client.read_close() == (1000, "")
                assert await client.read_eof() == b""
        finally:
            await client.close()


async def test_many_concurrent_clients(api: str) -> None:
    n_clients, n_messages = 50, 20

    async def client(i: int) -> None:
        async with shakehands.connect(uri(server)) as ws:
            for j in range(n_messages):
                message: str | bytes = f"{i}-{j}" if j % 2 else f"{i}-{j}".encode()
                await ws.send(message)
                assert await ws.recv() == message
            # Pipelined too: everything out, then everything back, in order.
            for j in range(n_messages):
                await ws.send(f"p{i}-{j}")
            for j in range(n_messages):
                assert await ws.recv() == f"p{i}-{j}"

    async with echo_server(api) as server:
        async with asyncio.timeout(20):
            await asyncio.gather(*(client(i) for i in range(n_clients)))
        await wait_for_condition(lambda: not server.connections)


async def test_serve_is_awaitable(api: str) -> None:
    server = await echo_server(api)
    try:
        assert server.sockets[0].getsockname()[0] == HOST
        await assert_echo(server)
    finally:
        server.close()
        async with asyncio.timeout(5):
            await server.wait_closed()


async def test_serve_forever_returns_after_close(api: str) -> None:
    async with echo_server(api) as server:
        task = asyncio.create_task(server.serve_forever())
        await assert_echo(server)
        server.close()
        async with asyncio.timeout(5):
            await task
            await server.wait_closed()


# ---------------------------------------------------------------------------------------------
# process_request
# ---------------------------------------------------------------------------------------------


async def test_process_request_sees_the_request(api: str) -> None:
    seen: list[Request] = []

    def process_request(request: Request) -> None:
        seen.append(request)

    async with (
        echo_server(api, process_request=process_request, subprotocols=["chat"]) as server,
        shakehands.connect(
            uri(server, "/rooms/42?user=ann&x=1"),
            origin="http://example.test",
            subprotocols=["chat", "superchat"],
            extra_headers=[("X-Token", "secret"), ("X-Multi", "a"), ("X-Multi", "b")],
        ) as ws,
    ):
        await ws.send("upgraded")
        assert await ws.recv() == "upgraded"
        port = server.port
    (request,) = seen
    assert request.method == "GET"
    assert request.path == "/rooms/42"
    assert request.query == "user=ann&x=1"
    assert request.target == "/rooms/42?user=ann&x=1"
    assert request.host == f"{HOST}:{port}"
    assert request.origin == "http://example.test"
    assert request.subprotocols == ["chat", "superchat"]
    assert request.headers["x-token"] == "secret"
    assert request.headers.get_all("X-Multi") == ["a", "b"]
    assert request.is_upgrade
    assert request.remote_address is not None
    assert request.remote_address[0] == "127.0.0.1"
    assert request.remote_address == ws.local_address


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_request_404_raw_socket(api: str, is_async: bool) -> None:
    def refuse(request: Request) -> Response | None:
        if request.path == "/missing":
            return Response(404, body=b"no such room\n", headers=[("X-Why", "test")])
        return None

    async def refuse_async(request: Request) -> Response | None:
        await asyncio.sleep(0.01)
        return refuse(request)

    hook = refuse_async if is_async else refuse
    async with echo_server(api, process_request=hook) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            client.send(upgrade_request(server.port, "/missing"))
            head = await client.reader.readuntil(b"\r\n")
            assert head == b"HTTP/1.1 404 Not Found\r\n"
            client.send(b"")  # nothing more to say
            rest = await client.read_eof()
            await client.close()
            headers, _, body = rest.partition(b"\r\n\r\n")
            assert b"X-Why: test" in headers
            assert b"Content-Length: 13" in headers
            assert b"Connection: close" in headers
            assert body == b"no such room\n"
            # A plain HTTP GET (no upgrade) goes through the hook too.
            status, _, body, after = await raw_exchange(
                server.port, upgrade_request(server.port, "/missing", upgrade=False)
            )
            assert (status, body, after) == (404, b"no such room\n", b"")
            # Other paths are upgraded.
            await assert_echo(server)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_request_404_client_raises_invalid_status(api: str, is_async: bool) -> None:
    def refuse(request: Request) -> Response:
        return Response(404, body=b"not here\n")

    async def refuse_async(request: Request) -> Response:
        return refuse(request)

    async with echo_server(api, process_request=refuse_async if is_async else refuse) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server))
            assert excinfo.value.response.status == 404
            assert excinfo.value.response.body == b"not here\n"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_request_str_body_and_dict_headers_reach_the_client(
    api: str, is_async: bool
) -> None:
    def refuse(request: Request) -> Response:
        return Response(401, {"WWW-Authenticate": "Bearer"}, "missing token")

    async def refuse_async(request: Request) -> Response:
        return refuse(request)

    async with echo_server(api, process_request=refuse_async if is_async else refuse) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server))
            response = excinfo.value.response
            assert response.status == 401
            assert response.body == b"missing token"
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_query_params_reach_process_request_and_the_handler() -> None:
    seen: list[dict[str, list[str]]] = []

    def process_request(request: Request) -> Response | None:
        seen.append(request.params)
        if request.param("token") != "s3cret":
            return Response(401, body="missing token")
        return None

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        await ws.send(repr(sorted(ws.request.params.items())))

    async with shakehands.serve(handler, HOST, 0, process_request=process_request) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidStatus):
                await shakehands.connect(uri(server, "/notify?room=a"))
            async with shakehands.connect(
                uri(server, "/notify?token=s3cret&room=a&room=b%20c")
            ) as ws:
                assert await ws.recv() == repr([("room", ["a", "b c"]), ("token", ["s3cret"])])
    assert seen == [{"room": ["a"]}, {"token": ["s3cret"], "room": ["a", "b c"]}]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_refused_connection_is_released_promptly(api: str, is_async: bool) -> None:
    """After a refusal, the server's end goes as soon as the client goes, not after
    close_timeout: the connection leaves server.connections."""

    def refuse(request: Request) -> Response:
        return Response(403, body=b"go away\n")

    async def refuse_async(request: Request) -> Response:
        return refuse(request)

    hook = refuse_async if is_async else refuse
    async with echo_server(api, process_request=hook, close_timeout=10) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidStatus):
                await shakehands.connect(uri(server))
            await wait_for_condition(lambda: not server.connections, timeout=2)
            client = await RawClient.open(server.port)
            client.send(upgrade_request(server.port))
            status, _, _ = await client.read_response()
            assert status == 403
            assert await client.read_eof() == b""
            await client.close()
            await wait_for_condition(lambda: not server.connections, timeout=2)


async def test_process_request_async_none_upgrades(api: str) -> None:
    calls = []

    async def process_request(request: Request) -> None:
        await asyncio.sleep(0.05)
        calls.append(request.path)

    async with (
        echo_server(api, process_request=process_request) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server, "/ok")) as ws,
    ):
        await ws.send("x")
        assert await ws.recv() == "x"
    assert calls == ["/ok"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_request_raises_500_and_server_stays_up(api: str, is_async: bool) -> None:
    def broken(request: Request) -> None:
        if request.path == "/boom":
            raise RuntimeError("boom")

    async def broken_async(request: Request) -> None:
        broken(request)

    async with echo_server(api, process_request=broken_async if is_async else broken) as server:
        async with asyncio.timeout(5):
            status, headers, body, rest = await raw_exchange(
                server.port, upgrade_request(server.port, "/boom")
            )
            assert status == 500
            assert body == b"Internal Server Error\n"
            assert rest == b""
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server, "/boom"))
            assert excinfo.value.response.status == 500
            await assert_echo(server)


async def test_process_request_bad_return_value_500(api: str) -> None:
    async with echo_server(api, process_request=lambda request: "not a response") as server:
        async with asyncio.timeout(5):
            status, _, _, rest = await raw_exchange(server.port, upgrade_request(server.port))
            assert (status, rest) == (500, b"")


async def test_process_request_custom_upgrade_headers_via_response_101_not_needed(
    api: str,
) -> None:
    """A hook returning a redirect: status and headers are sent as given."""

    def redirect(request: Request) -> Response:
        return Response(302, headers=[("Location", "/elsewhere")])

    async with echo_server(api, process_request=redirect) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server))
            response = excinfo.value.response
            assert response.status == 302
            assert response.headers["Location"] == "/elsewhere"


# ---------------------------------------------------------------------------------------------
# Refused handshakes (raw sockets)
# ---------------------------------------------------------------------------------------------

TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100c4010000c00303" + "ab" * 32 + "00" + "0004130113020100" + "0093" + "00" * 147
)


def bad_requests(port: int) -> dict[str, tuple[bytes, int]]:
    many_headers = [(f"X-H{i}", "v") for i in range(200)]
    return {
        "plain GET": (upgrade_request(port, upgrade=False), 426),
        "bad key": (
            upgrade_request(port, extra=[]).replace(
                b"Sec-WebSocket-Key: ", b"Sec-WebSocket-Key: x"
            ),
            400,
        ),
        "short key": (upgrade_request(port, key="c2hvcnQ="), 400),
        "version 8": (upgrade_request(port, version="8"), 426),
        "POST": (upgrade_request(port, method="POST"), 405),
        "too many headers": (upgrade_request(port, extra=many_headers), 431),
        "TLS ClientHello": (TLS_CLIENT_HELLO, 400),
        "HTTP/1.0": (upgrade_request(port).replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
        "no Host": (upgrade_request(port).replace(f"Host: {HOST}:{port}\r\n".encode(), b""), 400),
        "garbage": (b"\x00\x01\x02\x03\r\n\r\n", 400),
    }


@pytest.mark.parametrize(
    "case",
    [
        "plain GET",
        "bad key",
        "short key",
        "version 8",
        "POST",
        "too many headers",
        "TLS ClientHello",
        "HTTP/1.0",
        "no Host",
        "garbage",
    ],
)
async def test_refused_handshake(api: str, case: str) -> None:
    async with echo_server(api) as server:
        data, expected = bad_requests(server.port)[case]
        async with asyncio.timeout(5):
            status, headers, body, rest = await raw_exchange(server.port, data)
            assert status == expected, body
            assert headers["connection"] == "close"
            assert body  # a plain-text explanation
            assert rest == b""  # then the server closed the socket
            if case == "version 8":
                assert headers["sec-websocket-version"] == "13"
            if case == "plain GET":
                assert headers["upgrade"].lower() == "websocket"
            if case == "POST":
                assert headers["allow"] == "GET"
            await assert_echo(server)
        await wait_for_condition(lambda: not server.connections, timeout=2)


async def test_header_line_too_long_refused_without_buffering_it_all(api: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            client.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 100_000)
            status, _, _ = await client.read_response()
            assert status in (400, 431)
            await client.read_eof()
            await client.close()
            await assert_echo(server)


async def test_origins_allow_list(api: str) -> None:
    origins = ["https://good.test", None]
    async with echo_server(api, origins=origins) as server:
        async with asyncio.timeout(5):
            async with shakehands.connect(uri(server), origin="https://good.test") as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
            # None in the list: no Origin header (not a browser) is allowed.
            await assert_echo(server)
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server), origin="https://evil.test")
            assert excinfo.value.response.status == 403
            status, _, _, rest = await raw_exchange(
                server.port, upgrade_request(server.port, extra=[("Origin", "https://evil.test")])
            )
            assert (status, rest) == (403, b"")


async def test_origins_without_none_refuses_missing_origin(api: str) -> None:
    async with echo_server(api, origins=["https://good.test"]) as server:
        async with asyncio.timeout(5):
            with pytest.raises(InvalidStatus) as excinfo:
                await shakehands.connect(uri(server))
            assert excinfo.value.response.status == 403


async def test_subprotocol_negotiation(api: str) -> None:
    server_side: list[str | None] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        server_side.append(ws.subprotocol)
        await ws.send(str(ws.subprotocol))

    class Proto(Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            server_side.append(ws.subprotocol)
            ws.send(str(ws.subprotocol))

    async with serve_api(api, handler, Proto(), subprotocols=["superchat", "chat"]) as server:
        async with asyncio.timeout(5):
            # The client's order of preference wins among those the server speaks.
            async with shakehands.connect(uri(server), subprotocols=["chat", "superchat"]) as ws:
                assert ws.subprotocol == "chat"
                assert ws.response is not None
                assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat"
                assert await ws.recv() == "chat"
            async with shakehands.connect(uri(server), subprotocols=["other"]) as ws:
                assert ws.subprotocol is None
                assert await ws.recv() == "None"
            async with shakehands.connect(uri(server)) as ws:
                assert ws.subprotocol is None
                assert await ws.recv() == "None"
    assert server_side == ["chat", None, None]


async def test_select_subprotocol(api: str) -> None:
    def select(request: Request, offered: Any) -> str | None:
        return offered[-1] if offered else None

    async with echo_server(api, select_subprotocol=select) as server:
        async with asyncio.timeout(5):
            async with shakehands.connect(uri(server), subprotocols=["a", "b", "c"]) as ws:
                assert ws.subprotocol == "c"


# ---------------------------------------------------------------------------------------------
# The connection object on the server: request, close codes, exceptions
# ---------------------------------------------------------------------------------------------


async def test_server_connection_request_and_addresses() -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: shakehands.ServerConnection) -> None:
        seen["request"] = ws.request
        seen["response"] = ws.response
        seen["remote"] = ws.remote_address
        seen["local"] = ws.local_address
        seen["open"] = ws.open
        seen["close_code"] = ws.close_code
        await ws.send("hello")

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server, "/p?q=1")) as ws,
    ):
        assert await ws.recv() == "hello"
        assert ws.request is not None and ws.request.target == "/p?q=1"
        assert ws.response is not None and ws.response.status == 101
        port = server.port
    request = seen["request"]
    assert request.path == "/p" and request.query == "q=1"
    assert request.remote_address[0] == "127.0.0.1"
    assert seen["response"].status == 101
    assert seen["remote"] == request.remote_address
    assert seen["local"] == (HOST, port)
    assert seen["open"] is True
    assert seen["close_code"] is None


async def test_server_initiated_close_with_custom_code() -> None:
    done: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.close(4000, "bye now")
        assert not ws.open
        with pytest.raises(ConnectionClosed) as excinfo:
            await ws.recv()
        done.set_result((ws.close_code, ws.close_reason, excinfo.value))

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert excinfo.value.code == 4000
        assert excinfo.value.reason == "bye now"
        assert ws.close_code == 4000
        assert ws.close_reason == "bye now"
        await ws.wait_closed()
        server_code, server_reason, server_exc = await done
    # The client echoed the code (RFC 6455 §5.5.1).
    assert server_code == 4000
    assert server_reason == ""
    assert isinstance(server_exc, ConnectionClosedError)
    assert server_exc.sent_code == 4000


async def test_client_initiated_close_with_custom_code() -> None:
    done: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            done.set_result((type(exc), exc.code, exc.reason, ws.close_code, ws.close_reason))
            raise

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(5):
            ws = await shakehands.connect(uri(server))
            assert ws.close_code is None
            await ws.close(4000, "client leaving")
            assert ws.close_code == 4000
            assert ws.close_reason == ""
            exc_type, code, reason, close_code, close_reason = await done
    assert exc_type is ConnectionClosedError
    assert (code, reason) == (4000, "client leaving")
    assert (close_code, close_reason) == (4000, "client leaving")


async def test_clean_close_ends_async_for_quietly_then_recv_and_send_raise() -> None:
    result: asyncio.Future[list[BaseException]] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        received = [message async for message in ws]
        assert received == ["one", "two"]
        errors: list[BaseException] = []
        for operation in (ws.recv(), ws.send("late")):
            try:
                await operation
            except ConnectionClosed as exc:
                errors.append(exc)
        result.set_result(errors)

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(5):
            async with shakehands.connect(uri(server)) as ws:
                await ws.send("one")
                await ws.send("two")
            errors = await result
            assert ws.close_code == 1000
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
            with pytest.raises(ConnectionClosedOK):
                await ws.send("late")
    assert len(errors) == 2
    assert all(isinstance(exc, ConnectionClosedOK) for exc in errors)
    assert all(exc.code == 1000 for exc in errors)


async def test_peer_drops_tcp_gives_connection_closed_error() -> None:
    result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            async for _ in ws:
                pass
        except ConnectionClosed as exc:
            result.set_result(exc)
        else:
            result.set_result(AssertionError("async for ended quietly"))

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            client.send_frame(OP_TEXT, b"x")
            await asyncio.sleep(0.05)
            client.abort()
            exc = await result
            assert isinstance(exc, ConnectionClosedError)
            assert exc.code == 1006
            await wait_for_condition(lambda: not server.connections)


async def test_client_sees_1006_when_server_drops_tcp() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        ws.transport.abort()

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(5):
            ws = await shakehands.connect(uri(server))
            with pytest.raises(ConnectionClosedError) as excinfo:
                await ws.recv()
            assert excinfo.value.code == 1006
            assert ws.close_code == 1006
            with pytest.raises(ConnectionClosedError):
                await ws.send("x")


async def test_handler_raises_closes_with_1011() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.recv()
        raise RuntimeError("handler bug")

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(5), shakehands.connect(uri(server)) as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosedError) as excinfo:
                await ws.recv()
            assert excinfo.value.code == 1011
            assert ws.close_code == 1011
        await assert_echo_server_still_up(server)


async def assert_echo_server_still_up(server: shakehands.Server[Any]) -> None:
    """The server accepts new connections (the handler may not echo)."""
    async with asyncio.timeout(5), shakehands.connect(uri(server)) as ws:
        assert ws.open


async def test_handler_returns_closes_with_1000() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.send("bye")

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(5), shakehands.connect(uri(server)) as ws:
            assert await ws.recv() == "bye"
            with pytest.raises(ConnectionClosedOK) as excinfo:
                await ws.recv()
            assert excinfo.value.code == 1000
            messages = [m async for m in ws]  # ends quietly too
            assert messages == []
        await wait_for_condition(lambda: not server.connections)


async def test_handler_returns_with_unread_messages_closes_promptly() -> None:
    """The handler leaves while its receive queue is full (reading paused): the closing
    handshake must still complete at once, not after close_timeout."""
    ready = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        await wait_for_condition(lambda: not ws.transport.is_reading())
        ready.set()

    async with shakehands.serve(handler, HOST, 0, max_queue=2, close_timeout=10) as server:
        async with asyncio.timeout(5):
            ws = await shakehands.connect(uri(server), close_timeout=10)
            for i in range(20):
                await ws.send(f"m{i}")
            await ready.wait()
            start = time.monotonic()
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
            await ws.wait_closed()
            assert ws.close_code == 1000
            await wait_for_condition(lambda: not server.connections)
            assert time.monotonic() - start < 2


async def test_recv_concurrently_is_an_error() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        first = asyncio.create_task(ws.recv())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError):
            await ws.recv()
        await ws.send(await first)

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        await asyncio.sleep(0.05)
        await ws.send("ok")
        assert await ws.recv() == "ok"


async def test_recv_cancelled_as_a_message_arrives_loses_nothing() -> None:
    """A timeout that fires in the same loop iteration as the message it waited for must not
    lose that message: the next recv returns it."""
    got: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    waiting = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        received: list[Any] = []
        try:
            async with asyncio.timeout(0.1):
                waiting.set()
                received.append(await ws.recv())
        except TimeoutError:
            received.append("timed out")
        received.append(await ws.recv())
        received.append(await ws.recv())
        got.set_result(received)

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        await waiting.wait()
        await ws.send("first")
        # Block the loop past the deadline: the message and the timeout are then handled in
        # the same iteration (I/O callbacks first, then the timer that cancels recv).
        time.sleep(0.2)
        await ws.send("second")
        assert await got == ["timed out", "first", "second"]


async def echoed_after(server: Any, pause: float, text: str) -> None:
    """A client of ``server`` that waits ``pause`` seconds after its handshake gets ``text``
    back (within 5 s)."""
    async with asyncio.timeout(5), shakehands.connect(uri(server)) as ws:
        await asyncio.sleep(pause)
        await ws.send(text)
        assert await ws.recv() == text


async def test_recv_cancelled_while_waiting_then_next_message_is_received() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.05)
        await ws.send(await ws.recv())

    async with shakehands.serve(handler, HOST, 0) as server:
        await echoed_after(server, 0.1, "later")


async def test_messages_received_before_close_are_all_delivered(api: str) -> None:
    result: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.wait_closed()  # the client sent three messages, then closed
        result.set_result([message async for message in ws])

    class Collect(Listener):
        def __init__(self) -> None:
            self.messages: list[Any] = []

        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            self.messages.append(message)

        def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
            result.set_result(self.messages)

    async with serve_api(api, handler, Collect()) as server, asyncio.timeout(5):
        async with shakehands.connect(uri(server)) as ws:
            for message in ("a", b"b", "c"):
                await ws.send(message)
        assert await result == ["a", b"b", "c"]


async def test_send_type_errors() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        with pytest.raises(TypeError):
            await ws.send(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await ws.send([1, b"a"])  # type: ignore[list-item]
        await ws.send("still fine")  # nothing was sent: the connection is intact

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        assert await ws.recv() == "still fine"


@pytest.mark.parametrize("failure", ["bad fragment", "iterable raises", "async iterable raises"])
async def test_error_in_fragmented_message_fails_with_1011(failure: str) -> None:
    """Half a message is out and the rest never comes: the connection is failed with 1011
    rather than left in the middle of a message that no later send can finish."""
    result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    def broken() -> Any:
        yield b"first"
        yield b"second"
        raise ValueError("broken iterable")

    async def broken_async() -> Any:
        yield b"first"
        yield b"second"
        raise ValueError("broken iterable")

    async def handler(ws: shakehands.ServerConnection) -> None:
        message: Any = {
            "bad fragment": [b"first", 42],
            "iterable raises": broken(),
            "async iterable raises": broken_async(),
        }[failure]
        with pytest.raises((TypeError, ValueError)):
            await ws.send(message)
        try:
            await ws.send("after")
        except BaseException as exc:
            result.set_result(exc)
            raise

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert excinfo.value.code == 1011
        assert isinstance(await result, ConnectionClosed)


# ---------------------------------------------------------------------------------------------
# Callback API specifics
# ---------------------------------------------------------------------------------------------


class Recorder(Listener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.closed = asyncio.Event()

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        assert ws.request is not None
        self.events.append(("open", ws.request.path, ws.request.remote_address[0]))

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        self.events.append(("message", message))
        if message == "close-4000":
            ws.close(4000, "as asked")
        elif message == "raise":
            raise RuntimeError("listener bug")
        else:
            ws.send(message)

    def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
        self.events.append(("close", code, reason))
        self.closed.set()


async def test_callback_lifecycle_client_close_with_custom_code() -> None:
    listener = Recorder()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        async with asyncio.timeout(5):
            ws = await shakehands.connect(uri(server, "/cb"))
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await ws.close(4000, "client leaving")
            await listener.closed.wait()
    assert listener.events == [
        ("open", "/cb", "127.0.0.1"),
        ("message", "hi"),
        ("close", 4000, "client leaving"),
    ]


async def test_callback_server_initiated_close_with_custom_code() -> None:
    listener = Recorder()
    async with (
        shakehands.serve_callbacks(listener, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        await ws.send("close-4000")
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert (excinfo.value.code, excinfo.value.reason) == (4000, "as asked")
        await listener.closed.wait()
    assert listener.events[-1] == ("close", 4000, "")


async def test_callback_listener_raises_closes_with_1011() -> None:
    listener = Recorder()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        async with asyncio.timeout(5):
            async with shakehands.connect(uri(server)) as ws:
                await ws.send("raise")
                with pytest.raises(ConnectionClosedError) as excinfo:
                    await ws.recv()
                assert excinfo.value.code == 1011
            await listener.closed.wait()
            await assert_echo(server)


async def test_callback_peer_drops_tcp_on_close_1006() -> None:
    listener = Recorder()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            client.send_frame(OP_TEXT, b"x")
            assert await client.read_frame() == (True, OP_TEXT, b"x")
            client.abort()
            await listener.closed.wait()
    assert listener.events[-1] == ("close", 1006, "")


async def test_callback_send_after_close_raises() -> None:
    errors: list[BaseException] = []

    class Late(Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            ws.close()
            assert not ws.open
            try:
                ws.send("late")
            except ConnectionClosed as exc:
                errors.append(exc)

    async with (
        shakehands.serve_callbacks(Late(), HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        await ws.send("x")
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
    assert len(errors) == 1


async def test_callback_on_open_can_send_and_early_messages_are_delivered() -> None:
    """A raw client sends its first frame in the same packet as the request."""

    class Greeter(Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            ws.send("welcome")

        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            ws.send(message)

    async with shakehands.serve_callbacks(Greeter(), HOST, 0) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            key = make_key()
            client.send(upgrade_request(server.port, key=key) + frame(OP_TEXT, b"early"))
            status, headers = await client.read_head()
            assert status == 101 and headers["sec-websocket-accept"] == accept_for(key)
            assert await client.read_frame() == (True, OP_TEXT, b"welcome")
            assert await client.read_frame() == (True, OP_TEXT, b"early")
            await client.close()


async def test_early_frame_after_request_coroutine_api() -> None:
    async with shakehands.serve(echo_handler, HOST, 0) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            client.send(upgrade_request(server.port) + frame(OP_BINARY, b"early"))
            status, _ = await client.read_head()
            assert status == 101
            assert await client.read_frame() == (True, OP_BINARY, b"early")
            await client.close()


# ---------------------------------------------------------------------------------------------
# Protocol violations from a raw client, after a real handshake
# ---------------------------------------------------------------------------------------------


async def violation(api: str, data: bytes, expected: int, **options: Any) -> None:
    async with echo_server(api, **options) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            client.send(data)
            code, _ = await client.read_close()
            assert code == expected
            assert await client.read_eof() == b""  # then the server closed TCP
            await client.close()
            await wait_for_condition(lambda: not server.connections)
            await assert_echo(server)


async def test_unmasked_frame_1002(api: str) -> None:
    await violation(api, frame(OP_TEXT, b"unmasked", mask=False), 1002)


async def test_reserved_opcode_1002(api: str) -> None:
    await violation(api, frame(0x3, b"?"), 1002)


async def test_invalid_utf8_1007(api: str) -> None:
    await violation(api, frame(OP_TEXT, b"ok \xff\xfe"), 1007)


async def test_invalid_utf8_across_fragments_1007(api: str) -> None:
    # The first fragment ends in the middle of a surrogate: refused before the next frame.
    await violation(api, frame(OP_TEXT, b"abc\xed\xa0", fin=False), 1007)


PROTOCOL_VIOLATIONS = {
    "close code 1005 on the wire": (frame(OP_CLOSE, close_payload(1005)), 1002),
    "close code 999": (frame(OP_CLOSE, close_payload(999)), 1002),
    "one-byte close payload": (frame(OP_CLOSE, b"\x03"), 1002),
    "close reason not UTF-8": (frame(OP_CLOSE, b"\x03\xe8\xff"), 1007),
    "ping longer than 125": (frame(0x9, b"p" * 126), 1002),
    "fragmented ping": (frame(0x9, b"p", fin=False), 1002),
    "RSV1 without extension": (bytes([0xC1]) + frame(OP_TEXT, b"x")[1:], 1002),
    "continuation without a message": (frame(0x0, b"x"), 1002),
    "new message inside a fragmented one": (
        frame(OP_TEXT, b"a", fin=False) + frame(OP_TEXT, b"b"),
        1002,
    ),
}


@pytest.mark.parametrize("case", list(PROTOCOL_VIOLATIONS))
async def test_protocol_violations(api: str, case: str) -> None:
    data, code = PROTOCOL_VIOLATIONS[case]
    await violation(api, data, code)


async def test_message_too_big_1009_without_reading_the_payload(api: str) -> None:
    # Only the header of a 100 MiB frame: the 1009 must come before any payload byte.
    header = frame_header(OP_BINARY, 100 * 2**20) + b"\x00\x00\x00\x00"
    await violation(api, header, 1009, max_message_size=2**20)


async def test_fragmented_message_too_big_1009(api: str) -> None:
    data = frame(OP_BINARY, b"x" * 600, fin=False) + frame(0x0, b"y" * 600, fin=False)
    await violation(api, data, 1009, max_message_size=1000)


# ---------------------------------------------------------------------------------------------
# Timeouts
# ---------------------------------------------------------------------------------------------


async def test_open_timeout_drops_half_request_while_serving_others(api: str) -> None:
    async with echo_server(api, open_timeout=0.5) as server:
        async with asyncio.timeout(5):
            slow = await RawClient.open(server.port)
            slow.send(upgrade_request(server.port)[:30])
            start = time.monotonic()
            await asyncio.sleep(0.05)
            assert len(server.connections) == 1
            # Meanwhile a good client is served.
            await assert_echo(server)
            assert await slow.read_eof() == b""
            # Not dropped before its open timeout (the 5 s bound above says it is dropped;
            # how soon after depends on the machine's load, not on us).
            elapsed = time.monotonic() - start
            assert elapsed > 0.35, elapsed
            await slow.close()
            await wait_for_condition(lambda: not server.connections)


async def test_open_timeout_silent_client(api: str) -> None:
    async with echo_server(api, open_timeout=0.3) as server:
        async with asyncio.timeout(5):
            silent = await RawClient.open(server.port)
            assert await silent.read_eof() == b""
            await silent.close()


async def test_open_timeout_does_not_apply_after_handshake(api: str) -> None:
    async with echo_server(api, open_timeout=0.2) as server:
        await echoed_after(server, 0.4, "still here")


async def test_close_timeout_drops_peer_that_never_answers_close(api: str) -> None:
    started = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.recv()
        started.set()
        await ws.close(1000, "done")

    class Closer(Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            started.set()
            ws.close(1000, "done")

    async with serve_api(api, handler, Closer(), close_timeout=0.5) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            client.send_frame(OP_TEXT, b"please close")
            await started.wait()
            start = time.monotonic()
            assert await client.read_close() == (1000, "done")
            # We never answer: the server drops us after close_timeout.
            assert await client.read_eof() == b""
            elapsed = time.monotonic() - start
            assert 0.35 < elapsed < 2, elapsed
            await client.close()
            await wait_for_condition(lambda: not server.connections)


async def test_client_close_frame_answered_and_tcp_closed_by_server(api: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(5):
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            client.send_frame(OP_CLOSE, close_payload(1001, "leaving"))
            assert await client.read_close() == (1001, "")
            assert await client.read_eof() == b""  # the server closes TCP first
            await client.close()


# ---------------------------------------------------------------------------------------------
# Server.close()
# ---------------------------------------------------------------------------------------------


async def test_server_close_sends_1001_and_waits_for_handlers(api: str) -> None:
    finished: list[str] = []
    closed: list[int] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            finished.append("handler")

    class Tracker(Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            ws.send(message)

        def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
            closed.append(code)

    server = await serve_api(api, handler, Tracker())
    port = server.port
    async with asyncio.timeout(10):
        clients = [await shakehands.connect(uri(server)) for _ in range(3)]
        for ws in clients:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert len(server.connections) == 3
        # A connection still in its handshake is counted too, and dropped by close().
        half = await RawClient.open(server.port)
        half.send(b"GET / HTTP/1.1\r\n")
        await wait_for_condition(lambda: len(server.connections) == 4)

        server.close()
        for ws in clients:
            with pytest.raises(ConnectionClosedOK) as excinfo:
                await ws.recv()
            assert excinfo.value.code == 1001
            assert excinfo.value.reason == "server shutting down"
        assert await half.read_eof() == b""
        await server.wait_closed()
        await half.close()
    assert server.connections == set()
    if api == "coroutine":
        assert finished == ["handler"] * 3
    else:
        assert closed == [1001] * 3
    # No longer listening.
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, port)


async def test_server_close_custom_code() -> None:
    async with shakehands.serve(echo_handler, HOST, 0) as server:
        ws = await shakehands.connect(uri(server))
        server.close(1012, "restarting")
        async with asyncio.timeout(5):
            with pytest.raises(ConnectionClosedError) as excinfo:
                await ws.recv()
            await server.wait_closed()
    assert (excinfo.value.code, excinfo.value.reason) == (1012, "restarting")


async def test_server_close_aborts_unresponsive_clients_after_close_timeout(api: str) -> None:
    async with echo_server(api, close_timeout=0.3) as server:
        client = await RawClient.open(server.port)
        await client.handshake(server.port)
        await wait_for_condition(lambda: len(server.connections) == 1)
        start = time.monotonic()
        server.close()
        async with asyncio.timeout(5):
            assert await client.read_close() == (1001, "server shutting down")
            await server.wait_closed()
            assert 0.2 < time.monotonic() - start < 2
            assert await client.read_eof() == b""
        await client.close()


async def test_connections_set_tracks_connections(api: str) -> None:
    async with echo_server(api) as server:
        assert server.connections == set()
        async with asyncio.timeout(5):
            a = await shakehands.connect(uri(server))
            await wait_for_condition(lambda: len(server.connections) == 1)
            b = await shakehands.connect(uri(server))
            await wait_for_condition(lambda: len(server.connections) == 2)
            peers = {c.remote_address for c in server.connections}
            assert peers == {a.local_address, b.local_address}
            # A copy: safe to iterate while connections come and go.
            snapshot = server.connections
            await a.close()
            await wait_for_condition(lambda: len(server.connections) == 1)
            assert len(snapshot) == 2
            await b.close()
            await wait_for_condition(lambda: not server.connections)


async def test_listening_socket_is_loopback(api: str) -> None:
    async with echo_server(api) as server:
        (sock,) = server.sockets
        assert sock.family == socket.AF_INET
        assert sock.getsockname() == (HOST, server.port)


async def test_connections_keep_their_state_in_slots(api: str) -> None:
    # Idle memory: every attribute of a connection object lives in a slot; an instance dict
    # (1.5 KiB once past 30 attributes) is only created if the application sets its own
    # attributes, which stays possible. The request's headers are packed into one string.
    async with echo_server(api, compression=None) as server:
        async with shakehands.connect(uri(server, "/room?x=1")) as client:
            await client.send(b"ping")
            assert await client.recv() == b"ping"
            await wait_for_condition(lambda: len(server.connections) == 1)
            (ws,) = server.connections
            assert vars(ws) == {} and vars(client) == {}
            assert isinstance(ws.request.headers._items, str)
            # Still there for the application, unpacked on access.
            assert ws.request.path == "/room" and ws.request.headers["Upgrade"] == "websocket"
            ws.my_state = 42  # type: ignore[union-attr]
            assert vars(ws) == {"my_state": 42}
            assert not ws.closed_future.done()
        await wait_for_condition(lambda: not server.connections)
        assert ws.closed_future.done()


# ---------------------------------------------------------------------------------------------
# Signals: README's first server program shuts down gracefully
# ---------------------------------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_readme_server_closes_clients_with_1001_on_a_signal(
    signum: int, tmp_path: Path
) -> None:
    """``asyncio.run(main())`` with ``serve_forever()``: a signal (docker stop, Ctrl-C) closes
    every client with 1001 and the program exits with status 0."""
    block = README_SERVERS[0]
    assert "asyncio.run(" in block.code and "serve_forever()" in block.code, block.name
    process, address = await asyncio.to_thread(start_server_block, block, tmp_path)
    try:
        async with shakehands.connect(address) as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            process.send_signal(signum)
            with pytest.raises(ConnectionClosedOK):
                await ws.recv()
        assert ws.close_code == 1001
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        out, err = stop(process)
    assert "Traceback" not in err, err


async def test_serve_forever_puts_back_the_signal_handlers_it_replaced() -> None:
    before = signal.getsignal(signal.SIGTERM)
    async with echo_server("coroutine") as server:
        serving = asyncio.create_task(server.serve_forever())
        await wait_for_condition(lambda: signal.getsignal(signal.SIGTERM) != before)
        server.close()
        await serving
    assert signal.getsignal(signal.SIGTERM) == before
    async with echo_server("coroutine") as server:
        serving = asyncio.create_task(server.serve_forever(stop_signals=()))
        await assert_echo(server)
        assert signal.getsignal(signal.SIGTERM) == before
        server.close()
        await serving


# ---------------------------------------------------------------------------------------------
# A handler of the wrong shape is refused by serve(), not at the first connection
# ---------------------------------------------------------------------------------------------


async def _two_arguments(ws: Any, path: str) -> None:
    await ws.send(path)


def _plain(ws: Any) -> None:
    ws.send("hi")


async def _no_argument() -> None:
    pass


class _AsyncCallable:
    async def __call__(self, ws: shakehands.ServerConnection) -> None:
        await ws.send("callable")


@pytest.mark.parametrize(
    ("handler", "match"),
    [
        (_two_arguments, r"_two_arguments\(ws: 'Any', path: 'str'\).*one argument"),
        (_no_argument, "one argument"),
        (_plain, "not a coroutine function"),
        (lambda ws: asyncio.sleep(0), "not a coroutine function"),
        ("echo", "must be a function"),
    ],
    ids=["handler(ws, path)", "handler()", "plain def", "lambda", "not callable"],
)
async def test_serve_refuses_a_handler_of_the_wrong_shape(handler: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match) as excinfo:
        shakehands.serve(handler, HOST, 0)
    assert "async def handler(ws)" in str(excinfo.value)


async def test_serve_accepts_an_object_with_an_async_call() -> None:
    async with (
        shakehands.serve(_AsyncCallable(), HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        assert await ws.recv() == "callable"


async def test_serve_forever_leaves_a_signal_handler_of_the_program_alone() -> None:
    def own(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        async with echo_server("coroutine") as server:
            serving = asyncio.create_task(server.serve_forever())
            await assert_echo(server)
            assert signal.getsignal(signal.SIGTERM) is own
            server.close()
            await serving
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)
