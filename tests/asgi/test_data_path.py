"""The data path under uvicorn: sends of every kind and their order, large messages cut by many
reads, and the limits and faults on that path.

On the compiled data path (``FastUvicornWebSocket``) ``websocket.send`` of ``bytes`` or a
``str`` is framed in C and anything else goes through the core, and a large frame cut by reads
is assembled in its message (asyncio reads into it, uvloop's pieces are unmasked into it), so
every test runs on asyncio and uvloop. As in ``test_uvicorn.py`` each test runs with ours
(compiled and pure Python) and with uvicorn's ``websockets-sansio`` as the reference.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
from pathlib import Path
from typing import Any

import pytest

import shakehands
import shakehands.asgi as shakehands_asgi
from shakehands.asgi import FastUvicornWebSocket, UvicornWebSocket

from ..helpers import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_code_and_reason,
    close_payload,
    frame,
    make_certificate,
    upgrade_request,
)
from .apps import SENDS, Events, starlette_app
from .asgi_helpers import IMPLEMENTATIONS, RawClient, UvicornThread, take

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request: pytest.FixtureRequest) -> str:
    """Which WebSocket implementation uvicorn runs: ours or the reference."""
    return str(request.param)


@pytest.fixture
def events() -> Events:
    return queue.Queue()


def serve(impl: str, events: Events, loop: str, **options: Any) -> UvicornThread:
    pytest.importorskip(loop)
    return UvicornThread(starlette_app(events), IMPLEMENTATIONS[impl], loop=loop, **options)


def _expected_sends() -> list[str | bytes]:
    return [value if isinstance(value, str) else bytes(value) for _, value in SENDS]


async def _write_in_pieces(client: RawClient, data: bytes, step: int) -> None:
    """Write ``data`` ``step`` bytes at a time, waiting for each to be taken: the server reads
    it in many pieces."""
    for start in range(0, len(data), step):
        client.writer.write(data[start : start + step])
        await client.writer.drain()
        if start % (16 * step) == 0:
            await asyncio.sleep(0)


def test_compiled_send_when_built() -> None:
    """The ASGI send of the compiled path is C when it is built (the Python send otherwise)."""
    if shakehands_asgi.FASTPATH_AVAILABLE:
        assert FastUvicornWebSocket.send is not UvicornWebSocket.send
        assert FastUvicornWebSocket._send_slow is UvicornWebSocket.send


@pytest.mark.parametrize("loop", LOOPS)
async def test_sends_of_every_kind_in_order(impl: str, events: Events, loop: str) -> None:
    """bytes, str, bytearray, memoryview, empty and large (over 256 KiB, written apart from
    the header) sends leave in the order sent, one row per message received; also when
    several messages arrive at once (their answers are batched), with pings in between (the
    core's pongs)."""
    expected = _expected_sends()
    async with (
        serve(impl, events, loop) as server,
        shakehands.connect(server.uri("/raw/sends"), compression=None, max_message_size=None) as ws,
    ):
        await ws.send("go")
        assert [await ws.recv() for _ in expected] == expected
        for _ in range(3):  # likely in one read: the inbox holds several when it answers
            await ws.send("go")
        pong = asyncio.ensure_future(ws.ping())  # waits for its pong
        await ws.send("go")
        got = [await ws.recv() for _ in range(4 * len(expected))]
        await pong
        assert got == expected * 4
    assert await take(events, "disconnect") == 1000


@pytest.mark.parametrize("loop", LOOPS)
async def test_burst_of_frames_echoed_in_order(impl: str, events: Events, loop: str) -> None:
    """Many frames in one write (text, binary, pings): every echo in order, every ping
    answered; the answers to a burst are written together by our compiled send."""
    frames: list[bytes] = []
    expected: list[tuple[int, bytes]] = []
    for n in range(60):
        if n % 7 == 3:
            frames.append(frame(OP_PING, b"p%d" % n))
        elif n % 2:
            frames.append(frame(OP_TEXT, f"é{n}".encode()))
            expected.append((OP_TEXT, f"é{n}".encode()))
        else:
            frames.append(frame(OP_BINARY, bytes([n]) * n * 100))
            expected.append((OP_BINARY, bytes([n]) * n * 100))
    pings = sum(1 for n in range(60) if n % 7 == 3)
    async with serve(impl, events, loop) as server:
        client, status = await RawClient.request(server.port, "/echo")
        assert status == 101
        client.writer.write(b"".join(frames))
        got = [await client.read_frame() for _ in range(len(expected) + pings)]
        assert [f for f in got if f[0] != OP_PONG] == expected
        assert sorted(f[1] for f in got if f[0] == OP_PONG) == sorted(
            b"p%d" % n for n in range(60) if n % 7 == 3
        )
        client.send_frame(OP_CLOSE, close_payload(1000))
        opcode, payload = await client.read_frame()
        await client.close()
    assert (opcode, close_code_and_reason(payload)[0]) == (OP_CLOSE, 1000)


@pytest.mark.parametrize("step", [1000, 8191, 70_000])
@pytest.mark.parametrize("loop", LOOPS)
async def test_large_messages_cut_in_many_reads(
    impl: str, events: Events, loop: str, step: int
) -> None:
    """Large text and binary frames written a piece at a time, a multi-byte character cut
    between pieces, and two large frames back to back: every message whole and in order."""
    text = ("ab€" * 100_000).encode()  # 500,000 bytes, 3-byte characters across any cut
    binary = bytes(range(251)) * 4200  # 1,054,200 bytes
    medium = b"m" * 20_000  # just over the in-place threshold, 16-bit length
    messages = [(OP_BINARY, binary), (OP_TEXT, text), (OP_BINARY, medium), (OP_TEXT, b"small")]
    messages += [(OP_BINARY, binary[:300_000]), (OP_BINARY, binary[300_000:600_000])]
    stream = b"".join(frame(opcode, payload) for opcode, payload in messages)
    async with serve(impl, events, loop) as server:
        client, status = await RawClient.request(server.port, "/echo")
        assert status == 101

        async def read_all() -> list[tuple[int, bytes]]:
            return [await client.read_frame() for _ in messages]

        reading = asyncio.ensure_future(read_all())  # the echoes are read while writing
        await _write_in_pieces(client, stream, step)
        got = await reading
        assert got == messages
        client.send_frame(OP_CLOSE, close_payload(1000))
        opcode, payload = await client.read_frame()
        await client.close()
    assert (opcode, close_code_and_reason(payload)[0]) == (OP_CLOSE, 1000)
    assert await take(events, "disconnect") == 1000


@pytest.mark.parametrize("loop", LOOPS)
async def test_large_text_not_utf8_gets_1007(impl: str, events: Events, loop: str) -> None:
    """A large text frame cut by reads whose end is not UTF-8: closed with 1007, as a small
    one is."""
    payload = "é".encode() * 60_000 + b"caf\xc3"
    async with serve(impl, events, loop) as server:
        client, status = await RawClient.request(server.port, "/echo")
        assert status == 101
        await _write_in_pieces(client, frame(OP_TEXT, payload), 4096)
        opcode, data = await client.read_frame()
        await client.close()
    assert opcode == OP_CLOSE
    assert close_code_and_reason(data)[0] == 1007
    assert await take(events, "disconnect") == 1007


@pytest.mark.parametrize("loop", LOOPS)
async def test_large_message_over_ws_max_size_gets_1009(
    impl: str, events: Events, loop: str
) -> None:
    """``ws_max_size`` holds for frames cut by reads: exactly the limit is echoed, one byte
    more closes with 1009."""
    limit = 100_000
    async with serve(impl, events, loop, ws_max_size=limit) as server:
        client, status = await RawClient.request(server.port, "/echo")
        assert status == 101
        await _write_in_pieces(client, frame(OP_BINARY, b"y" * limit), 3000)
        assert await client.read_frame() == (OP_BINARY, b"y" * limit)
        # The header says it all: the rest would only be read and dropped.
        client.writer.write(frame(OP_BINARY, b"z" * (limit + 1))[:3000])
        opcode, data = await client.read_frame()
        await client.close()
    assert opcode == OP_CLOSE
    assert close_code_and_reason(data)[0] == 1009
    assert await take(events, "disconnect") == 1009


@pytest.mark.parametrize("loop", LOOPS)
async def test_app_closes_while_a_large_frame_arrives(impl: str, events: Events, loop: str) -> None:
    """The application closes while a large frame is half read (the compiled path hands the
    frame so far to the core): the closing handshake completes once the client has finished
    its frame and answered the close."""
    large = frame(OP_BINARY, b"q" * 400_000)
    async with serve(impl, events, loop) as server:
        client, status = await RawClient.request(server.port, "/raw/close-later")
        assert status == 101
        client.send_frame(OP_TEXT, b"first")
        assert await client.read_frame() == (OP_TEXT, b"ack")
        client.writer.write(large[:150_000])  # the app closes 0.5 s after its ack
        await client.writer.drain()
        opcode, data = await client.read_frame()
        assert (opcode, close_code_and_reason(data)[0]) == (OP_CLOSE, 1000)
        await _write_in_pieces(client, large[150_000:], 10_000)
        client.send_frame(OP_CLOSE, close_payload(1000))
        await client.writer.drain()
        assert await client.reader.read() == b""  # the server closes the TCP connection
        await client.close()
    assert await take(events, "closed-later") == "done"


@pytest.mark.parametrize("loop", LOOPS)
async def test_accept_with_headers_and_subprotocol(impl: str, events: Events, loop: str) -> None:
    """The 101 carries uvicorn's default headers, the application's own and the subprotocol,
    each once (ours appends them to the core's 101 template instead of serialising it again)."""
    async with serve(impl, events, loop) as server:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(
            upgrade_request(
                server.port,
                "/raw/accept-headers",
                key=key,
                extra=[("Sec-WebSocket-Protocol", "chat")],
            )
        )
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert lines[-2:] == ["", ""]
    fields = [line.partition(": ") for line in lines[1:-2]]
    assert all(sep == ": " for _, sep, _ in fields), lines
    names = sorted(name.lower() for name, _, _ in fields)
    assert names == sorted(
        [
            "upgrade",
            "connection",
            "sec-websocket-accept",
            "server",
            "date",
            "x-one",
            "x-two",
            "sec-websocket-protocol",
        ]
    )
    values = {name.lower(): value for name, _, value in fields}
    assert values["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert values["sec-websocket-protocol"] == "chat"
    assert (values["x-one"], values["x-two"], values["server"]) == ("1", "two, 2", "uvicorn")


@pytest.mark.parametrize("loop", LOOPS)
async def test_large_messages_over_tls(
    impl: str, events: Events, loop: str, tmp_path: Path
) -> None:
    """Under TLS the transports feed the protocol their own way (asyncio's SSL protocol fills
    ``get_buffer()``, piece by piece): large messages and every kind of send still arrive
    whole and in order."""
    made = make_certificate(tmp_path)
    if made is None:
        pytest.skip("no way to make a certificate here")
    cert, key = made
    client_context = ssl.create_default_context(cafile=str(cert))
    expected = _expected_sends()
    async with (
        serve(impl, events, loop, ssl_certfile=str(cert), ssl_keyfile=str(key)) as server,
        shakehands.connect(
            f"wss://{HOST}:{server.port}/raw/sends",
            ssl=client_context,
            compression=None,
            max_message_size=None,
        ) as ws,
    ):
        await ws.send(b"z" * 700_000)
        assert [await ws.recv() for _ in expected] == expected
        await ws.send("go")
        assert [await ws.recv() for _ in expected] == expected
    assert await take(events, "disconnect") == 1000
