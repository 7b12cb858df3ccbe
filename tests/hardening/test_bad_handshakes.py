"""A corpus of malformed and hostile opening handshakes.

Each request gets the 4xx it deserves with a plain-text reason and ``Connection: close`` (or, for
bytes that never become a request, a clean close after ``open_timeout``), then the socket is
closed, and the server goes on serving. Every case runs against both server APIs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

import shakehands

from ..asyncio.asyncio_helpers import RawClient, echo_server, uri, wait_for_condition
from ..helpers import HOST, OP_TEXT, frame, make_key, parse_head

pytestmark = pytest.mark.timeout(30)

CLOSE = "clean close, no answer"


def request(
    *,
    line: str = "GET /chat HTTP/1.1",
    headers: list[tuple[str, str]] | None = None,
    drop: tuple[str, ...] = (),
    add: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Callable[[int], bytes]:
    """A request builder: the standard upgrade headers, minus ``drop``, plus ``add``."""

    def build(port: int) -> bytes:
        base = headers or [
            ("Host", f"{HOST}:{port}"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", make_key()),
            ("Sec-WebSocket-Version", "13"),
        ]
        fields = [(n, v) for n, v in base if n not in drop] + (add or [])
        head = line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields) + "\r\n"
        return head.encode("latin-1") + body

    return build


def raw(data: bytes) -> Callable[[int], bytes]:
    return lambda port: data


def replace(old: bytes, new: bytes) -> Callable[[int], bytes]:
    good = request()
    return lambda port: good(port).replace(old, new, 1)


TLS_CLIENT_HELLO = bytes.fromhex(
    "16030100c4010000c00303" + "ab" * 32 + "00" + "0004130113020100" + "0093" + "00" * 147
)
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

CORPUS: dict[str, tuple[Callable[[int], bytes], int | str]] = {
    # Request line
    "HTTP/1.0": (request(line="GET /chat HTTP/1.0"), 400),
    "HTTP/0.9 simple request": (raw(b"GET /chat\r\n\r\n"), 400),
    "HTTP/2 preface": (raw(HTTP2_PREFACE), 400),
    "HTTP/2.0 version": (request(line="GET /chat HTTP/2.0"), 400),
    "lower-case version": (request(line="GET /chat http/1.1"), 400),
    "POST": (request(line="POST /chat HTTP/1.1"), 405),
    "CONNECT": (request(line="CONNECT 127.0.0.1:80 HTTP/1.1"), 400),
    "OPTIONS *": (request(line="OPTIONS * HTTP/1.1"), 400),
    "lower-case method": (request(line="get /chat HTTP/1.1"), 405),
    # (absolute-form with http/https/ws/wss is valid: RFC 9112 §3.2.2, tested in tests/protocol)
    "absolute-form, foreign scheme": (request(line="GET ftp://evil.test/chat HTTP/1.1"), 400),
    "two spaces": (request(line="GET  /chat HTTP/1.1"), 400),
    "trailing word": (request(line="GET /chat HTTP/1.1 extra"), 400),
    "tab separator": (request(line="GET\t/chat HTTP/1.1"), 400),
    "space in target": (request(line="GET /ch at HTTP/1.1"), 400),
    "NUL in target": (request(line="GET /chat\x00 HTTP/1.1"), 400),
    "request line 100 KiB": (request(line="GET /" + "a" * 100_000 + " HTTP/1.1"), 400),
    "empty request line": (raw(b"\r\nHost: x\r\n\r\n"), 400),
    # Header syntax
    "bare LF line endings": (lambda port: request()(port).replace(b"\r\n", b"\n"), CLOSE),
    "space before colon": (replace(b"Upgrade:", b"Upgrade :"), 400),
    "obsolete line folding": (replace(b"Connection: Upgrade", b"Connection:\r\n Upgrade"), 400),
    "control case: a valid request": (request(add=[("X-A", "b")]), 101),
    "line without colon": (
        replace(b"Connection: Upgrade\r\n", b"Connection: Upgrade\r\nX\r\n"),
        400,
    ),
    "empty header name": (
        replace(b"Connection: Upgrade\r\n", b"Connection: Upgrade\r\n: v\r\n"),
        400,
    ),
    "NUL in header value": (request(add=[("X-A", "a\x00b")]), 400),
    "CR in header value": (replace(b"Connection: Upgrade", b"Connection: Up\rgrade"), 400),
    "non-token header name": (request(add=[("X(A)", "b")]), 400),
    # Size limits
    "one header of 100 KiB": (request(add=[("X-Big", "a" * 100_000)]), 431),
    "headers over 8 KiB in total": (request(add=[(f"X-{i}", "a" * 100) for i in range(90)]), 431),
    "200 headers": (request(add=[(f"X-{i}", "v") for i in range(200)]), 431),
    "65 KiB of frames before the answer": (
        lambda port: request()(port) + frame(OP_TEXT, b"a" * 65_000) * 2,
        400,
    ),
    # Missing or duplicated headers
    "no Host": (request(drop=("Host",)), 400),
    "two Hosts": (request(add=[("Host", "evil.test")]), 400),
    "empty Host": (request(drop=("Host",), add=[("Host", "")]), 400),
    "Host with a path": (request(drop=("Host",), add=[("Host", "a/b")]), 400),
    "no Upgrade": (request(drop=("Upgrade",)), 426),
    "Upgrade: h2c": (replace(b"Upgrade: websocket", b"Upgrade: h2c"), 400),
    "no Connection": (request(drop=("Connection",)), 400),
    "Connection: keep-alive": (replace(b"Connection: Upgrade", b"Connection: keep-alive"), 400),
    "no key": (request(drop=("Sec-WebSocket-Key",)), 400),
    "two keys": (request(add=[("Sec-WebSocket-Key", make_key())]), 400),
    "key not base64": (
        request(drop=("Sec-WebSocket-Key",), add=[("Sec-WebSocket-Key", "!!")]),
        400,
    ),
    "key of 15 bytes": (
        request(drop=("Sec-WebSocket-Key",), add=[("Sec-WebSocket-Key", "YWFhYWFhYWFhYWFhYWFh")]),
        400,
    ),
    "key of 17 bytes": (
        request(
            drop=("Sec-WebSocket-Key",), add=[("Sec-WebSocket-Key", "YWFhYWFhYWFhYWFhYWFhYWE=")]
        ),
        400,
    ),
    "key non-ASCII": (
        request(drop=("Sec-WebSocket-Key",), add=[("Sec-WebSocket-Key", "é" * 24)]),
        400,
    ),
    "no version": (request(drop=("Sec-WebSocket-Version",)), 426),
    "version 8": (replace(b"Version: 13", b"Version: 8"), 426),
    "version 13, 8": (replace(b"Version: 13", b"Version: 13, 8"), 426),
    "two versions": (request(add=[("Sec-WebSocket-Version", "13")]), 426),
    "two Origins": (request(add=[("Origin", "https://a.test"), ("Origin", "https://b.test")]), 400),
    "malformed extension offer": (request(add=[("Sec-WebSocket-Extensions", 'x; y="')]), 400),
    # Request smuggling shapes: a framing header on an upgrade request
    "Transfer-Encoding: chunked": (
        request(add=[("Transfer-Encoding", "chunked")], body=b"0\r\n\r\n"),
        400,
    ),
    "Content-Length and Transfer-Encoding": (
        request(add=[("Content-Length", "4"), ("Transfer-Encoding", "chunked")], body=b"0\r\n\r\n"),
        400,
    ),
    "Content-Length: 5 with a body": (request(add=[("Content-Length", "5")], body=b"hello"), 400),
    "two Content-Lengths": (request(add=[("Content-Length", "0"), ("Content-Length", "5")]), 400),
    "Content-Length: -1": (request(add=[("Content-Length", "-1")]), 400),
    "smuggled second request": (
        request(add=[("Content-Length", "40")], body=b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"),
        400,
    ),
    # Not HTTP at all
    "TLS ClientHello": (raw(TLS_CLIENT_HELLO), 400),
    "SSH banner": (raw(b"SSH-2.0-OpenSSH_9.6\r\n"), 400),
    "binary garbage": (raw(bytes(range(256))), 400),
    "NUL bytes": (raw(b"\x00" * 64), 400),
    "UTF-8 method": (raw("ПОЛУЧИТЬ / HTTP/1.1\r\n\r\n".encode()), 400),
    "only CRLFs": (raw(b"\r\n\r\n"), 400),
    "nothing, then EOF": (raw(b""), CLOSE),
    "half a request, then EOF": (lambda port: request()(port)[:40], CLOSE),
}


def test_corpus_is_large_enough() -> None:
    hostile = [name for name, (_, expected) in CORPUS.items() if expected != 101]
    assert len(hostile) >= 40


@pytest.mark.parametrize("case", list(CORPUS))
async def test_bad_handshake(api: str, case: str) -> None:
    build, expected = CORPUS[case]
    async with echo_server(api, open_timeout=1.0) as server:
        data = build(server.port)
        async with asyncio.timeout(10):
            client = await RawClient.open(server.port)
            client.send(data)
            if expected == CLOSE and data.endswith((b"", b"\r\n")) and len(data) < 100:
                client.writer.write_eof()  # the peer gives up
            if expected == 101:
                status, _ = await client.read_head()
                assert status == 101
                await client.close()
                await assert_served(server)
                return
            received = await client.read_eof()
            await client.close()
            if expected == CLOSE:
                assert received == b""
            else:
                head, sep, body = received.partition(b"\r\n\r\n")
                assert sep, received[:200]
                status, headers = parse_head(head)
                assert status == expected, (status, body)
                assert headers["connection"] == "close"
                assert headers["content-type"].startswith("text/plain")
                assert int(headers["content-length"]) == len(body) > 0  # a reason, and no more
            await wait_for_condition(lambda: not server.connections)
            await assert_served(server)


async def assert_served(server: shakehands.Server) -> None:  # type: ignore[type-arg]
    async with shakehands.connect(uri(server)) as ws:
        await ws.send("still serving")
        assert await ws.recv() == "still serving"


async def test_whole_corpus_on_one_server_concurrently(api: str) -> None:
    # All at once, three times each, against one server: it answers each and keeps serving.
    async with echo_server(api, open_timeout=1.0) as server:

        async def attack(data: bytes) -> None:
            client = await RawClient.open(server.port)
            client.send(data)
            if len(data) < 100:
                client.writer.write_eof()
            await client.read_eof()
            await client.close()

        async with asyncio.timeout(30):
            attacks = [
                attack(build(server.port))
                for build, expected in CORPUS.values()
                for _ in range(3)
                if expected != 101
            ]
            await asyncio.gather(*attacks, assert_served(server))
            await wait_for_condition(lambda: not server.connections)
            await assert_served(server)
