"""The lingering close: after a refused handshake or a protocol violation the server half-closes,
then reads and drops what the peer still sends (until its EOF, at most ``linger_limit`` bytes and
``close_timeout`` seconds) before it closes the socket.

Closing a socket with unread bytes sends a RST, and a RST destroys what the peer had not read
yet: the 400, or the close frame. A peer still talking when it is refused must get its answer,
and a peer that never stops must not hold the server's socket beyond the bounds.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import sys
import time
from pathlib import Path

import pytest

import shakehands
from shakehands.asyncio.base import TransportProtocol

from ..asyncio.asyncio_helpers import RawClient, echo_server, wait_for_condition
from ..helpers import HOST, OP_BINARY, OP_TEXT, frame, parse_head, upgrade_request
from .hardening_helpers import EchoProcess, gather_limited, proc_available

pytestmark = pytest.mark.timeout(90)

KiB = 1024
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
LINGER_LIMIT = getattr(TransportProtocol, "linger_limit", 2**20)

BAD_REQUESTS = {
    # Refused by the core while parsing (never a Request event).
    "HTTP/1.0": lambda port: f"GET /chat HTTP/1.0\r\nHost: {HOST}:{port}\r\n\r\n".encode(),
    # Parsed, then refused by accept() (the Request event, _answer).
    "bad key": lambda port: upgrade_request(port, key="not base64 of 16 bytes"),
}


async def send_then_read(
    port: int, head: bytes, chunks: list[bytes], pause: float = 0.002
) -> tuple[bytes, bool]:
    """Send ``head``, then ``chunks`` one write at a time with ``pause`` between them, then read
    until the server closes; return what was read and whether the connection was reset."""
    client = await RawClient.open(port)
    reset = False
    received = b""
    try:
        client.send(head)
        for chunk in chunks:
            await asyncio.sleep(pause)
            client.send(chunk)
            await client.writer.drain()
        while data := await client.reader.read(65536):
            received += data
    except ConnectionResetError:
        reset = True
    finally:
        await client.close()
    return received, reset


def complete_response(received: bytes) -> tuple[int, bytes]:
    """The status and body of the HTTP response in ``received``; the body must be complete."""
    head, sep, body = received.partition(b"\r\n\r\n")
    assert sep, f"no complete response head: {received[:200]!r}"
    status, headers = parse_head(head)
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body) > 0, (status, body)
    return status, body


# ---------------------------------------------------------------------------------------------
# (a) A refused client that is still sending gets the whole 400
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_refused_client_still_sending_gets_the_400(api: str, case: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(60):
            for _ in range(30):
                head = BAD_REQUESTS[case](server.port)
                received, reset = await send_then_read(server.port, head, [b"x" * KiB] * 20)
                assert not reset, "the answer was destroyed by a reset"
                status, _ = complete_response(received)
                assert status == 400
            await wait_for_condition(lambda: not server.connections)


# ---------------------------------------------------------------------------------------------
# (b) Random bytes: every connection gets its 400, none a reset
# ---------------------------------------------------------------------------------------------


async def test_random_bytes_connections_each_get_their_400(api: str) -> None:
    rng = random.Random(20)
    async with echo_server(api) as server:

        async def attack() -> tuple[bytes, bool]:
            # Random bytes, 1-32 KiB, in writes of 1-4 KiB: what a confused or hostile client
            # (or a scanner) sends before it reads. The first byte is not one of a method's
            # (a token character): about one in 2 000 random inputs would otherwise look like
            # "X <no line end yet>" and wait for open_timeout instead of getting a 400.
            first = rng.choice([b for b in range(256) if chr(b) not in TOKEN])
            data = bytes([first]) + os.urandom(rng.randrange(0, 32 * KiB))
            sizes = [rng.randrange(1, 4 * KiB) for _ in range(len(data) // KiB + 1)]
            chunks, offset = [], 0
            for size in sizes:
                chunks.append(data[offset : offset + size])
                offset += size
            chunks = [c for c in chunks if c]
            return await send_then_read(server.port, chunks[0], chunks[1:], pause=0)

        async with asyncio.timeout(60):
            results = await gather_limited([attack for _ in range(500)], limit=32)
            resets = sum(reset for _, reset in results)
            assert resets == 0, f"{resets} of 500 connections were reset"
            for received, _ in results:
                status, _ = complete_response(received)
                assert status == 400
            await wait_for_condition(lambda: not server.connections)


# ---------------------------------------------------------------------------------------------
# (c) A protocol violation while the client keeps sending: the close frame arrives
# ---------------------------------------------------------------------------------------------


async def test_violation_while_still_sending_gets_the_close_frame(api: str) -> None:
    async with echo_server(api) as server:
        async with asyncio.timeout(60):
            for _ in range(10):
                client = await RawClient.open(server.port)
                try:
                    await client.handshake(server.port)
                    client.send(frame(OP_TEXT, b"unmasked", mask=False))
                    for _ in range(20):
                        await asyncio.sleep(0.002)
                        client.send(frame(OP_BINARY, b"y" * (KiB - 6)))
                        await client.writer.drain()
                    code, _ = await client.read_close()
                    assert code == 1002
                    assert await client.read_eof() == b""
                finally:
                    await client.close()
            await wait_for_condition(lambda: not server.connections)


# ---------------------------------------------------------------------------------------------
# (d) The linger is bounded: in time and in bytes; the server's sockets are all released
# ---------------------------------------------------------------------------------------------

# The repository root: the child imports the test helpers as the package they are.
_ROOT = str(Path(__file__).resolve().parents[2])

SERVER_SCRIPT = f"""
import asyncio, sys
sys.path.insert(0, {_ROOT!r})
from tests.asyncio.asyncio_helpers import echo_server

async def main(api, close_timeout, max_connections):
    options = dict(close_timeout=float(close_timeout), max_connections=int(max_connections))
    async with echo_server(api, **options) as server:
        print(f"Linger test server listening on 127.0.0.1:{{server.port}}.", flush=True)
        await server.serve_forever()

asyncio.run(main(*sys.argv[1:]))
"""


class LingerServer(EchoProcess):
    """An echo server in a child process with a given ``close_timeout`` and
    ``max_connections``, so that its file descriptors can be counted."""

    def __init__(self, api: str, close_timeout: float, max_connections: int) -> None:
        super().__init__(api, str(close_timeout), str(max_connections))

    def command(self) -> list[str]:
        return [sys.executable, "-c", SERVER_SCRIPT, *self.args]

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


async def refused_sender(
    port: int, chunk: bytes, pause: float, answered: asyncio.Event, flood: bytes = b""
) -> tuple[int, float]:
    """Send a bad request, then ``chunk`` every ``pause`` s, forever, never closing; read the
    answer meanwhile (``answered`` is set once the whole 400 is in). With ``flood``, send that
    without pause from 0.1 s after the answer. Return the bytes sent after the request and the
    time they were sent over, once the server drops the connection."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    received = bytearray()

    async def read() -> None:
        while data := await loop.sock_recv(sock, 65536):
            received.extend(data)
            head, sep, body = bytes(received).partition(b"\r\n\r\n")
            if sep and len(body) == int(parse_head(head)[1]["content-length"]):
                answered.set()

    try:
        await loop.sock_connect(sock, (HOST, port))
        await loop.sock_sendall(sock, BAD_REQUESTS["HTTP/1.0"](port))
        reader = asyncio.ensure_future(read())
        start = time.monotonic()
        sent = 0
        flood_from: float | None = None
        try:
            while True:
                if flood and flood_from is None and answered.is_set():
                    flood_from = time.monotonic() + 0.1
                if flood_from is not None and time.monotonic() >= flood_from:
                    await loop.sock_sendall(sock, flood)
                    sent += len(flood)
                    await asyncio.sleep(0)
                    continue
                await loop.sock_sendall(sock, chunk)
                sent += len(chunk)
                await asyncio.sleep(pause)
        except (ConnectionResetError, BrokenPipeError):
            elapsed = time.monotonic() - start
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return sent, elapsed
    finally:
        sock.close()


pytestmark_proc = pytest.mark.skipif(not proc_available(), reason="needs /proc to count fds")


@pytestmark_proc
async def test_linger_is_bounded_in_time_and_still_counts(api: str) -> None:
    # Peers that keep trickling bytes after their 400 and never close: each is held (it counts
    # against max_connections) until close_timeout, then aborted; every socket is released.
    close_timeout, count = 3.0, 6
    with LingerServer(api, close_timeout, count) as server:
        baseline = server.fds()
        async with asyncio.timeout(60):
            events = [asyncio.Event() for _ in range(count)]
            senders = [
                asyncio.ensure_future(refused_sender(server.port, b"z" * 100, 0.05, event))
                for event in events
            ]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), close_timeout)
            await asyncio.sleep(0.5)  # ten more writes each: they do not end the linger
            # All answered, all still lingering: held by the server, and counted.
            assert server.fds() == baseline + count
            with pytest.raises(shakehands.InvalidStatus) as excinfo:
                await shakehands.connect(f"ws://{HOST}:{server.port}/")
            assert excinfo.value.response.status == 503
            results = await asyncio.gather(*senders)
            for sent, elapsed in results:
                assert sent < LINGER_LIMIT  # the time bound, not the byte bound, ended it
                assert elapsed < close_timeout + 5
            await wait_for_condition(lambda: server.fds() == baseline, timeout=10)


@pytestmark_proc
async def test_linger_is_bounded_in_bytes(api: str) -> None:
    # Peers that keep talking after their 400 (1 KiB writes: they must not end the linger),
    # then send as fast as they can: dropped after linger_limit bytes, long before
    # close_timeout (30 s here); every socket is released.
    close_timeout, count = 30.0, 4
    with LingerServer(api, close_timeout, count) as server:
        baseline = server.fds()
        async with asyncio.timeout(60):
            events = [asyncio.Event() for _ in range(count)]
            results = await asyncio.gather(
                *(
                    refused_sender(server.port, b"w" * KiB, 0.01, event, b"f" * 64 * KiB)
                    for event in events
                )
            )
            assert all(event.is_set() for event in events)  # the 400 came before the close
            for sent, elapsed in results:
                assert sent > LINGER_LIMIT
                assert elapsed < close_timeout / 2
            await wait_for_condition(lambda: server.fds() == baseline, timeout=10)


# ---------------------------------------------------------------------------------------------
# Shutdown: lingering connections do not hold server.close() beyond close_timeout
# ---------------------------------------------------------------------------------------------


async def test_server_close_waits_for_lingering_peers_at_most_close_timeout(api: str) -> None:
    close_timeout = 2.0
    server = await echo_server(api, close_timeout=close_timeout)
    async with asyncio.timeout(30):
        answered = [asyncio.Event() for _ in range(3)]
        senders = [
            asyncio.ensure_future(refused_sender(server.port, b"z" * 100, 0.05, event))
            for event in answered
        ]
        await asyncio.gather(*(event.wait() for event in answered))
        await wait_for_condition(lambda: len(server.connections) == 3)
        start = time.monotonic()
        server.close()
        await server.wait_closed()
        assert time.monotonic() - start < close_timeout + 2
        assert not server.connections
        await asyncio.gather(*senders)  # each was dropped (and had its 400 first)
