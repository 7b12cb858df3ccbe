"""Flow control on real sockets: a peer that does not read cannot grow our memory, ``send``
waits for the peer, and a handler that does not ``recv`` stops reading from the socket."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

import shakehands
from shakehands import ConnectionClosedOK

from ..helpers import HOST, OP_BINARY, frame
from .asyncio_helpers import (
    echo_server,
    small_buffer_socket,
    sock_handshake,
    uri,
    wait_for_condition,
)

pytestmark = pytest.mark.timeout(60)

MiB = 2**20


async def push_until_blocked(
    sock: socket.socket, message: bytes, *, limit: int = 256 * MiB, stall: float = 0.3
) -> tuple[int, bytes]:
    """Send ``message`` over and over, yielding to the loop after every send, until the socket
    has refused every byte for ``stall`` seconds. Return (whole messages started, unsent tail
    of the last one). Fails if ``limit`` bytes go through without the peer pushing back."""
    loop = asyncio.get_running_loop()
    sent = count = 0
    pending = b""
    blocked_since: float | None = None
    while True:
        if not pending:
            pending = message
            count += 1
        try:
            n = sock.send(pending)
        except BlockingIOError:
            now = loop.time()
            if blocked_since is None:
                blocked_since = now
            elif now - blocked_since > stall:
                return count, pending
            await asyncio.sleep(0.01)
            continue
        blocked_since = None
        sent += n
        pending = pending[n:]
        assert sent < limit, "the server never stopped reading"
        await asyncio.sleep(0)


async def recv_exactly(sock: socket.socket, n: int, tail: bytes = b"") -> int:
    """Read ``n`` bytes from ``sock`` while sending ``tail``; return the byte count read."""
    loop = asyncio.get_running_loop()
    sender = asyncio.ensure_future(loop.sock_sendall(sock, tail))
    got = 0
    while got < n:
        chunk = await loop.sock_recv(sock, 2**18)
        assert chunk, f"EOF after {got} of {n} bytes"
        got += len(chunk)
    await sender
    return got


# ---------------------------------------------------------------------------------------------
# (a) A client that sends but never reads
# ---------------------------------------------------------------------------------------------


async def test_non_reading_client_cannot_grow_server_memory(api: str) -> None:
    size = 64 * 1024
    message = frame(OP_BINARY, os.urandom(size))  # masked once, sent many times
    echoed_frame = 10 + size  # unmasked, 64-bit length header
    async with echo_server(api, max_queue=4, write_limit=2**16) as server:
        sock = small_buffer_socket(4096)
        try:
            async with asyncio.timeout(30):
                assert await sock_handshake(sock, server.port) == b""
                (conn,) = server.connections
                count, tail = await push_until_blocked(sock, message)

                # The server stopped reading from us, and holds little in memory.
                assert not conn.transport.is_reading()
                assert conn.transport.get_write_buffer_size() < 4 * MiB
                if api == "coroutine":
                    # The handler waits in send(); its queue is bounded by max_queue (plus what
                    # one read from the socket may hold).
                    assert len(conn._inbox) <= 4 + 2**18 // size
                else:
                    assert not conn.writable
                # Not everything we sent is buffered somewhere: pushing stopped early.
                assert count * len(message) < 64 * MiB

                # Now read: everything comes back, nothing was lost, reading resumes.
                got = await recv_exactly(sock, count * echoed_frame, tail)
                assert got == count * echoed_frame
                await wait_for_condition(lambda: conn.transport.is_reading())
        finally:
            sock.close()


async def test_callback_writable_false_while_peer_does_not_read() -> None:
    class Flood(shakehands.Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            # Sends within a batch leave together when on_message returns.
            for _ in range(64):
                ws.send(b"x" * 65536)

    async with shakehands.serve_callbacks(Flood(), HOST, 0, compression=None) as server:
        sock = small_buffer_socket(4096)
        try:
            async with asyncio.timeout(10):
                await sock_handshake(sock, server.port)
                (conn,) = server.connections
                assert conn.writable
                await asyncio.get_running_loop().sock_sendall(sock, frame(OP_BINARY, b"go"))
                await wait_for_condition(lambda: not conn.writable)
                assert not conn.transport.is_reading()
                got = await recv_exactly(sock, 64 * (65536 + 10))
                assert got == 64 * (65536 + 10)
                await wait_for_condition(lambda: conn.writable and conn.transport.is_reading())
        finally:
            sock.close()


# ---------------------------------------------------------------------------------------------
# (b) send() waits while the peer does not read
# ---------------------------------------------------------------------------------------------


async def test_server_send_blocks_until_peer_reads() -> None:
    big = os.urandom(8 * MiB)
    started = asyncio.Event()
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    second: asyncio.Future[asyncio.Task[None]] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        started.set()
        try:
            await asyncio.wait_for(ws.send(big), 0.5)
        except TimeoutError:
            outcome.set_result("timed out")
        else:
            outcome.set_result("completed")
        # The same message again, in a task this time, left to finish.
        task = asyncio.create_task(ws.send(big))
        second.set_result(task)
        await task

    async with shakehands.serve(
        handler, HOST, 0, max_message_size=None, compression=None
    ) as server:
        sock = small_buffer_socket(4096)
        try:
            async with asyncio.timeout(30):
                # Bytes of the first frame may come with the 101 (the compiled send writes
                # during the handler's first step).
                early = await sock_handshake(sock, server.port)
                await started.wait()
                assert await outcome == "timed out"
                task = await second
                await asyncio.sleep(0.3)
                assert not task.done()  # still waiting for us to read
                # Read both messages: the first was queued before the timeout cancelled send.
                await recv_exactly(sock, 2 * (10 + len(big)) - len(early))
                async with asyncio.timeout(5):
                    await task
        finally:
            sock.close()


async def test_client_send_blocks_while_server_does_not_recv() -> None:
    release = asyncio.Event()
    received: list[int] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        await release.wait()
        async for message in ws:
            if message == "done":
                break
            received.append(len(message))
        await ws.send(str(len(received)))

    message = b"m" * (256 * 1024)
    async with (
        shakehands.serve(handler, HOST, 0, max_queue=1, compression=None) as server,
        asyncio.timeout(30),
        shakehands.connect(uri(server)) as ws,
    ):
        sends = 0
        for _ in range(400):  # 100 MiB would be far more than any socket buffer
            sends += 1
            try:
                await asyncio.wait_for(ws.send(message), 0.5)
            except TimeoutError:
                break
        else:
            pytest.fail("send never blocked")
        assert ws.transport.get_write_buffer_size() >= ws.write_limit
        release.set()
        # The message whose send timed out was queued already: it arrives too.
        await ws.send(message)
        await ws.send("done")
        assert await ws.recv() == str(sends + 1)
    assert received == [len(message)] * (sends + 1)


# ---------------------------------------------------------------------------------------------
# (c) The receive queue
# ---------------------------------------------------------------------------------------------


async def test_server_stops_reading_after_max_queue_messages() -> None:
    max_queue = 4
    conns: list[shakehands.ServerConnection] = []
    release = asyncio.Event()
    received: list[Any] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        conns.append(ws)
        await release.wait()
        async for message in ws:
            received.append(message)

    async with (
        shakehands.serve(handler, HOST, 0, max_queue=max_queue, compression=None) as server,
        asyncio.timeout(10),
        shakehands.connect(uri(server)) as ws,
    ):
        await wait_for_condition(lambda: bool(conns))
        conn = conns[0]
        for i in range(max_queue):
            assert conn.transport.is_reading()
            await ws.send(f"m{i}")
            await wait_for_condition(lambda i=i: len(conn._inbox) == i + 1)
        assert not conn.transport.is_reading()
        # More messages wait in the socket buffers, not in the server's queue.
        for i in range(max_queue, 50):
            await ws.send(f"m{i}")
        await asyncio.sleep(0.1)
        assert len(conn._inbox) == max_queue
        release.set()
        await wait_for_condition(lambda: len(received) == 50)
        assert received == [f"m{i}" for i in range(50)]
        assert conn.transport.is_reading()


async def test_client_stops_reading_after_max_queue_and_server_send_waits() -> None:
    sent: list[int] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        for i in range(200):
            await ws.send(bytes([i % 256]) * 65536)
            sent.append(i)

    async with (
        shakehands.serve(handler, HOST, 0, compression=None) as server,
        asyncio.timeout(20),
        shakehands.connect(uri(server), max_queue=2) as ws,
    ):
        # The server's handler stalls: we do not read, our queue is full, buffers fill.
        previous = -1
        while len(sent) != previous:
            previous = len(sent)
            await asyncio.sleep(0.2)
        assert len(sent) < 200
        assert not ws.transport.is_reading()
        for i in range(200):
            assert await ws.recv() == bytes([i % 256]) * 65536
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
    assert len(sent) == 200
