"""Floods: peers that send as fast as they can and never read our replies.

The server runs in a child process (``python -m shakehands echo``) so that its resident memory
can be read from ``/proc``. The documented bound (docs/security.md) per flooding connection is

    max_queue x message size      (coroutine API: messages received, waiting for the handler)
  + write_limit + one message     (the write buffer: send() waits / reading pauses above it)
  + 256 KiB                       (one socket read, parsed in one go)

and the tests check the measured growth against that bound, with a factor of two for Python's
object overhead. Meanwhile a well-behaved client keeps getting answers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

import shakehands

from ..asyncio.asyncio_helpers import small_buffer_socket, sock_handshake, uri
from ..helpers import HOST, OP_BINARY, OP_PING, frame
from .hardening_helpers import EchoProcess, proc_available

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not proc_available(), reason="needs /proc to read the server's memory"),
]

KiB = 1024
MiB = 2**20
MAX_QUEUE = 32  # the defaults the echo server runs with
WRITE_LIMIT = 64 * KiB
READ_CHUNK = 256 * KiB


def documented_bound(message_size: int) -> int:
    """Bytes one flooding connection may pin in the server, as docs/security.md states it."""
    return MAX_QUEUE * message_size + WRITE_LIMIT + message_size + READ_CHUNK


async def flood(
    sock: socket.socket, data: bytes, stall: float = 1.0, limit: int | None = None
) -> int:
    """Send ``data`` over and over until the server has refused every byte for ``stall`` s (or
    ``limit`` bytes went through); return the bytes sent. The peer never reads."""
    loop = asyncio.get_running_loop()
    sent = 0
    view = memoryview(data)
    offset = 0
    blocked_since: float | None = None
    while True:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            now = loop.time()
            if blocked_since is None:
                blocked_since = now
            elif now - blocked_since > stall:
                return sent
            await asyncio.sleep(0.02)
            continue
        blocked_since = None
        sent += n
        offset = (offset + n) % len(data)
        if limit is not None and sent >= limit:
            return sent
        assert sent < 1024 * MiB, "the server never pushed back"
        await asyncio.sleep(0)


async def measure_latency(port: int, stop: asyncio.Event, at_least: int = 5) -> list[float]:
    """Round trips of a well-behaved client while the flood goes on (and at least ``at_least``
    of them: the server may still be working through what the flood left in its buffers)."""
    latencies: list[float] = []
    start = time.perf_counter()
    async with shakehands.connect(f"ws://127.0.0.1:{port}/") as ws:
        latencies.append(time.perf_counter() - start)  # the opening handshake
        while not stop.is_set() or len(latencies) < at_least:
            start = time.perf_counter()
            async with asyncio.timeout(10):
                await ws.send("are you there?")
                assert await ws.recv() == "are you there?"
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
    return latencies


@pytest.mark.parametrize(
    ("message_size", "connections"),
    [(16, 10), (64 * KiB, 20), (1 * MiB - 64, 2)],
    ids=["16B-x10", "64KiB-x20", "1MiB-x2"],
)
async def test_flood_memory_is_bounded(api: str, message_size: int, connections: int) -> None:
    # Many frames per send: small frames arrive by the thousand in every read.
    one = frame(OP_BINARY, os.urandom(message_size))
    data = one * max(1, 64 * KiB // len(one))
    with EchoProcess("--api", api) as echo:
        async with asyncio.timeout(100):
            # Warm up (imports, first connection), then take the baseline.
            async with shakehands.connect(f"ws://127.0.0.1:{echo.port}/") as ws:
                await ws.send("warm-up")
                await ws.recv()
            await asyncio.sleep(0.2)
            baseline = echo.status("VmRSS")

            socks = [small_buffer_socket(4096) for _ in range(connections)]
            try:
                for sock in socks:
                    assert await sock_handshake(sock, echo.port) == b""
                stop = asyncio.Event()
                prober = asyncio.ensure_future(measure_latency(echo.port, stop))
                sent = await asyncio.gather(*(flood(sock, data) for sock in socks))
                stop.set()
                latencies = await prober
                peak = echo.status("VmHWM")
                rss = echo.status("VmRSS")
            finally:
                for sock in socks:
                    sock.close()

    growth = peak - baseline
    bound = connections * 2 * documented_bound(message_size) + 16 * MiB
    print(
        f"\n[flood {api} {message_size} B x {connections}] sent {sum(sent) / MiB:.1f} MiB, "
        f"baseline RSS {baseline / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB, "
        f"after {rss / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB "
        f"({growth / connections / MiB:.2f} MiB per connection; bound {bound / MiB:.0f} MiB); "
        f"probe: handshake {latencies[0] * 1000:.0f} ms, {len(latencies) - 1} round trips, "
        f"max {max(latencies[1:]) * 1000:.0f} ms"
    )
    assert growth < bound


async def test_ping_flood_from_non_reader_is_bounded(api: str) -> None:
    # Every ping asks for a pong; a peer that never reads would make us queue them forever.
    # While our write buffer is full only the latest pong is kept (RFC 6455 §5.5.3 allows it).
    ping = frame(OP_PING, b"p" * 125)
    with EchoProcess("--api", api) as echo:
        async with asyncio.timeout(100):
            async with shakehands.connect(f"ws://127.0.0.1:{echo.port}/") as ws:
                await ws.send("warm-up")
                await ws.recv()
            baseline = echo.status("VmRSS")
            socks = [small_buffer_socket(4096) for _ in range(10)]
            try:
                for sock in socks:
                    await sock_handshake(sock, echo.port)
                # The coroutine API keeps reading pings (each costs at most one pending pong);
                # the callback API stops reading while its write buffer is full. 20 MiB each.
                burst = ping * (64 * KiB // len(ping))
                await asyncio.gather(*(flood(s, burst, limit=20 * MiB) for s in socks))
                peak = echo.status("VmHWM")
                async with shakehands.connect(f"ws://127.0.0.1:{echo.port}/") as ws:
                    await ws.send("still serving")
                    assert await ws.recv() == "still serving"
            finally:
                for sock in socks:
                    sock.close()
    growth = peak - baseline
    print(f"\n[ping flood {api}] RSS growth {growth / MiB:.1f} MiB")
    # Up to 200 MiB of pings, 1.6 million pongs owed: a few buffers are held, not the pongs.
    assert growth < 10 * (2 * documented_bound(131)) + 16 * MiB


async def test_send_waits_for_100_non_reading_peers_without_buffering() -> None:
    # A handler that sends as fast as send() lets it, to peers that never read: each send()
    # waits once the write buffer is above write_limit, so what the server holds per peer is
    # bounded by write_limit + one message, whatever the handler tries.
    size = 16 * KiB
    sent: dict[int, int] = {}
    buffered: dict[int, int] = {}

    async def handler(ws: shakehands.ServerConnection) -> None:
        key = id(ws)
        sent[key] = 0
        while True:
            await ws.send(os.urandom(size))
            sent[key] += 1
            buffered[key] = max(buffered.get(key, 0), ws.transport.get_write_buffer_size())

    async with shakehands.serve(handler, HOST, 0, compression=None) as server:
        socks = [small_buffer_socket(4096) for _ in range(100)]
        try:
            async with asyncio.timeout(60):
                for sock in socks:
                    await sock_handshake(sock, server.port)
                await asyncio.sleep(1.0)
                snapshot = dict(sent)
                await asyncio.sleep(0.5)
                # Every handler is stuck in send(): no progress without a reader.
                assert sent == snapshot
                assert max(buffered.values()) <= WRITE_LIMIT + size + 14
                # The server still serves others (this handler sends to the client, too).
                async with shakehands.connect(uri(server)) as ws:
                    assert len(await ws.recv()) == size
                # One peer starts reading: its handler, and only its, makes progress again
                # (once the kernel's buffers, then ours, drain below the low-water mark).
                loop = asyncio.get_running_loop()
                read = 0
                while all(sent[k] == snapshot[k] for k in snapshot):
                    read += len(await loop.sock_recv(socks[0], 65536))
                    assert read < 256 * MiB
                await asyncio.sleep(0.2)
                progressed = [k for k in snapshot if sent[k] != snapshot[k]]
                assert len(progressed) == 1
        finally:
            for sock in socks:
                sock.close()
    print(
        f"\n[send() waits] per peer: {min(snapshot.values())}-{max(snapshot.values())} "
        f"messages of 16 KiB accepted before send() waited; max write buffer "
        f"{max(buffered.values()) / KiB:.0f} KiB"
    )
