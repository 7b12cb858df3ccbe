"""Direct socket I/O of the compiled callback path (``send(2)`` and ``recv(2)`` on the socket of
asyncio's plain TCP transport, see ``shakehands.asyncio._fastpath``), on both data paths
through the ``impl`` fixture: the same exchanges must behave alike compiled and pure Python.

Real servers and real clients on 127.0.0.1: partial sends to a slow reader, sends while the
transport holds buffered data, pause/resume of reading under backpressure, EOF and resets from
the client, a peer that vanished before a send, TLS (which must keep ``transport.write``), and
many connections opening and closing while others send to them (a send on a reused fd would
deliver a frame to the wrong client).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl
import struct
from typing import Any

import pytest

import shakehands
from shakehands.asyncio import _fastpath
from shakehands.asyncio._transport import LeanTransport

from ..asyncio.asyncio_helpers import RawClient, wait_for_condition
from ..helpers import HOST, OP_BINARY, OP_TEXT, frame
from .test_callback_paths import Recorder, open_raw, read_data

pytestmark = pytest.mark.timeout(120)


def direct(impl: str) -> bool:
    """Whether connections of this implementation do direct I/O (compiled, on asyncio's
    selector loop, with the extension built for it)."""
    return impl == "compiled" and _fastpath.direct_sends and _fastpath.direct_reads


def check_direct(impl: str, ws: Any) -> None:
    """On the compiled path, the connection sends and reads its socket itself: its FastPath is
    the transport's reader, registered with the selector."""
    if impl == "python":
        assert not isinstance(ws, _fastpath.FastCallbackConnection)
        return
    if not direct(impl):
        return  # direct I/O turned off (or not built): transport.write and _read_ready
    fast = ws._fast
    transport = ws.transport
    assert fast.fd == transport.get_extra_info("socket").fileno()
    assert fast.reading
    if isinstance(transport, LeanTransport):
        # The lean transport is the fd's reader handle, and calls the FastPath.
        assert transport._reader is fast
        if transport.is_reading():
            assert ws.loop._selector.get_key(fast.fd).data[0] is transport
        return
    assert transport._read_ready is fast
    if transport.is_reading():
        key = ws.loop._selector.get_key(fast.fd)
        assert key.data[0]._callback is fast


class Counting(Recorder):
    """Counts on_close calls and records what the loop's exception handler saw."""

    def __init__(self, echo: bool = True) -> None:
        super().__init__(echo)
        self.loop_errors: list[dict[str, Any]] = []

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        super().on_open(ws)
        ws.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))


def set_rcvbuf(client: RawClient, size: int) -> None:
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def reset(client: RawClient) -> None:
    """Close with a TCP reset (SO_LINGER 0)."""
    sock = client.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.abort()


# ---------------------------------------------------------------------------------------------
# Partial sends, buffered data, backpressure
# ---------------------------------------------------------------------------------------------


async def test_partial_sends_to_a_slow_reader(impl: str) -> None:
    """A reader with a small receive buffer, echoes much larger than what the kernel takes at
    once: the transport buffers the rest; every byte arrives, in order, read slowly."""
    listener = Counting()
    big = os.urandom(6 * 2**20)
    small = [os.urandom(n) for n in (1, 125, 126, 70_000)]
    async with shakehands.serve_callbacks(listener, HOST, 0, max_message_size=None) as server:
        client = await RawClient.open(server.port)
        set_rcvbuf(client, 16384)
        await client.handshake(server.port)
        await wait_for_condition(lambda: bool(listener.opened))
        ws = listener.opened[0]
        check_direct(impl, ws)
        client.send(frame(OP_BINARY, big))
        await client.writer.drain()
        # The echo does not fit in the socket buffers: the transport holds the rest.
        await wait_for_condition(lambda: ws.transport.get_write_buffer_size() > 0, timeout=30)
        # Sends while it holds data go behind it (through transport.write).
        for payload in small:
            ws.send(payload)
        assert ws.transport.get_write_buffer_size() > 0
        received = []
        for _ in range(1 + len(small)):
            _, opcode, payload = await client.read_frame()
            assert opcode == OP_BINARY
            received.append(payload)
            await asyncio.sleep(0)
        assert received[0] == big
        assert received[1:] == small
        # Back to an empty write buffer: direct again, and still the same exchanges.
        await wait_for_condition(lambda: ws.transport.get_write_buffer_size() == 0)
        client.send(frame(OP_TEXT, b"after"))
        assert await read_data(client, 1) == [(OP_TEXT, b"after")]
        check_direct(impl, ws)
        await client.close()
        await wait_for_condition(lambda: bool(listener.closed))
    assert listener.closed == [(1006, "")]
    assert listener.loop_errors == []


async def test_backpressure_pauses_and_resumes_reading(impl: str) -> None:
    """The client sends and does not read: the server's write buffer passes its high-water
    mark and reading pauses; when the client reads, it resumes (with the compiled reader
    registered again) and every message is answered, in order."""
    listener = Counting()
    payload = os.urandom(256 * 1024)
    count = 40
    async with shakehands.serve_callbacks(
        listener, HOST, 0, max_message_size=None, write_limit=64 * 1024
    ) as server:
        client = await RawClient.open(server.port)
        set_rcvbuf(client, 16384)
        await client.handshake(server.port)
        await wait_for_condition(lambda: bool(listener.opened))
        ws = listener.opened[0]

        async def send_all() -> None:
            for i in range(count):
                client.send(frame(OP_BINARY, i.to_bytes(4, "big") + payload))
                await client.writer.drain()

        sender = asyncio.create_task(send_all())
        await wait_for_condition(lambda: not ws.transport.is_reading(), timeout=30)
        assert ws.transport.get_write_buffer_size() > 0
        for i in range(count):
            _, opcode, echoed = await client.read_frame()
            assert (opcode, echoed[:4]) == (OP_BINARY, i.to_bytes(4, "big"))
            assert echoed[4:] == payload
        await sender
        await wait_for_condition(lambda: ws.transport.is_reading())
        check_direct(impl, ws)
        client.send(frame(OP_TEXT, b"done"))
        assert await read_data(client, 1) == [(OP_TEXT, b"done")]
        await client.close()
        await wait_for_condition(lambda: bool(listener.closed))
    assert len(listener.messages) == count + 1
    assert listener.loop_errors == []


# ---------------------------------------------------------------------------------------------
# EOF, resets, a vanished peer
# ---------------------------------------------------------------------------------------------


async def test_eof_from_the_client(impl: str) -> None:
    """Messages, then a half-close: every message is delivered and answered, then the server
    ends the connection; on_close once."""
    listener = Counting()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await open_raw(server.port)
        await wait_for_condition(lambda: bool(listener.opened))
        check_direct(impl, listener.opened[0])
        client.send(frame(OP_TEXT, b"one") + frame(OP_BINARY, b"two"))
        client.writer.write_eof()
        assert await read_data(client, 2) == [(OP_TEXT, b"one"), (OP_BINARY, b"two")]
        await client.read_eof()
        await wait_for_condition(lambda: bool(listener.closed))
        await asyncio.sleep(0.05)
        await client.close()
    assert listener.messages == ["one", b"two"]
    assert listener.closed == [(1006, "")]
    assert listener.loop_errors == []


async def test_reset_from_the_client(impl: str) -> None:
    """A TCP reset after a message: the reader meets ECONNRESET (or EOF), the connection is
    lost once, nothing reaches the loop's exception handler."""
    listener = Counting()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"hello"))
        assert await read_data(client, 1) == [(OP_TEXT, b"hello")]
        check_direct(impl, listener.opened[0])
        reset(client)
        await wait_for_condition(lambda: bool(listener.closed))
        await asyncio.sleep(0.05)
    assert listener.messages == ["hello"]
    assert listener.closed == [(1006, "")]
    assert listener.loop_errors == []


async def test_send_after_the_peer_vanished(impl: str) -> None:
    """The server stops reading, the client resets the connection, then the server sends: the
    send meets the reset (direct: send(2) fails, transport.write meets it again and closes), no
    exception escapes to the listener or the loop, on_close is called once."""
    listener = Counting(echo=False)
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        client = await open_raw(server.port)
        await wait_for_condition(lambda: bool(listener.opened))
        ws = listener.opened[0]
        check_direct(impl, ws)
        ws.transport.pause_reading()  # the reset is met by a send, not by a read
        reset(client)
        await asyncio.sleep(0.05)
        outcomes = []
        for _ in range(5):
            try:
                ws.send(b"x" * 1000)
            except shakehands.ConnectionClosed:
                outcomes.append("closed")  # once connection_lost has run: the API's answer
            else:
                outcomes.append("sent")
            await asyncio.sleep(0.01)
        # connection_lost runs from the loop, after the send that met the reset.
        assert outcomes[0] == "sent"
        assert outcomes[-1] == "closed"
        await wait_for_condition(lambda: bool(listener.closed))
        await asyncio.sleep(0.05)
    assert listener.closed == [(1006, "")]
    assert listener.loop_errors == []


# ---------------------------------------------------------------------------------------------
# TLS keeps transport.write
# ---------------------------------------------------------------------------------------------


async def test_tls_uses_the_transport(
    impl: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    listener = Counting()
    messages: list[str | bytes] = ["hello", b"\x00" * 300, os.urandom(200_000)]
    async with (
        shakehands.serve_callbacks(listener, HOST, 0, ssl=server_context) as server,
        shakehands.connect(
            f"wss://{HOST}:{server.port}/", ssl=client_context, compression=None
        ) as ws,
    ):
        for message in messages:
            await ws.send(message)
            assert await ws.recv() == message
        conn = listener.opened[0]
        if impl == "compiled":
            assert conn._fast.fd == -1  # type: ignore[attr-defined]
            assert not conn._fast.reading  # type: ignore[attr-defined]
            assert "_read_ready" not in vars(conn.transport)
    assert listener.messages == messages


# ---------------------------------------------------------------------------------------------
# Many connections opening and closing while others send to them
# ---------------------------------------------------------------------------------------------


class Sprayer(shakehands.Listener):
    """Each connection gets a number (sent to it first); "spray" sends every open connection
    a message naming its own number. A frame on the wrong socket (a reused fd) would reach a
    client with another number."""

    def __init__(self) -> None:
        self.next_id = 0
        self.open: dict[int, shakehands.CallbackConnection] = {}
        self.ids: dict[int, int] = {}  # id(ws) -> number
        self.closes = 0

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        self.next_id += 1
        self.open[self.next_id] = ws
        self.ids[id(ws)] = self.next_id
        ws.send(f"id:{self.next_id}")

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        for number, other in list(self.open.items()):
            with contextlib.suppress(shakehands.ConnectionClosed):
                other.send(f"to:{number}")

    def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
        self.closes += 1
        self.open.pop(self.ids.pop(id(ws)), None)


async def test_many_connections_opening_and_closing_while_sending(impl: str) -> None:
    listener = Sprayer()
    rounds, clients = 15, 12
    rng = random.Random(14)
    opened = 0

    async def one_client(port: int) -> None:
        nonlocal opened
        for _ in range(rounds):
            client = await open_raw(port)
            opened += 1
            _, opcode, payload = await client.read_frame()
            assert opcode == OP_TEXT and payload.startswith(b"id:")
            mine = b"to:" + payload[3:]
            for _ in range(rng.randint(1, 4)):
                client.send(frame(OP_TEXT, b"spray"))
                # At least our own spray comes back; others' may come first: all ours.
                _, opcode, payload = await client.read_frame()
                assert (opcode, payload) == (OP_TEXT, mine)
            await asyncio.sleep(rng.random() * 0.005)
            if rng.random() < 0.5:
                reset(client)
            else:
                client.abort()

    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        await asyncio.gather(*(one_client(server.port) for _ in range(clients)))
        await wait_for_condition(lambda: listener.closes == opened, timeout=30)
    assert opened == rounds * clients
    assert listener.open == {}
