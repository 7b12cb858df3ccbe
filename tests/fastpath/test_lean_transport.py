"""The lean transport of accepted sockets (``shakehands.asyncio._transport.LeanTransport``): what
the callback API's compiled path gets from ``DirectAccept`` on asyncio's selector loop.

First the transport alone, over real sockets on 127.0.0.1 accepted by hand, with a recording
protocol (buffered and plain): ``connection_made`` on the next iteration, reads, write
backpressure against a reader with a small ``SO_RCVBUF`` (``pause_writing`` /
``resume_writing`` at the water marks, the writer registered only while data is buffered),
pause / resume of reading, close with buffered data (flushed, then closed), abort, EOF with and
without ``keep_open``, a reset from the peer, ``write_eof``, ``get_extra_info``, failures of
the protocol reported to the loop without stopping it. Then through ``serve_callbacks``:
which transport a connection gets, shutdown with open connections, and 200 clients connecting,
resetting and half-closing while others echo, with the process's descriptors back to where
they were after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import selectors
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands.asyncio import _fastpath
from shakehands.asyncio._transport import LeanTransport
from shakehands.asyncio.server import DirectAccept

from ..asyncio.asyncio_helpers import RawClient, wait_for_condition
from ..helpers import HOST, OP_BINARY, OP_TEXT, frame

pytestmark = pytest.mark.timeout(120)

#: More than the socket buffers of a loopback connection take with a 4 KiB SO_RCVBUF reader.
BIG = 8 * 2**20


class Recording(asyncio.Protocol):
    """Records every call a transport makes."""

    def __init__(self, keep_open: bool = False) -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.transport: Any = None
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.keep_open = keep_open
        self.socket_open_at_lost: bool | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append("made")
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.calls.append("eof")
        return self.keep_open

    def pause_writing(self) -> None:
        self.calls.append("pause_writing")

    def resume_writing(self) -> None:
        self.calls.append("resume_writing")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.calls.append("lost")
        sock = self.transport.get_extra_info("socket")
        self.socket_open_at_lost = sock is not None and sock.fileno() != -1
        self.lost.set_result(exc)


class BufferedRecording(Recording, asyncio.BufferedProtocol):
    """The same, reading through ``get_buffer`` / ``buffer_updated``."""

    def __init__(self, keep_open: bool = False) -> None:
        super().__init__(keep_open)
        self.buffer = bytearray(100)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]


@contextlib.asynccontextmanager
async def pair(
    protocol: Recording, rcvbuf: int | None = None
) -> AsyncIterator[tuple[LeanTransport, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A LeanTransport over an accepted socket, and an asyncio stream client at the other end."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server((HOST, 0))
    client = socket.socket()
    if rcvbuf is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.setblocking(False)
    try:
        await loop.sock_connect(client, listener.getsockname())
        conn, addr = listener.accept()
        conn.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=client)
        transport = LeanTransport(loop, conn, protocol, addr)
        assert protocol.calls == []  # connection_made comes on the next iteration
        await wait_for_condition(lambda: protocol.calls[:1] == ["made"])
        try:
            yield transport, reader, writer
        finally:
            transport.abort()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            await protocol.lost
    finally:
        listener.close()


def reader_registered(transport: LeanTransport) -> bool:
    key = transport._loop._selector.get_key(transport._sock_fd)  # type: ignore[attr-defined]
    return bool(key.events & selectors.EVENT_READ) and key.data[0] is transport


def writer_registered(transport: LeanTransport) -> bool:
    selector = transport._loop._selector  # type: ignore[attr-defined]
    try:
        key = selector.get_key(transport._sock_fd)
    except KeyError:
        return False
    return bool(key.events & selectors.EVENT_WRITE)


@pytest.mark.parametrize("kind", [Recording, BufferedRecording])
async def test_reads_and_writes(kind: type[Recording]) -> None:
    protocol = kind()
    async with pair(protocol) as (transport, reader, writer):
        assert reader_registered(transport)
        assert transport.is_reading() and not transport.is_closing()
        writer.write(b"x" * 1000)  # more than the buffered protocol's buffer
        await wait_for_condition(lambda: len(protocol.data) == 1000)
        transport.write(b"hello")
        transport.writelines([b" ", bytearray(b"wor"), memoryview(b"ld")])
        assert await reader.readexactly(11) == b"hello world"
        assert transport.get_write_buffer_size() == 0
        assert not writer_registered(transport)
        with pytest.raises(TypeError):
            transport.write("text")  # type: ignore[arg-type]


async def test_get_extra_info() -> None:
    protocol = Recording()
    async with pair(protocol) as (transport, _, writer):
        client = writer.get_extra_info("socket")
        assert transport.get_extra_info("peername") == client.getsockname()
        assert transport.get_extra_info("sockname") == client.getpeername()
        sock = transport.get_extra_info("socket")
        assert sock.fileno() == transport._sock_fd
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert transport.get_extra_info("sslcontext") is None
        assert transport.get_extra_info("peercert", "none") == "none"
        assert transport.get_protocol() is protocol
        assert transport.can_write_eof()


async def test_write_backpressure() -> None:
    """A reader with a small receive buffer: the transport buffers what the socket does not
    take, pauses the protocol above the high-water mark, registers the writer while it holds
    data, and resumes the protocol at the low-water mark; every byte arrives in order."""
    protocol = Recording()
    async with pair(protocol, rcvbuf=4096) as (transport, reader, _):
        transport.set_write_buffer_limits(high=32768)
        assert transport.get_write_buffer_limits() == (8192, 32768)
        payload = os.urandom(BIG)
        transport.write(payload)
        assert transport.get_write_buffer_size() > 32768
        assert protocol.calls[-1] == "pause_writing"
        assert writer_registered(transport)
        transport.write(b"tail")  # behind the buffered data
        received = await reader.readexactly(len(payload) + 4)
        assert received == payload + b"tail"
        await wait_for_condition(lambda: transport.get_write_buffer_size() == 0)
        assert protocol.calls[-2:] == ["pause_writing", "resume_writing"]
        assert not writer_registered(transport)
        assert reader_registered(transport)


async def test_pause_and_resume_reading() -> None:
    protocol = Recording()
    async with pair(protocol) as (transport, _, writer):
        transport.pause_reading()
        assert not transport.is_reading()
        transport.pause_reading()  # twice is nothing
        writer.write(b"held")
        await asyncio.sleep(0.1)
        assert protocol.data == b""
        transport.resume_reading()
        assert transport.is_reading() and reader_registered(transport)
        await wait_for_condition(lambda: protocol.data == b"held")


async def test_pause_reading_with_a_writer_registered() -> None:
    """Reading paused and resumed while the writer is registered keeps both right."""
    protocol = Recording()
    async with pair(protocol, rcvbuf=4096) as (transport, reader, writer):
        payload = os.urandom(BIG)
        transport.write(payload)
        assert writer_registered(transport)
        transport.pause_reading()
        assert writer_registered(transport)
        transport.resume_reading()
        assert writer_registered(transport) and reader_registered(transport)
        writer.write(b"both ways")
        assert await reader.readexactly(len(payload)) == payload
        await wait_for_condition(lambda: protocol.data == b"both ways")
        await wait_for_condition(lambda: not writer_registered(transport))


async def test_close_flushes_buffered_data_first() -> None:
    protocol = Recording()
    async with pair(protocol, rcvbuf=4096) as (transport, reader, _):
        payload = os.urandom(BIG)
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0
        transport.close()
        assert transport.is_closing() and not transport.is_reading()
        transport.close()  # twice is nothing
        await asyncio.sleep(0.05)
        assert "lost" not in protocol.calls  # not while data is buffered
        assert await reader.read() == payload  # everything, then EOF
        assert await protocol.lost is None
        assert protocol.socket_open_at_lost  # the socket is closed after connection_lost
        assert transport.get_extra_info("socket") is None
        transport.write(b"after")  # ignored, as asyncio does after the connection is lost


async def test_close_without_buffered_data() -> None:
    protocol = Recording()
    async with pair(protocol) as (transport, reader, _):
        transport.write(b"last")
        transport.close()
        assert "lost" not in protocol.calls  # connection_lost comes through call_soon
        assert await reader.read() == b"last"
        assert await protocol.lost is None
        assert protocol.calls == ["made", "lost"]
        assert protocol.socket_open_at_lost


async def test_abort_drops_buffered_data() -> None:
    protocol = Recording()
    async with pair(protocol, rcvbuf=4096) as (transport, reader, _):
        transport.write(os.urandom(BIG))
        fd = transport._sock_fd
        transport.abort()
        assert transport.get_write_buffer_size() == 0
        assert not writer_registered(transport)
        assert await protocol.lost is None
        assert fd not in asyncio.get_running_loop()._selector.get_map()  # type: ignore[attr-defined]
        received = b""
        with contextlib.suppress(ConnectionError):
            received = await reader.read(2**21)
            while True:
                more = await reader.read(2**21)
                if not more:
                    break
                received += more
        assert len(received) < BIG


@pytest.mark.parametrize("kind", [Recording, BufferedRecording])
async def test_eof_closes(kind: type[Recording]) -> None:
    protocol = kind()
    async with pair(protocol) as (_, reader, writer):
        writer.write(b"bye")
        writer.write_eof()
        assert await protocol.lost is None
        assert protocol.calls == ["made", "eof", "lost"]
        assert protocol.data == b"bye"
        assert await reader.read() == b""


async def test_eof_keep_open() -> None:
    """``eof_received`` returning true: reading stops, writing goes on."""
    protocol = Recording(keep_open=True)
    async with pair(protocol) as (transport, reader, writer):
        writer.write_eof()
        await wait_for_condition(lambda: "eof" in protocol.calls)
        transport.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        transport.close()
        assert await protocol.lost is None


async def test_write_eof() -> None:
    protocol = Recording()
    async with pair(protocol) as (transport, reader, writer):
        transport.write(b"done")
        transport.write_eof()
        assert await reader.read() == b"done"
        with pytest.raises(RuntimeError):
            transport.write(b"more")
        writer.write(b"the client can still send")
        await wait_for_condition(lambda: protocol.data == b"the client can still send")


async def test_reset_by_peer() -> None:
    protocol = Recording()
    async with pair(protocol) as (transport, _, writer):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        exc = await protocol.lost
        assert isinstance(exc, ConnectionResetError)  # the read meets the reset
        assert protocol.calls == ["made", "lost"]
        assert transport.is_closing()
        transport.write(b"to nobody")  # nothing happens


async def test_protocol_failures_go_to_the_loop() -> None:
    """A protocol that raises in ``data_received`` closes its connection, reported to the
    loop's exception handler; the loop goes on."""

    class Failing(Recording):
        def data_received(self, data: bytes) -> None:
            raise ValueError("boom")

    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: seen.append(context))
    try:
        protocol = Failing()
        async with pair(protocol) as (_, reader, writer):
            writer.write(b"x")
            exc = await protocol.lost
            assert isinstance(exc, ValueError)
            assert await reader.read() == b""
        assert [type(context["exception"]) for context in seen] == [ValueError]
    finally:
        loop.set_exception_handler(None)


# ---------------------------------------------------------------------------------------------
# Through serve_callbacks
# ---------------------------------------------------------------------------------------------


def compiled_lean() -> bool:
    return _fastpath.AVAILABLE and _fastpath.direct_sends


class Echo(shakehands.Listener):
    def __init__(self) -> None:
        self.opened: list[shakehands.CallbackConnection] = []
        self.closed = 0

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        self.opened.append(ws)

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(message)

    def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
        self.closed += 1


async def test_which_transport(impl: str) -> None:
    """The compiled path on asyncio's loop gets the lean transport; pure Python, or with
    ``DirectAccept.lean`` off, the loop's own."""
    for lean in (True, False):
        await one_server(impl, lean)


async def one_server(impl: str, lean: bool) -> None:
    """One echo server with ``DirectAccept.lean`` set to ``lean``: which transport, and an echo."""
    saved = DirectAccept.lean
    DirectAccept.lean = lean
    try:
        listener = Echo()
        async with shakehands.serve_callbacks(listener, HOST, 0) as server:
            client = await RawClient.open(server.port)
            await client.handshake(server.port)
            await wait_for_condition(lambda: bool(listener.opened))
            transport = listener.opened[0].transport
            expected = impl == "compiled" and lean and compiled_lean()
            assert isinstance(transport, LeanTransport) == expected
            client.send(frame(OP_TEXT, b"ping"))
            _, opcode, payload = await client.read_frame()
            assert (opcode, payload) == (OP_TEXT, b"ping")
            client.abort()
    finally:
        DirectAccept.lean = saved


async def test_shutdown_with_open_connections(impl: str) -> None:
    listener = Echo()
    # The clients never answer the server's close frame: aborted after close_timeout.
    server = await shakehands.serve_callbacks(listener, HOST, 0, close_timeout=0.2)
    clients = [await RawClient.open(server.port) for _ in range(8)]
    for client in clients:
        await client.handshake(server.port)
    await wait_for_condition(lambda: len(listener.opened) == 8)
    server.close()
    async with asyncio.timeout(10):
        await server.wait_closed()
    assert listener.closed == 8
    for client in clients:
        client.abort()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def describe_fds() -> dict[int, str]:
    """This process's descriptors, each with what it is (a TCP socket with its two ends), to
    say which side a left-over descriptor belongs to when the churn test fails."""
    sockets: dict[str, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                ports = f"{int(local.split(':')[1], 16)}->{int(remote.split(':')[1], 16)}"
                sockets[f"socket:[{inode}]"] = f"tcp {ports} state {state}"
    described: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            described[int(name)] = sockets.get(target, target)
    return described


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
async def test_churn_leaves_no_descriptor(impl: str) -> None:
    """200 clients connect and reset, half-close, close mid-handshake or echo, at once and in
    random order; every echo comes back to its own client, and afterwards the process holds
    exactly the descriptors it held before."""
    listener = Echo()
    async with shakehands.serve_callbacks(listener, HOST, 0) as server:
        baseline = open_fds()
        before = describe_fds()
        rng = random.Random(14)

        async def one(i: int) -> None:
            kind = rng.choice(["echo", "reset", "half", "mid", "echo"])
            if kind == "mid":
                _, writer = await asyncio.open_connection(HOST, server.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
                await asyncio.sleep(0)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return
            client = await RawClient.open(server.port)
            try:
                await client.handshake(server.port)
                if kind == "echo":
                    for n in range(3):
                        data = f"{i}:{n}".encode() * 50
                        client.send(frame(OP_BINARY, data))
                        _, opcode, payload = await client.read_frame()
                        assert (opcode, payload) == (OP_BINARY, data)
                elif kind == "reset":
                    client.send(frame(OP_BINARY, os.urandom(rng.randrange(1, 4000))))
                    sock = client.writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:  # half-close: EOF from the client, then wait for the server to end it
                    client.writer.write_eof()
                    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                        await client.reader.read()
            finally:
                client.abort()

        async with asyncio.timeout(60):
            await asyncio.gather(*(one(i) for i in range(200)))
        await wait_for_condition(lambda: len(server.connections) == 0, timeout=30)
        with contextlib.suppress(TimeoutError):
            await wait_for_condition(lambda: open_fds() == baseline, timeout=10)
        left = {fd: what for fd, what in describe_fds().items() if before.get(fd) != what}
        assert open_fds() == baseline, f"server on port {server.port}; left over: {left}"
