"""Large frames on the compiled data path of the callback and coroutine APIs, against pure
Python: on the compiled path a large frame cut by a read is read straight into its message
(``FastPath.assembling``: the payload size of the frame being read so), and everything the
protocol asks still holds: limits refused before the payload is read, strict UTF-8 of large
text, the hand-over to the core when the server closes mid-frame, control frames around a
large frame, peers that stall or leave mid-frame (the partial message freed), fragmented
messages. Every test runs on both APIs, both implementations, and asyncio's loop and uvloop
(uvloop hands bytes to ``data_received``; asyncio's transport reads into ``get_buffer``, or
the compiled reader reads the socket itself). Real sockets on 127.0.0.1, raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

import shakehands
from shakehands.asyncio import _fastcoro, _fastpath

from ..asyncio.asyncio_helpers import RawClient, wait_for_condition
from ..helpers import (
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    frame,
    frame_header,
)
from .paths_helpers import read_data

pytestmark = pytest.mark.timeout(120)

#: Frames larger than this (header included) are read into their message when a read cuts
#: them (IN_PLACE in _fastpath.c).
IN_PLACE = 64 * 1024


class Server:
    """An echo server of one API and implementation that records what it received, how each
    connection ended, and its connections."""

    def __init__(self, api: str, compiled: bool) -> None:
        self.api = api
        self.compiled = compiled
        self.messages: list[str | bytes] = []
        self.connections: list[Any] = []
        self.ended: list[Any] = []  # close codes (callback) or exceptions / None (coroutine)
        self.port = 0

    @contextlib.asynccontextmanager
    async def serve(self, **options: Any) -> AsyncIterator[Server]:
        outer = self

        class Listener(shakehands.Listener):
            def on_open(self, ws: shakehands.CallbackConnection) -> None:
                outer.connections.append(ws)

            def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
                outer.messages.append(message)
                ws.send(message)

            def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
                outer.ended.append(code)

        async def handler(ws: shakehands.ServerConnection) -> None:
            outer.connections.append(ws)
            try:
                async for message in ws:
                    outer.messages.append(message)
                    await ws.send(message)
            except shakehands.ConnectionClosed as exc:
                outer.ended.append(exc)
                raise
            outer.ended.append(None)

        server: Any
        if self.api == "callback":
            server = shakehands.serve_callbacks(Listener(), HOST, 0, **options)
        else:
            server = shakehands.serve(handler, HOST, 0, **options)
        async with server as running:
            self.port = running.port
            yield self

    async def client(self, **kwargs: Any) -> RawClient:
        client = await RawClient.open(self.port)
        await client.handshake(self.port, **kwargs)
        await wait_for_condition(lambda: len(self.connections) >= 1)
        return client

    def fast(self, index: int = -1) -> Any:
        """The connection's ``FastPath`` (compiled), else ``None``."""
        ws = self.connections[index]
        kind = (
            _fastpath.FastCallbackConnection
            if self.api == "callback"
            else _fastcoro.FastServerConnection
        )
        assert isinstance(ws, kind) is self.compiled
        return ws._fast if self.compiled else None

    async def wait_assembling(self, size: int, index: int = -1) -> None:
        """On the compiled path: wait until the frame of ``size`` payload bytes is being read
        into its message."""
        fast = self.fast(index)
        if fast is not None:
            await wait_for_condition(lambda: fast.assembling == size)

    def check_done(self, index: int = -1) -> None:
        """Nothing is being assembled any more, and the compiled path is on again."""
        fast = self.fast(index)
        if fast is not None:
            assert fast.assembling == 0
            assert fast.active

    async def close(self, code: int, reason: str, index: int = -1) -> Awaitable[Any] | None:
        """Close from the server's side (the coroutine API's close is awaited by the caller,
        once the client has answered)."""
        ws = self.connections[index]
        if self.api == "callback":
            ws.close(code, reason)
            return None
        return asyncio.ensure_future(ws.close(code, reason))

    async def ping(self, data: bytes, index: int = -1) -> None:
        ws = self.connections[index]
        if self.api == "callback":
            ws.ping(data)
        else:
            asyncio.ensure_future(ws.ping(data))


@pytest.fixture(
    params=["callback-compiled", "callback-python", "coroutine-compiled", "coroutine-python"]
)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    api, kind = str(request.param).split("-")
    module: Any = _fastpath if api == "callback" else _fastcoro
    compiled = kind == "compiled"
    if compiled and not module.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
    saved = module.enabled
    module.enabled = compiled
    try:
        yield Server(api, compiled)
    finally:
        module.enabled = saved


Run = Callable[[Callable[[], Awaitable[None]]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run a test's coroutine on a fresh loop of the kind under test."""
    factory: Any = None
    if request.param == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop

    def runner(main: Callable[[], Awaitable[None]]) -> None:
        async def wrapped() -> None:
            await main()

        with asyncio.Runner(loop_factory=factory) as loop:
            loop.run(wrapped())

    return runner


async def send_parts(client: RawClient, data: bytes, cuts: list[int]) -> None:
    """Send ``data`` cut at ``cuts``, the parts apart in time (separate reads)."""
    start = 0
    for cut in [*cuts, len(data)]:
        client.send(data[start:cut])
        await client.writer.drain()
        await asyncio.sleep(0.005)
        start = cut


# ---------------------------------------------------------------------------------------------
# Messages read into place
# ---------------------------------------------------------------------------------------------


def test_large_frames_cut_anywhere(server: Server, run: Run) -> None:
    """Binary and text frames above and around the threshold, cut in their header, their mask
    key and their payload: each echoed whole; cut in its payload, the compiled path reads it
    into its message."""
    text = ("滴水之恩当以涌泉相报 🎉" * 10_000).encode()[:300_001]
    text = text[: len(text.decode(errors="ignore").encode())]  # whole characters only
    cases = [
        (OP_BINARY, os.urandom(70_000)),
        (OP_BINARY, os.urandom(IN_PLACE - 8)),  # exactly IN_PLACE with its header: not in place
        (OP_TEXT, text),
        (OP_BINARY, os.urandom(2**20)),
    ]

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            for opcode, payload in cases:
                data = frame(opcode, payload)
                for cut in [1, 3, 9, 13, 14, 15, 1000, len(data) // 2, len(data) - 1]:
                    client.send(data[:cut])
                    await client.writer.drain()
                    if cut > 14 and len(data) > IN_PLACE:
                        await server.wait_assembling(len(payload))
                    else:
                        await asyncio.sleep(0.002)
                    client.send(data[cut:])
                    assert await read_data(client, 1) == [(opcode, payload)], (len(data), cut)
                    server.check_done()
            await client.close()

    run(main)
    assert len(server.messages) == 4 * 9


def test_frames_following_a_large_frame_in_the_same_read(server: Server, run: Run) -> None:
    """The end of a large frame arrives with a small frame, a whole large one and the start of
    the next large frame: all answered in order, the next frame read into its message in
    turn; a ping after it is answered after them."""
    first, second = os.urandom(200_000), os.urandom(150_000)
    data1, data2 = frame(OP_BINARY, first), frame(OP_TEXT, b"b" * 150_000)

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            client.send(data1[:50_000])
            await client.writer.drain()
            await server.wait_assembling(len(first))
            client.send(
                data1[50_000:]
                + frame(OP_TEXT, b"small")
                + frame(OP_BINARY, second)
                + data2[:60_000]
            )
            await client.writer.drain()
            await server.wait_assembling(150_000)
            client.send(data2[60_000:] + frame(OP_PING, b"p"))
            frames = await read_data(client, 5)
            assert (OP_PONG, b"p") in frames  # may leave before the answers (the core's)
            assert [f for f in frames if f[0] != OP_PONG] == [
                (OP_BINARY, first),
                (OP_TEXT, b"small"),
                (OP_BINARY, second),
                (OP_TEXT, b"b" * 150_000),
            ]
            server.check_done()
            await client.close()

    run(main)


def test_uncompressed_large_frames_with_deflate_negotiated(server: Server, run: Run) -> None:
    """With permessage-deflate negotiated, a large frame sent without compression is read into
    its message too."""
    payload = os.urandom(300_000)
    data = frame(OP_BINARY, payload)

    async def main() -> None:
        async with server.serve():
            client = await server.client(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")])
            client.send(data[:100_000])
            await client.writer.drain()
            if server.api == "callback":  # the coroutine API's C path takes no extension
                await server.wait_assembling(len(payload))
            await asyncio.sleep(0.005)
            client.send(data[100_000:])
            fin, opcode, _ = await client.read_frame()
            assert (fin, opcode & 0x0F) == (True, OP_BINARY)
            assert server.messages == [payload]
            if server.api == "callback":
                server.check_done()
            await client.close()

    run(main)


# ---------------------------------------------------------------------------------------------
# Limits and UTF-8
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"max_message_size": 100_000}, {"max_message_size": None, "max_frame_size": 100_000}],
    ids=["max_message_size", "max_frame_size"],
)
def test_oversize_refused_before_its_payload(
    server: Server, run: Run, options: dict[str, Any]
) -> None:
    """A frame just over the limit: 1009 as soon as its header is in, with none of its payload
    sent; one at the limit, cut by reads, is delivered."""

    async def main() -> None:
        async with server.serve(**options):
            client = await server.client()
            payload = os.urandom(100_000)
            data = frame(OP_BINARY, payload)
            await send_parts(client, data, [20_000])
            assert await read_data(client, 1) == [(OP_BINARY, payload)]
            client.send(frame_header(OP_BINARY, 100_001) + os.urandom(4))
            code, _ = await client.read_close()
            assert code == 1009
            await client.read_eof()
            await client.close()

    run(main)
    assert len(server.messages) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"a" * 200_000 + b"\xff",
        b"a" * 1000 + b"\xc0\xaf" + b"b" * 200_000,
        "é".encode() * 100_000 + b"\xe2\x82",
    ],
    ids=["bad-last-byte", "bad-early", "truncated-at-the-end"],
)
def test_invalid_utf8_in_a_large_text_frame(server: Server, run: Run, payload: bytes) -> None:
    """Valid UTF-8 cut inside a character by the reads is fine; invalid anywhere: 1007 and
    nothing delivered, after the messages before it."""

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            good = "é€😀".encode() * 30_000
            await send_parts(client, frame(OP_TEXT, good), [70_001, 140_003])
            assert await read_data(client, 1) == [(OP_TEXT, good)]
            data = frame(OP_TEXT, payload)
            client.send(data[:90_000])
            await client.writer.drain()
            await server.wait_assembling(len(payload))
            client.send(data[90_000:])
            code, _ = await client.read_close()
            assert code == 1007
            await client.read_eof()
            await client.close()

    run(main)
    assert len(server.messages) == 1


# ---------------------------------------------------------------------------------------------
# Control frames and closing around a partly read large frame
# ---------------------------------------------------------------------------------------------


def test_server_closes_while_a_large_frame_is_read(server: Server, run: Run) -> None:
    """The server closes with a large frame half read into its message: the frame goes to the
    core as it was received, the message is delivered whole, the closing handshake ends."""
    payload = os.urandom(400_000)
    data = frame(OP_BINARY, payload)

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            client.send(frame(OP_TEXT, b"hi"))
            assert await read_data(client, 1) == [(OP_TEXT, b"hi")]
            client.send(data[:150_000])
            await client.writer.drain()
            await server.wait_assembling(len(payload))
            closing = await server.close(1001, "going away")
            assert await client.read_close() == (1001, "going away")
            await send_parts(client, data[150_000:] + frame(OP_CLOSE, close_payload(1000)), [1])
            await client.read_eof()
            await client.close()
            if closing is not None:
                await closing
            await wait_for_condition(lambda: bool(server.ended))
            fast = server.fast()
            if fast is not None:
                assert fast.assembling == 0

    run(main)
    assert server.messages == ["hi", payload]


def test_server_ping_while_a_large_frame_is_read(server: Server, run: Run) -> None:
    """A ping from the server with a large frame half read: it leaves at once; the frame is
    completed, echoed, and its pong accepted."""
    payload = os.urandom(500_000)
    data = frame(OP_BINARY, payload)

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            client.send(data[:200_000])
            await client.writer.drain()
            await server.wait_assembling(len(payload))
            await server.ping(b"srv")
            assert await read_data(client, 1) == [(OP_PING, b"srv")]
            client.send(data[200_000:] + frame(OP_PONG, b"srv"))
            assert await read_data(client, 1) == [(OP_BINARY, payload)]
            client.send(frame(OP_TEXT, b"after"))
            assert await read_data(client, 1) == [(OP_TEXT, b"after")]
            server.check_done()
            await client.close()

    run(main)


def test_ping_and_close_right_after_a_large_frame(server: Server, run: Run) -> None:
    """The end of a large frame, a ping and a close frame in one read: echo, pong, close."""
    payload = os.urandom(300_000)
    data = frame(OP_BINARY, payload)

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            client.send(data[:100_000])
            await client.writer.drain()
            await server.wait_assembling(len(payload))
            client.send(
                data[100_000:] + frame(OP_PING, b"x") + frame(OP_CLOSE, close_payload(1000))
            )
            frames = await read_data(client, 3)
            assert (OP_PONG, b"x") in frames[:2]
            assert (OP_BINARY, payload) in frames[:2]
            assert frames[2][0] == OP_CLOSE
            await client.read_eof()
            await client.close()
            await wait_for_condition(lambda: bool(server.ended))

    run(main)
    assert server.messages == [payload]


# ---------------------------------------------------------------------------------------------
# Peers that stall or leave mid-frame
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "eof"])
def test_peer_stalls_then_leaves_mid_frame(server: Server, run: Run, how: str) -> None:
    """A peer stops halfway through a 1 MiB frame: the others are served meanwhile; when it
    resets the connection (or closes it), the connection ends (1006) and its partial message
    is freed."""
    big = frame(OP_BINARY, os.urandom(2**20))

    async def main() -> None:
        async with server.serve():
            staller = await server.client()
            staller.send(big[: len(big) // 3])
            await staller.writer.drain()
            await server.wait_assembling(2**20, 0)
            fast = server.fast(0)
            other = await server.client()
            await wait_for_condition(lambda: len(server.connections) == 2)
            for i in range(20):
                other.send(frame(OP_BINARY, b"%d" % i * 10_000))
                assert await read_data(other, 1) == [(OP_BINARY, b"%d" % i * 10_000)]
            if fast is not None:
                assert fast.assembling == 2**20  # still waiting, holding its message
            if how == "reset":
                staller.abort()
            else:
                staller.writer.write_eof()
            await wait_for_condition(lambda: bool(server.ended))
            if fast is not None:
                assert fast.assembling == 0
            ended = server.ended[0]
            if server.api == "callback":
                assert ended == 1006
            else:
                assert isinstance(ended, shakehands.ConnectionClosedError)
            await staller.close()
            other.send(frame(OP_TEXT, b"still here"))
            assert await read_data(other, 1) == [(OP_TEXT, b"still here")]
            await other.close()

    run(main)
    assert len(server.messages) == 21


# ---------------------------------------------------------------------------------------------
# Fragmentation
# ---------------------------------------------------------------------------------------------


def test_large_fragmented_message_then_a_large_frame(server: Server, run: Run) -> None:
    """A fragmented message of large fragments (with a ping between them) is the core's and is
    delivered whole; the large frame after it is read into its message again."""
    parts = [os.urandom(100_000) for _ in range(3)]
    payload = os.urandom(200_000)
    data = frame(OP_BINARY, payload)

    async def main() -> None:
        async with server.serve():
            client = await server.client()
            stream = (
                frame(OP_BINARY, parts[0], fin=False)
                + frame(OP_PING, b"between")
                + frame(OP_CONT, parts[1], fin=False)
                + frame(OP_CONT, parts[2])
            )
            await send_parts(client, stream, [50_000, 100_010, 150_000, 250_000])
            frames = await read_data(client, 2)
            assert (OP_PONG, b"between") in frames
            assert (OP_BINARY, b"".join(parts)) in frames
            server.check_done()
            client.send(data[:60_000])
            await client.writer.drain()
            await server.wait_assembling(len(payload))
            client.send(data[60_000:])
            assert await read_data(client, 1) == [(OP_BINARY, payload)]
            server.check_done()
            await client.close()

    run(main)
    assert server.messages == [b"".join(parts), payload]


# ---------------------------------------------------------------------------------------------
# Recycling of large messages (no other code may see a message reused)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["callback", "coroutine"])
def test_large_messages_in_a_row_kept_hashed_or_dropped(api: str, run: Run) -> None:
    """Large messages of one size in a row, each cut by the reads: the compiled path may reuse
    the block of one that nobody references any more for the next; one the application keeps
    (every third), or hashed before it was dropped, must stay as it was delivered."""
    module: Any = _fastpath if api == "callback" else _fastcoro
    if not module.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
    payloads = [os.urandom(200_000) for _ in range(12)]
    kept: list[bytes] = []
    hashes: list[int] = []

    def receive(message: str | bytes) -> bytes:
        assert isinstance(message, bytes)
        hashes.append(hash(message))
        if len(hashes) % 3 == 0:
            kept.append(message)
        return message

    class Listener(shakehands.Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            ws.send(receive(message))

    async def handler(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            await ws.send(receive(message))

    async def main() -> None:
        server: Any = (
            shakehands.serve_callbacks(Listener(), HOST, 0)
            if api == "callback"
            else shakehands.serve(handler, HOST, 0)
        )
        async with server as running:
            client = await RawClient.open(running.port)
            await client.handshake(running.port)
            for payload in payloads:
                await send_parts(client, frame(OP_BINARY, payload), [70_000])
                assert await read_data(client, 1) == [(OP_BINARY, payload)]
            await client.close()

    run(main)
    assert hashes == [hash(payload) for payload in payloads]
    assert kept == payloads[2::3]
