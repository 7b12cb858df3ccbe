"""uvicorn serving FastAPI and Starlette apps, with ``--ws shakehands.asgi:UvicornWebSocket``.

Every test runs three times: with our class (on the compiled data path when it is built, and on
pure Python) and with uvicorn's built-in ``websockets-sansio`` as the reference, so that what
they check is specified behaviour (RFC 6455, the ASGI WebSocket spec) rather than our quirks.
Where the two differ on purpose, the test says so with ``OURS`` / ``REFERENCE`` expectations
(see the module docstring of ``shakehands.asgi``).
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

import shakehands
import shakehands.asgi as shakehands_asgi
from shakehands import ConnectionClosed, InvalidStatus
from shakehands.asgi import FastUvicornWebSocket, UvicornWebSocket

from ..helpers import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_code_and_reason,
    close_payload,
    frame,
)
from .apps import Events, fastapi_app, starlette_app
from .asgi_helpers import IMPLEMENTATIONS, PythonUvicornWebSocket, RawClient, UvicornThread, take


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request: pytest.FixtureRequest) -> str:
    """Which WebSocket implementation uvicorn runs: ``"shakehands"`` or the reference."""
    return str(request.param)


@pytest.fixture
def events() -> Events:
    return queue.Queue()


def serve(impl: str, app: Any, **options: Any) -> UvicornThread:
    return UvicornThread(app, IMPLEMENTATIONS[impl], **options)


@pytest.fixture
async def starlette(impl: str, events: Events) -> AsyncIterator[UvicornThread]:
    async with serve(impl, starlette_app(events)) as server:
        yield server


@pytest.fixture
async def fastapi(impl: str, events: Events) -> AsyncIterator[UvicornThread]:
    async with serve(impl, fastapi_app(events)) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# Messages, subprotocols, closing
# ---------------------------------------------------------------------------------------------


async def test_echo_text_and_bytes(starlette: UvicornThread) -> None:
    async with shakehands.connect(starlette.uri("/echo")) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xffbytes")
        assert await ws.recv() == b"\x00\xffbytes"
        await ws.send("x" * 100_000)
        assert await ws.recv() == "x" * 100_000


async def test_scope(impl: str, starlette: UvicornThread, events: Events) -> None:
    """OURS: the scope also carries the connection (``extensions["shakehands"]``)."""
    uri = starlette.uri("/raw/scope%20x?a=1&b=%20")
    async with shakehands.connect(uri, subprotocols=["one", "two"], compression=None):
        pass
    seen = await take(events, "scope")
    assert isinstance(seen, dict)
    headers = dict(seen.pop("headers"))
    assert seen == {
        "type": "websocket",
        "http_version": "1.1",
        "scheme": "ws",
        "path": "/raw/scope x",
        "raw_path": b"/raw/scope%20x",
        "query_string": b"a=1&b=%20",
        "spec_version": "2.4",
        "subprotocols": ["one", "two"],
        "client": "127.0.0.1",
        "server": "127.0.0.1",
        "extensions": ["shakehands", "websocket.http.response"]
        if impl.startswith("shakehands")
        else ["websocket.http.response"],
    }
    assert headers[b"host"] == f"127.0.0.1:{starlette.port}".encode()
    assert headers[b"upgrade"].lower() == b"websocket"
    assert headers[b"sec-websocket-version"] == b"13"
    assert headers[b"sec-websocket-protocol"] == b"one, two"


async def test_subprotocol_negotiated(starlette: UvicornThread) -> None:
    uri = starlette.uri("/echo")
    async with shakehands.connect(uri, subprotocols=["other", "superchat"]) as ws:
        assert ws.subprotocol == "superchat"
    async with shakehands.connect(starlette.uri("/echo"), subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


async def test_subprotocol_that_would_split_the_header_is_refused(
    impl: str, starlette: UvicornThread, events: Events
) -> None:
    """The app's subprotocol goes into the 101 as a header value: one with CR/LF (or anything
    that is not a token) raises in ``send`` with us and writes nothing, so no header can be
    injected; the connection can still be accepted."""
    if not impl.startswith("shakehands"):
        pytest.skip("the reference does not check the app's subprotocol")
    async with shakehands.connect(starlette.uri("/raw/accept-bad-subprotocol")) as ws:
        assert ws.subprotocol is None
        assert "X-Evil" not in ws.response.headers
    assert await take(events, "bad-subprotocol") == "ValueError"


async def test_app_closes_with_code_and_reason(starlette: UvicornThread) -> None:
    async with shakehands.connect(starlette.uri("/close")) as ws:
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
    assert (caught.value.code, caught.value.reason) == (4321, "bye now")


async def test_client_going_away(starlette: UvicornThread, events: Events) -> None:
    async with shakehands.connect(starlette.uri("/echo")) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await ws.close(4001, "leaving")
    assert await take(events, "disconnect") == 4001


async def test_send_after_close_is_an_error(starlette: UvicornThread, events: Events) -> None:
    async with shakehands.connect(starlette.uri("/raw/send-after-close")) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert await take(events, "send-after-close") == "RuntimeError"


async def test_send_after_disconnect_is_client_disconnected(
    starlette: UvicornThread, events: Events
) -> None:
    async with shakehands.connect(starlette.uri("/raw/send-after-disconnect")) as ws:
        await ws.close(1000)
    assert await take(events, "send-after-disconnect") == "ClientDisconnected"


async def test_malformed_events(impl: str, starlette: UvicornThread, events: Events) -> None:
    """``websocket.send`` without text or bytes: a TypeError with us (the reference ignores
    it); an unknown event type: a RuntimeError with both. Never a hang."""
    async with shakehands.connect(starlette.uri("/raw/malformed")) as ws:
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
    assert caught.value.code == 1000
    ours = impl.startswith("shakehands")
    assert await take(events, "malformed") == ("TypeError" if ours else "none")
    assert await take(events, "unknown") == "RuntimeError"


# ---------------------------------------------------------------------------------------------
# Refusals and application errors
# ---------------------------------------------------------------------------------------------


async def test_denial_response(starlette: UvicornThread) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with shakehands.connect(starlette.uri("/deny")):
            pass
    response = caught.value.response
    assert response.status == 403
    assert response.body == b"go away"


async def test_app_raises_before_accept_gets_500(starlette: UvicornThread) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with shakehands.connect(starlette.uri("/raise-before")):
            pass
    assert caught.value.response.status == 500


async def test_app_raises_after_accept(impl: str, starlette: UvicornThread) -> None:
    """OURS: close frame 1011 (internal error). REFERENCE: the TCP connection is dropped, so
    the client sees 1006 (abnormal closure)."""
    async with shakehands.connect(starlette.uri("/raise-after")) as ws:
        await ws.send("trigger")
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
    assert caught.value.code == (1011 if impl.startswith("shakehands") else 1006)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": "8"},
        {"key": "too-short"},
        {"extra": [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]},  # two keys
    ],
    ids=["version", "key", "two-keys"],
)
async def test_bad_handshake_gets_4xx(starlette: UvicornThread, kwargs: dict[str, Any]) -> None:
    client, status = await RawClient.request(starlette.port, "/echo", **kwargs)
    await client.close()
    assert 400 <= status < 500


# ---------------------------------------------------------------------------------------------
# Protocol faults and limits
# ---------------------------------------------------------------------------------------------


async def test_invalid_utf8_gets_1007(starlette: UvicornThread, events: Events) -> None:
    client, status = await RawClient.request(starlette.port, "/echo")
    assert status == 101
    client.send_frame(OP_TEXT, b"caf\xc3")
    opcode, payload = await client.read_frame()
    await client.close()
    assert opcode == OP_CLOSE
    assert close_code_and_reason(payload)[0] == 1007
    assert await take(events, "disconnect") == 1007


async def test_answers_leave_before_the_close_frame(impl: str, starlette: UvicornThread) -> None:
    """A message, then a protocol violation, in one write. OURS: the app's echo of the message
    leaves before the close frame 1002 (Autobahn 3.2's strict behaviour). REFERENCE: the close
    frame at once, the echo dropped (Autobahn: NON-STRICT)."""
    client, status = await RawClient.request(starlette.port, "/echo")
    assert status == 101
    bad = bytearray(frame(OP_TEXT, b"bad"))
    bad[0] |= 0x40  # RSV1 without a negotiated extension
    client.writer.write(frame(OP_TEXT, b"Hello") + bytes(bad))
    frames = [await client.read_frame()]
    while frames[-1][0] != OP_CLOSE:
        frames.append(await client.read_frame())
    await client.close()
    assert frames[:-1] == ([(OP_TEXT, b"Hello")] if impl.startswith("shakehands") else [])
    assert close_code_and_reason(frames[-1][1])[0] == 1002


@pytest.mark.parametrize(
    "data",
    [
        frame(OP_TEXT, b"unmasked", mask=False),
        frame(0x3, b"reserved opcode"),
        frame(OP_PING, b"x" * 126),
        frame(OP_PING, b"fragmented ping", fin=False),
        frame(0x0, b"continuation of nothing"),
    ],
    ids=["unmasked", "reserved-opcode", "long-ping", "fragmented-ping", "lone-continuation"],
)
async def test_protocol_violations_get_1002(
    starlette: UvicornThread, events: Events, data: bytes
) -> None:
    client, status = await RawClient.request(starlette.port, "/echo")
    assert status == 101
    client.writer.write(data)
    opcode, payload = await client.read_frame()
    await client.close()
    assert opcode == OP_CLOSE
    assert close_code_and_reason(payload)[0] == 1002
    assert await take(events, "disconnect") == 1002


async def test_message_over_ws_max_size_gets_1009(impl: str, events: Events) -> None:
    async with (
        serve(impl, starlette_app(events), ws_max_size=1024) as server,
        shakehands.connect(server.uri("/echo")) as ws,
    ):
        await ws.send(b"x" * 1024)
        assert await ws.recv() == b"x" * 1024
        await ws.send(b"x" * 1025)
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
        assert caught.value.code == 1009
        assert await take(events, "disconnect") == 1009


@pytest.mark.parametrize("enabled", [True, False], ids=["deflate", "no-deflate"])
async def test_per_message_deflate(impl: str, events: Events, enabled: bool) -> None:
    async with (
        serve(impl, starlette_app(events), ws_per_message_deflate=enabled) as server,
        shakehands.connect(server.uri("/echo")) as ws,
    ):
        assert ws.response is not None
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
        assert ("permessage-deflate" in extensions) is enabled
        await ws.send("compressible " * 1000)
        assert await ws.recv() == "compressible " * 1000


# ---------------------------------------------------------------------------------------------
# FastAPI
# ---------------------------------------------------------------------------------------------


async def test_fastapi_path_query_and_json(fastapi: UvicornThread) -> None:
    async with shakehands.connect(fastapi.uri("/items/42?q=blue")) as ws:
        await ws.send('{"n": 1}')
        assert await ws.recv() == '{"item":"42","q":"blue","got":{"n":1}}'
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
    assert caught.value.code == 1000


async def test_fastapi_refusal_before_accept_is_403(fastapi: UvicornThread) -> None:
    with pytest.raises(InvalidStatus) as caught:
        async with shakehands.connect(fastapi.uri("/refuse")):
            pass
    assert caught.value.response.status == 403


async def test_fastapi_echo_and_disconnect(fastapi: UvicornThread, events: Events) -> None:
    async with shakehands.connect(fastapi.uri("/echo")) as ws:
        for n in range(10):
            await ws.send(f"message {n}")
            assert await ws.recv() == f"message {n}"
        await ws.close(1001)
    assert await take(events, "disconnect") == 1001


# ---------------------------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------------------------

OPEN_CONNECTIONS = 100


async def test_graceful_shutdown_closes_every_websocket_with_1012(
    impl: str, events: Events
) -> None:
    server = serve(impl, starlette_app(events))
    server.start()
    clients = []
    try:
        for _ in range(OPEN_CONNECTIONS):
            ws = await shakehands.connect(server.uri("/echo"))
            clients.append(ws)
            await ws.send("ready")
            assert await ws.recv() == "ready"
    finally:
        stopping = asyncio.ensure_future(server.stop())
    codes = []
    for ws in clients:
        with pytest.raises(ConnectionClosed) as caught:
            await ws.recv()
        codes.append(caught.value.code)
    await stopping
    assert codes == [1012] * OPEN_CONNECTIONS
    seen = [await take(events, "disconnect") for _ in range(OPEN_CONNECTIONS)]
    assert seen == [1012] * OPEN_CONNECTIONS


# ---------------------------------------------------------------------------------------------
# Keepalive, flow control, event loops
# ---------------------------------------------------------------------------------------------


async def test_keepalive_timeout_closes_with_1011(impl: str, events: Events) -> None:
    """A client that never answers the keepalive ping is closed with 1011."""
    app = starlette_app(events)
    async with serve(impl, app, ws_ping_interval=0.05, ws_ping_timeout=0.05) as server:
        client, status = await RawClient.request(server.port, "/echo")
        assert status == 101
        opcodes = []
        while True:
            opcode, payload = await client.read_frame()
            opcodes.append(opcode)
            if opcode == OP_CLOSE:
                break
        await client.close()
        assert opcodes[0] == OP_PING
        assert close_code_and_reason(payload)[0] == 1011


async def test_flood_with_a_small_ws_max_queue(impl: str, events: Events) -> None:
    """Reading pauses while the app's queue is full and resumes as it reads: nothing lost."""
    count = 500
    async with (
        serve(impl, starlette_app(events), ws_max_queue=2) as server,
        shakehands.connect(server.uri("/echo")) as ws,
    ):
        for n in range(count):
            await ws.send(f"message {n}")
        for n in range(count):
            assert await ws.recv() == f"message {n}"


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_event_loops_and_http_parsers(
    impl: str, events: Events, loop: str, http: str
) -> None:
    """uvicorn's two HTTP parsers hand the upgrade request over each in its own way."""
    pytest.importorskip(loop)
    pytest.importorskip(http)
    async with (
        serve(impl, starlette_app(events), loop=loop, http=http) as server,
        shakehands.connect(server.uri("/echo?a=1"), subprotocols=["chat"]) as ws,
    ):
        assert ws.subprotocol == "chat"
        await ws.send("over " + loop)
        assert await ws.recv() == "over " + loop
        await ws.send(b"x" * 200_000)
        assert await ws.recv() == b"x" * 200_000


def _mixed_stream() -> tuple[bytes, list[tuple[int, bytes]]]:
    """Client frames of every kind the compiled data path takes or hands to the core, and the
    frames the echo endpoint answers them with, in order."""
    large = bytes(range(256)) * 280  # 71,680 bytes: a 64-bit length, cut by any read
    frames = [
        frame(OP_TEXT, b"first"),
        frame(OP_BINARY, large),
        frame(OP_PING, b"ping in between"),
        frame(OP_TEXT, "déjà".encode()[:3], fin=False),  # a fragmented text message, cut
        frame(OP_CONT, "déjà".encode()[3:]),  # inside a UTF-8 sequence
        frame(OP_BINARY, b""),
        frame(OP_BINARY, b"x" * 126),  # a 16-bit length
        frame(OP_TEXT, "après".encode()),
    ]
    expected = [
        (OP_TEXT, b"first"),
        (OP_BINARY, large),
        (OP_PONG, b"ping in between"),
        (OP_TEXT, "déjà".encode()),
        (OP_BINARY, b""),
        (OP_BINARY, b"x" * 126),
        (OP_TEXT, "après".encode()),
    ]
    return b"".join(frames), expected


@pytest.mark.parametrize("split", [0, 5, 4093, 65537], ids=lambda n: f"split-{n}")
async def test_frames_split_anywhere(impl: str, starlette: UvicornThread, split: int) -> None:
    """Whole frames, control frames, fragments and a large frame, written in one piece or cut
    every ``split`` bytes: every message is echoed in order, the ping answered (the
    compiled data path hands what it does not take to the core, and takes over again)."""
    stream, expected = _mixed_stream()
    client, status = await RawClient.request(starlette.port, "/echo")
    assert status == 101
    for _ in range(2):  # twice: the C path must take over again after the core's turn
        step = split or len(stream)
        for start in range(0, len(stream), step):
            client.writer.write(stream[start : start + step])
            await client.writer.drain()
        got = [await client.read_frame() for _ in expected]
        # The pong may leave before the echoes of earlier messages (the app answers later).
        assert got.count((OP_PONG, b"ping in between")) == 1
        assert [f for f in got if f[0] != OP_PONG] == [f for f in expected if f[0] != OP_PONG]
    client.send_frame(OP_CLOSE, close_payload(1000))
    opcode, payload = await client.read_frame()
    await client.close()
    assert (opcode, close_code_and_reason(payload)[0]) == (OP_CLOSE, 1000)


async def test_compiled_data_path_when_built() -> None:
    """``UvicornWebSocket(...)`` (what uvicorn makes) is the compiled path when it is built;
    a subclass is made as it is (the pure-Python path)."""
    config = uvicorn.Config(app=starlette_app(queue.Queue()))
    made = UvicornWebSocket(config, ServerState(), {})
    assert isinstance(made, FastUvicornWebSocket) is shakehands_asgi.FASTPATH_AVAILABLE
    assert type(PythonUvicornWebSocket(config, ServerState(), {})) is PythonUvicornWebSocket


@pytest.mark.parametrize("cls", [UvicornWebSocket, PythonUvicornWebSocket], ids=["made", "python"])
async def test_scope_without_uvicorns_http_protocol(cls: type[UvicornWebSocket]) -> None:
    """Under uvicorn, the addresses and the scope's headers are those uvicorn's HTTP protocol
    parsed (it hands the upgrade over with them). Made by anything else (here: an asyncio
    server making the class itself), they come from the transport and the request we parse:
    the same scope."""
    events: Events = queue.Queue()
    config = uvicorn.Config(app=starlette_app(events), ws_per_message_deflate=False)
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: cls(config, state, {}), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        uri = f"ws://127.0.0.1:{port}/raw/scope%20x?a=1&b=%20"
        async with shakehands.connect(uri, subprotocols=["one", "two"], compression=None):
            pass
        seen = await take(events, "scope")
        async with shakehands.connect(f"ws://127.0.0.1:{port}/echo", compression=None) as ws:
            await ws.send(b"x" * 70_000)
            assert await ws.recv() == b"x" * 70_000
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(seen, dict)
    headers = dict(seen.pop("headers"))
    assert seen["path"] == "/raw/scope x"
    assert seen["raw_path"] == b"/raw/scope%20x"
    assert seen["query_string"] == b"a=1&b=%20"
    assert (seen["scheme"], seen["client"], seen["server"]) == ("ws", "127.0.0.1", "127.0.0.1")
    assert headers[b"host"] == f"127.0.0.1:{port}".encode()
    assert headers[b"sec-websocket-protocol"] == b"one, two"
    assert all(name == name.lower() for name in headers)


def test_options_are_those_of_each_uvicorn_config() -> None:
    """config_from_uvicorn keeps the last config's options at hand: each config still gets
    its own, and the same object for the same config."""
    first = uvicorn.Config(app=None, ws_max_size=1000, ws_per_message_deflate=False)
    second = uvicorn.Config(app=None, ws_max_size=2000, ws_ping_interval=0)
    a = shakehands_asgi.config_from_uvicorn(first)
    b = shakehands_asgi.config_from_uvicorn(second)
    assert (a.max_message_size, a.compression) == (1000, None)
    assert (b.max_message_size, b.ping_interval) == (2000, None)
    assert b.compression is not None
    assert shakehands_asgi.config_from_uvicorn(first) is a
    assert shakehands_asgi.config_from_uvicorn(second) is b
    assert shakehands_asgi.config_from_uvicorn(second) is b
