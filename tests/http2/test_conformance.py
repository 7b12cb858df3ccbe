"""Protocol cases that matter, run over HTTP/2 streams (Autobahn does not speak HTTP/2).

Our server (coroutine API, callback API on the compiled data path and on the pure-Python one)
against an independent HTTP/2 client driven with ``h2`` directly: framing, fragmentation,
UTF-8, close codes, limits and compression, each on an extended CONNECT stream, with an echo
stream on the same connection that must stay unharmed by the case.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from shakehands.asyncio import _fastpath
from shakehands.protocol.connection import Pong
from shakehands.protocol.extensions.permessage_deflate import DeflateOptions

from ..asyncio.asyncio_helpers import echo_server
from ..helpers import frame
from .h2_helpers import H2Client, Stream, h2_client

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["coroutine", "callback", "callback-pure"])
def server_api(request: pytest.FixtureRequest) -> Iterator[str]:
    saved = _fastpath.enabled
    _fastpath.enabled = request.param != "callback-pure"
    try:
        yield "coroutine" if request.param == "coroutine" else "callback"
    finally:
        _fastpath.enabled = saved


async def closed_with(client: H2Client, stream: Stream) -> int:
    await client.wait(stream, lambda s: s.ended or s.reset is not None)
    assert stream.ws is not None
    return stream.ws.close_code


async def unharmed(client: H2Client, other: Stream) -> None:
    client.send_text(other, "unharmed")
    assert await client.message(other) == "unharmed"
    assert client.goaways == []


def raw(client: H2Client, stream: Stream, data: bytes) -> None:
    client.conn.send_data(stream.stream_id, data)
    client.flush()


async def test_framing_fragmentation_and_control_frames(
    server_api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(server_api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        stream = client.websocket()
        await client.accepted(stream)
        assert stream.ws is not None
        for payload in ["", "é" * 1000, "x" * (2**20 - 1)]:  # empty to just under 1 MiB
            client.send_text(stream, payload)
            assert await client.message(stream) == payload
        client.send_binary(stream, b"")
        assert await client.message(stream) == b""
        # Fragments with a ping in between (RFC 6455 §5.4): one message back, a pong too.
        stream.ws.send_fragment("frag", fin=False)
        stream.ws.send_ping(b"between")
        stream.ws.send_fragment("men", fin=False)
        stream.ws.send_fragment("ted", fin=True)
        client._send_ws(stream)
        assert await client.message(stream) == "fragmented"
        assert Pong(b"between") in stream.messages
        client.close_ws(stream, 4000)
        assert await closed_with(client, stream) == 4000


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(frame(0x1, b"\xff\xfe"), 1007, id="invalid-utf8"),
        pytest.param(
            frame(0x1, "€".encode()[:2], fin=False) + frame(0x0, b"x"),
            1007,
            id="utf8-split-invalid",
        ),
        pytest.param(frame(0x3, b""), 1002, id="reserved-opcode"),
        pytest.param(frame(0x1, b"x", mask=False), 1002, id="unmasked"),
        pytest.param(frame(0x9, b"x" * 126), 1002, id="ping-too-long"),
        pytest.param(frame(0x9, b"", fin=False), 1002, id="fragmented-ping"),
        pytest.param(frame(0x0, b"x"), 1002, id="continuation-first"),
        pytest.param(frame(0x8, (999).to_bytes(2, "big")), 1002, id="close-code-999"),
        pytest.param(frame(0x8, b"\x03"), 1002, id="close-payload-1-byte"),
        pytest.param(
            frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), 1007, id="close-reason-invalid-utf8"
        ),
        pytest.param(frame(0x2, b"z" * 5000), 1009, id="over-max-message-size"),
    ],
)
async def test_bad_frames_close_that_websocket_only(
    server_api: str,
    certificate: tuple[Path, Path],
    server_context: ssl.SSLContext,
    data: bytes,
    code: int,
) -> None:
    async with (
        echo_server(server_api, ssl=server_context, max_message_size=4096) as server,
        h2_client(server.port, certificate) as client,
    ):
        bad, good = await client.websockets(2)
        raw(client, bad, data)
        assert await closed_with(client, bad) == code
        await unharmed(client, good)


async def test_compression_over_http2(
    server_api: str, certificate: tuple[Path, Path], server_context: ssl.SSLContext
) -> None:
    async with (
        echo_server(server_api, ssl=server_context) as server,
        h2_client(server.port, certificate) as client,
    ):
        stream = client.websocket(compression=DeflateOptions())
        plain = client.websocket()
        await client.accepted(stream)
        await client.accepted(plain)
        assert stream.headers is not None and plain.headers is not None
        assert "permessage-deflate" in stream.headers["sec-websocket-extensions"]
        assert "sec-websocket-extensions" not in plain.headers
        for text in ["a" * 100_000, "b", "a" * 100_000]:  # context takeover across messages
            client.send_text(stream, text)
            assert await client.message(stream) == text
        # A compressed control frame (RSV1 on a ping) is a protocol error (RFC 7692 §6).
        ping = bytearray(frame(0x9, b"p"))
        ping[0] |= 0x40
        raw(client, stream, bytes(ping))
        assert await closed_with(client, stream) == 1002
        await unharmed(client, plain)
