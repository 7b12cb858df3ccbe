"""broadcast(): one message to many real connections, framed once, slow clients contained.

Servers of both APIs on 127.0.0.1 with shakehands clients; slow clients are real ones that stop
reading (``max_queue=1`` pauses their socket reads, so the server's write buffer fills).
Every test runs with both loops of the direct writes (``fan_out``): C
(``shakehands._fastpath.fan_out``) and pure Python (``_fan_out_python``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import shakehands
from shakehands import (
    ConnectionClosedError,
    DeflateOptions,
    SlowClientPolicy,
    broadcast,
    broadcast_counters,
    set_slow_client_policy,
)
from shakehands.asyncio import broadcast as broadcast_module
from shakehands.protocol._accel import fastpath as compiled_fastpath

from .helpers import HOST


@pytest.fixture(autouse=True, params=["c-fan-out", "python-fan-out"])
def fan_out(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Which loop writes the shared frame to the connections that take it directly."""
    name = str(request.param)
    if name == "c-fan-out":
        if compiled_fastpath is None:
            pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")
        monkeypatch.setattr(broadcast_module, "_fan_out", compiled_fastpath.fan_out)
    else:
        monkeypatch.setattr(broadcast_module, "_fan_out", broadcast_module._fan_out_python)
    yield name


async def hold(ws: shakehands.ServerConnection) -> None:
    await ws.wait_closed()


class Quiet(shakehands.Listener):
    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        pass


@contextlib.asynccontextmanager
async def server_of(api: str, **options: Any) -> AsyncIterator[shakehands.Server[Any]]:
    context: Any = (
        shakehands.serve(hold, HOST, 0, **options)
        if api == "coroutine"
        else shakehands.serve_callbacks(Quiet(), HOST, 0, **options)
    )
    async with context as server:
        yield server


async def connected(server: shakehands.Server[Any], count: int) -> list[Any]:
    """Wait until the server has ``count`` open connections; return them."""
    async with asyncio.timeout(10):
        while True:
            conns = [c for c in server.connections if c.open]
            if len(conns) == count:
                return conns
            await asyncio.sleep(0.01)


async def test_every_client_gets_the_message_once_from_one_frame(api: str) -> None:
    async with server_of(api, compression=None) as server:
        uri = f"ws://{HOST}:{server.port}/"
        clients = [await shakehands.connect(uri) for _ in range(20)]
        conns = await connected(server, 20)
        text = broadcast(conns, "hello, everyone")
        binary = broadcast(conns, b"\x00\xffbytes")
        assert (text.sent, text.frames, text.dropped, text.closed) == (20, 1, 0, 0)
        assert (binary.sent, binary.frames) == (20, 1)
        for client in clients:
            assert await client.recv() == "hello, everyone"
            assert await client.recv() == b"\x00\xffbytes"
        for client in clients:
            await client.close()


async def test_closed_connections_are_skipped(api: str) -> None:
    async with server_of(api, compression=None) as server:
        uri = f"ws://{HOST}:{server.port}/"
        clients = [await shakehands.connect(uri) for _ in range(3)]
        conns = await connected(server, 3)
        await clients[0].close()
        async with asyncio.timeout(10):
            while sum(c.open for c in conns) != 2:
                await asyncio.sleep(0.01)
        result = broadcast(conns, "still here?")
        assert (result.sent, result.skipped) == (2, 1)
        for client in clients[1:]:
            assert await client.recv() == "still here?"
            await client.close()


async def test_compressed_frames_are_shared_without_context_takeover(api: str) -> None:
    options = DeflateOptions(server_no_context_takeover=True)
    async with server_of(api, compression=options) as server:
        uri = f"ws://{HOST}:{server.port}/"
        deflating = [await shakehands.connect(uri) for _ in range(5)]
        plain = [await shakehands.connect(uri, compression=None) for _ in range(3)]
        conns = await connected(server, 8)
        message = "compressible " * 200
        for _ in range(3):
            result = broadcast(conns, message)
            # One compressed frame for the five deflate clients, one plain for the others.
            assert (result.sent, result.frames) == (8, 2)
        for client in deflating + plain:
            for _ in range(3):
                assert await client.recv() == message
            await client.close()


async def test_context_takeover_compresses_per_connection(api: str) -> None:
    # The default DeflateOptions keep the compressor's context between messages: each
    # connection's compressed bytes differ, so nothing can be shared, and each stays valid.
    async with server_of(api) as server:
        uri = f"ws://{HOST}:{server.port}/"
        clients = [await shakehands.connect(uri) for _ in range(4)]
        conns = await connected(server, 4)
        assert all(c.protocol.deflate is not None for c in conns)
        messages = [f"message {i} " * 50 for i in range(5)]
        for message in messages:
            assert broadcast(conns, message).frames == 4
        uncompressed = broadcast(conns, "raw", compress=False)
        assert uncompressed.frames == 1
        for client in clients:
            assert [await client.recv() for _ in messages] == messages
            assert await client.recv() == "raw"
            await client.close()


async def test_broadcast_between_fragments_is_not_interleaved() -> None:
    # A connection in the middle of a fragmented message is skipped, never corrupted.
    started = asyncio.Event()
    release = asyncio.Event()

    async def fragments() -> AsyncIterator[str]:
        yield "part one, "
        yield "part two, "
        # The first fragment is out once the third is asked for.
        started.set()
        await release.wait()
        yield "end"

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.send(fragments())
        await ws.wait_closed()

    async with shakehands.serve(handler, HOST, 0, compression=None) as server:
        client = await shakehands.connect(f"ws://{HOST}:{server.port}/")
        try:
            await started.wait()
            (conn,) = await connected(server, 1)
            result = broadcast([conn], "interloper")
        finally:
            release.set()
        assert (result.sent, result.skipped) == (0, 1)
        assert await client.recv() == "part one, part two, end"
        assert broadcast([conn], "after").sent == 1
        assert await client.recv() == "after"
        await client.close()


async def fill_until_slow(
    fast: Any, conns: list[Any], slow_conn: Any, payload: bytes, limit: int = 5000
) -> list[tuple[int, Any]]:
    """Broadcast numbered messages, the fast client reading each, until the slow one is hit.

    Returns ``(number, result)`` for every message.
    """
    results = []
    for number in range(limit):
        message = number.to_bytes(4, "big") + payload
        result = broadcast(conns, message)
        results.append((number, result))
        assert await fast.recv() == message
        if slow_conn in result.slow:
            return results
    raise AssertionError("the slow client never filled its buffer")


async def test_slow_client_misses_messages_and_the_others_do_not(api: str) -> None:
    policy = SlowClientPolicy(max_buffer=256 * 1024, action="drop")
    async with server_of(api, compression=None) as server:
        uri = f"ws://{HOST}:{server.port}/"
        fast = await shakehands.connect(uri)
        # max_queue=1: the slow client stops reading its socket after one unread message.
        slow = await shakehands.connect(uri, max_queue=1)
        conns = await connected(server, 2)
        slow_conn = next(c for c in conns if c.remote_address[1] == slow.local_address[1])
        set_slow_client_policy(slow_conn, policy)
        payload = b"x" * 60_000
        results = await fill_until_slow(fast, conns, slow_conn, payload)
        # A few more: dropped for the slow one, delivered to the fast one.
        for number in range(len(results), len(results) + 5):
            message = number.to_bytes(4, "big") + payload
            result = broadcast(conns, message)
            results.append((number, result))
            assert slow_conn in result.slow
            assert await fast.recv() == message
        # Bounded: the server never buffered more than the limit plus one message for it.
        assert slow_conn.transport.get_write_buffer_size() <= policy.max_buffer + len(payload) + 4
        counters = broadcast_counters(slow_conn)
        dropped = [n for n, r in results if slow_conn in r.slow]
        assert counters.dropped_messages == len(dropped) >= 6
        assert counters.dropped_bytes == len(dropped) * (len(payload) + 4)
        assert not counters.closed_as_slow
        fast_conn = next(c for c in conns if c is not slow_conn)
        assert broadcast_counters(fast_conn).dropped_messages == 0
        # Once it reads, the slow client gets exactly what was not dropped, in order, and can
        # receive again.
        expected = [n for n, r in results if slow_conn not in r.slow]
        received: list[int] = []
        for _ in expected:
            data = await slow.recv()
            assert isinstance(data, bytes)
            received.append(int.from_bytes(data[:4], "big"))
        assert received == expected
        assert broadcast(conns, b"caught up").sent == 2
        assert await slow.recv() == b"caught up"
        await fast.close()
        await slow.close()


@pytest.mark.parametrize("code", [1013, 1008])
async def test_slow_client_is_closed_with_the_policy_code(api: str, code: int) -> None:
    policy = SlowClientPolicy(max_buffer=256 * 1024, action="close", close_code=code)
    async with server_of(api, compression=None) as server:
        uri = f"ws://{HOST}:{server.port}/"
        fast = await shakehands.connect(uri)
        slow = await shakehands.connect(uri, max_queue=1)
        conns = await connected(server, 2)
        slow_conn = next(c for c in conns if c.remote_address[1] == slow.local_address[1])
        # Here the policy comes with the call rather than from set_slow_client_policy.
        results = []
        for number in range(5000):
            message = number.to_bytes(4, "big") + b"y" * 60_000
            result = broadcast(conns, message, policy=policy)
            results.append(result)
            assert await fast.recv() == message
            if result.closed:
                break
        assert results[-1].closed == 1 and results[-1].slow == [slow_conn]
        assert broadcast_counters(slow_conn).closed_as_slow
        # Later broadcasts skip it; the fast client goes on.
        assert broadcast(conns, b"later", policy=policy).sent == 1
        assert await fast.recv() == b"later"
        # The slow client, reading at last, gets what was queued, then the close code.
        with pytest.raises(ConnectionClosedError) as info:
            while True:
                await slow.recv()
        assert info.value.code == code
        await fast.close()


async def test_invalid_policies_and_messages_are_refused() -> None:
    with pytest.raises(ValueError):
        SlowClientPolicy(action="wait")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SlowClientPolicy(close_code=1006)
    with pytest.raises(ValueError):
        SlowClientPolicy(max_buffer=-1)
    with pytest.raises(TypeError):
        broadcast([], 42)  # type: ignore[arg-type]


async def test_client_connections_mask_each_copy() -> None:
    # Clients mask every frame with a key of their own: nothing is shared, all is valid.
    async def echo(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with shakehands.serve(echo, HOST, 0) as server:
        clients = [await shakehands.connect(f"ws://{HOST}:{server.port}/") for _ in range(3)]
        result = broadcast(clients, "from every client")
        assert (result.sent, result.frames) == (3, 3)
        for client in clients:
            assert await client.recv() == "from every client"
            await client.close()


async def test_connections_may_be_any_iterable(api: str) -> None:
    async with server_of(api, compression=None) as server:
        clients = [await shakehands.connect(f"ws://{HOST}:{server.port}/") for _ in range(3)]
        conns = await connected(server, 3)
        result = broadcast((conn for conn in conns), "from a generator")
        assert (result.sent, result.frames) == (3, 1)
        assert broadcast(set(conns), b"from a set").sent == 3
        for client in clients:
            assert await client.recv() == "from a generator"
            assert await client.recv() == b"from a set"
            await client.close()


class EchoThenBroadcast(shakehands.Listener):
    """Answers each message, then broadcasts it to every connection (the sender included)."""

    def __init__(self) -> None:
        self.server: Any = None

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        ws.send(f"echo {message!s}")
        broadcast(self.server.connections, f"all {message!s}")


async def test_broadcast_from_a_batch_keeps_the_senders_order() -> None:
    # On the compiled callback path, the echo is queued in C until the end of the batch: the
    # broadcast must not overtake it on the sender's connection.
    listener = EchoThenBroadcast()
    async with shakehands.serve_callbacks(listener, HOST, 0, compression=None) as server:
        listener.server = server
        sender = await shakehands.connect(f"ws://{HOST}:{server.port}/")
        other = await shakehands.connect(f"ws://{HOST}:{server.port}/")
        await connected(server, 2)
        for number in range(3):
            await sender.send(str(number))
        assert [await sender.recv() for _ in range(6)] == [
            f"{kind} {number}" for number in range(3) for kind in ("echo", "all")
        ]
        assert [await other.recv() for _ in range(3)] == [f"all {n}" for n in range(3)]
        await sender.close()
        await other.close()


async def test_large_messages_are_written_whole(api: str) -> None:
    async with server_of(api, compression=None) as server:
        client = await shakehands.connect(f"ws://{HOST}:{server.port}/", max_message_size=None)
        (conn,) = await connected(server, 1)
        payload = bytes(range(256)) * 4096  # 1 MiB: written from a memoryview of the frame
        result = broadcast([conn], payload)
        assert (result.sent, result.frames) == (1, 1)
        assert await client.recv() == payload
        await client.close()


async def test_an_error_in_a_write_propagates(api: str) -> None:
    async with server_of(api, compression=None) as server:
        client = await shakehands.connect(f"ws://{HOST}:{server.port}/")
        (conn,) = await connected(server, 1)

        def refuse() -> bool:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError, match="no"):
            broadcast_module._fan_out(b"x", [conn], lambda connection: refuse())
        await client.close()
