"""The coroutine server's behaviour on both data paths: compiled (``shakehands._fastpath``'s
``CoroFastPath``) and pure Python, through the ``coro_impl`` fixture; real servers and raw
clients on 127.0.0.1.

As for the callback API (``test_callback_paths.py``), each test mixes what the compiled path
takes (whole simple frames) with what it must hand to the core (pings, fragments, limits,
invalid UTF-8, closing), and checks that both paths answer alike; and the coroutine API's own
rules: ``max_queue`` pauses reading, ``recv`` may be cancelled, ``send`` waits above the write
buffer's high-water mark.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import shakehands
from shakehands.asyncio import _fastcoro

from ..asyncio.asyncio_helpers import wait_for_condition
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
)
from .paths_helpers import Echo, check_fast, open_raw, read_data, without_pongs

pytestmark = pytest.mark.timeout(120)

Handler = Callable[[shakehands.ServerConnection], Awaitable[None]]


def check_impl(coro_impl: str, handler: Echo) -> None:
    """The connection is of the implementation under test, back on the fast path."""
    check_fast(handler.connections[-1], _fastcoro.FastServerConnection, coro_impl)


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


async def test_send_types_tasks_and_order(coro_impl: str) -> None:
    """bytearray and memoryview go as binary, ``compress=False`` is accepted; ``send`` is a
    coroutine that ``create_task`` and ``wait_for`` take; a broadcast between two sends keeps
    its place; a fragmented message is not interleaved with another one."""

    async def handler(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            if message == "types":
                await ws.send(bytearray(b"ba"))
                await ws.send(memoryview(b"xmvx")[1:3])
                await ws.send("text", compress=False)
            elif message == "tasks":
                await asyncio.create_task(ws.send("from a task"))  # type: ignore[arg-type]
                await asyncio.wait_for(ws.send(b"within a timeout"), 5)
                done = asyncio.ensure_future(ws.send("ensured"))
                await done
            elif message == "order":
                await ws.send("1")
                shakehands.broadcast([ws], "2")
                await ws.send(b"3")
            elif message == "fragments":
                first = asyncio.create_task(ws.send(["a", "b", "c"]))  # type: ignore[arg-type]
                await ws.send("after")
                await first
                await ws.send("last")

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        shakehands.connect(f"ws://{HOST}:{server.port}/", compression=None) as ws,
    ):
        await ws.send("types")
        assert [await ws.recv() for _ in range(3)] == [b"ba", b"mv", "text"]
        await ws.send("tasks")
        assert [await ws.recv() for _ in range(3)] == [
            "from a task",
            b"within a timeout",
            "ensured",
        ]
        await ws.send("order")
        assert [await ws.recv() for _ in range(3)] == ["1", "2", b"3"]
        await ws.send("fragments")
        assert [await ws.recv() for _ in range(3)] == ["after", "abc", "last"]
        await ws.send("types")  # the compiled path is back after the fragments
        assert [await ws.recv() for _ in range(3)] == [b"ba", b"mv", "text"]


async def test_server_ping_between_messages(coro_impl: str) -> None:
    """``await ws.ping()`` from the handler: the pong comes back through the core, and the
    compiled path carries on after it."""

    async def handler(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)
            if message == "ping me":
                waiter = asyncio.ensure_future(ws.ping(b"srv"))
                await ws.send("pinged")
                await waiter
                await ws.send("ponged")

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"ping me"))
        # The ping's task runs once the handler waits: after "pinged" was sent.
        assert await read_data(client, 3) == [
            (OP_TEXT, b"ping me"),
            (OP_TEXT, b"pinged"),
            (OP_PING, b"srv"),
        ]
        client.send(frame(OP_PONG, b"srv") + frame(OP_TEXT, b"more"))
        assert await read_data(client, 2) == [(OP_TEXT, b"ponged"), (OP_TEXT, b"more")]
        await client.close()


# ---------------------------------------------------------------------------------------------
# Limits and errors
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Closing
# ---------------------------------------------------------------------------------------------


async def test_client_close_after_one_message(coro_impl: str) -> None:
    """One message and the close frame in one read: the handler waiting in recv gets the
    message, and its answer still leaves before the close frame."""
    handler = Echo()
    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"warm-up"))
        assert await read_data(client, 1) == [(OP_TEXT, b"warm-up")]
        client.send(frame(OP_TEXT, b"last") + frame(OP_CLOSE, close_payload(1000)))
        assert await read_data(client, 1) == [(OP_TEXT, b"last")]
        assert await client.read_close() == (1000, "")
        await client.read_eof()
        await client.close()


async def test_server_close_during_a_run(coro_impl: str) -> None:
    """The handler closes after some messages of a burst: the answers before leave first,
    then the close frame; sending after it raises; the client's answer ends the connection."""
    errors: list[BaseException] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)
            if message == "bye":
                await ws.close(1000, "done")
                try:
                    await ws.send("too late")
                except shakehands.ConnectionClosed as exc:
                    errors.append(exc)
                return

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"a") + frame(OP_TEXT, b"bye") + frame(OP_TEXT, b"c"))
        assert await read_data(client, 2) == [(OP_TEXT, b"a"), (OP_TEXT, b"bye")]
        assert await client.read_close() == (1000, "done")
        client.send(frame(OP_CLOSE, close_payload(1000)))
        await client.read_eof()
        await client.close()
        await wait_for_condition(lambda: bool(errors))
    assert isinstance(errors[0], shakehands.ConnectionClosedOK)


async def test_close_while_a_large_frame_arrives(coro_impl: str) -> None:
    received: list[str | bytes] = []
    started = asyncio.Event()
    connections: list[shakehands.ServerConnection] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        connections.append(ws)
        started.set()
        async for message in ws:
            received.append(message)

    payload = os.urandom(300_000)
    data = frame(OP_BINARY, payload)
    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        await started.wait()
        client.send(frame(OP_TEXT, b"hi") + data[:150_000])
        await client.writer.drain()
        await wait_for_condition(lambda: received == ["hi"])
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(connections[0].close(1001, "going away"))
        assert await client.read_close() == (1001, "going away")
        client.send(data[150_000:] + frame(OP_CLOSE, close_payload(1000)))
        await client.read_eof()
        await client.close()
        await closing
    assert received == ["hi", payload]


# ---------------------------------------------------------------------------------------------
# Back-pressure and cancellation
# ---------------------------------------------------------------------------------------------


async def test_slow_consumer_pauses_reading(coro_impl: str) -> None:
    """A handler that reads slowly: the inbox fills to max_queue, reading pauses, and every
    message still arrives, in order, once the handler catches up."""
    count = 2000
    go = asyncio.Event()
    connections: list[shakehands.ServerConnection] = []
    received: list[str | bytes] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        connections.append(ws)
        await go.wait()
        async for message in ws:
            received.append(message)
            if len(received) == count:
                await ws.send("all")

    async with shakehands.serve(handler, HOST, 0, max_queue=8) as server:
        client = await open_raw(server.port)
        payload = b"p" * 1000
        for i in range(count):
            client.send(frame(OP_BINARY, payload + b"%d" % i))
        await wait_for_condition(lambda: bool(connections) and connections[0]._inbox.paused)
        ws = connections[0]
        assert not ws.transport.is_reading()
        # Paused: the socket is not read, so most of the flood waits in the kernel.
        await asyncio.sleep(0.05)
        assert len(ws._inbox) < count
        go.set()
        assert await read_data(client, 1) == [(OP_TEXT, b"all")]
        assert received == [payload + b"%d" % i for i in range(count)]
        assert not ws._inbox.paused and ws.transport.is_reading()
        await client.close()


async def cancelled_once_handed(ws: shakehands.ServerConnection, waiting: Awaitable[Any]) -> None:
    """Run ``waiting`` (a recv or a step of async for) until it waits, say "ready" (the client
    answers with a message, which the inbox hands to it), then cancel it before it runs."""
    task = asyncio.ensure_future(waiting)
    await asyncio.sleep(0)  # the task now waits in recv
    waiter = ws._inbox._waiter
    assert waiter is not None
    await ws.send("ready")
    while not waiter.done():
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_recv_cancellation(coro_impl: str) -> None:
    """recv() timing out loses nothing: the messages that come after are read in order; a
    recv cancelled after it was handed its message gives it back."""
    results: list[object] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.05)
        results.append(await ws.recv())
        # Handed a message, then cancelled before it ran: the message is kept. (The message
        # is fragmented: the core delivers it, and the task's wake-up is scheduled. A message
        # the C parser hands to a recv waiting on the compiled path wakes its task there and
        # then: no cancellation can come in between.)
        await cancelled_once_handed(ws, ws.recv())
        results.append(await ws.recv())
        results.append(await ws.recv())

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        await asyncio.sleep(0.1)
        client.send(frame(OP_TEXT, b"first"))
        assert await read_data(client, 1) == [(OP_TEXT, b"ready")]
        client.send(
            frame(OP_TEXT, b"sec", fin=False) + frame(OP_CONT, b"ond") + frame(OP_BINARY, b"third")
        )
        await client.read_close()
        await client.close()
    assert results == ["first", "second", b"third"]


async def test_send_waits_above_the_high_water_mark(coro_impl: str) -> None:
    """A client that does not read: send() returns an awaitable that waits until the write
    buffer drains, and every message arrives whole and in order."""
    sent: list[int] = []
    payload = b"q" * 100_000

    async def handler(ws: shakehands.ServerConnection) -> None:
        await ws.recv()
        for i in range(40):
            await ws.send(payload + b"%d" % i)
            sent.append(i)

    async with shakehands.serve(handler, HOST, 0, write_limit=2**16) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"go"))
        await wait_for_condition(lambda: bool(sent))
        await asyncio.sleep(0.1)
        assert len(sent) < 40  # waiting: the client reads nothing
        frames = await read_data(client, 40)
        assert frames == [(OP_BINARY, payload + b"%d" % i) for i in range(40)]
        await client.close()


# ---------------------------------------------------------------------------------------------
# recv() and async for (C on the compiled path: CoroutineFastPathMixin.recv and __aiter__)
# ---------------------------------------------------------------------------------------------


async def test_concurrent_recv_raises(coro_impl: str) -> None:
    """A second recv() while one waits raises RuntimeError when awaited (not when called), and
    the first still gets the message; so does an async for started meanwhile."""
    results: list[object] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)  # first waits now
        second = ws.recv()  # made, not awaited: nothing happens yet
        with pytest.raises(RuntimeError, match="already waiting"):
            await second
        with pytest.raises(RuntimeError, match="already waiting"):
            async for _ in ws:
                pass
        await ws.send("ready")
        results.append(await first)
        results.append(await ws.recv())  # the waiter was released: no error

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        assert await read_data(client, 1) == [(OP_TEXT, b"ready")]
        client.send(frame(OP_TEXT, b"one"))
        await asyncio.sleep(0.01)
        client.send(frame(OP_BINARY, b"two"))
        await client.read_close()
        await client.close()
    assert results == ["one", b"two"]


async def test_recv_of_a_queued_message_does_not_suspend(coro_impl: str) -> None:
    """Messages already queued are returned by recv() without suspending (its first step
    returns), in order; a recv() made and closed without being awaited takes none."""
    results: list[object] = []
    connections: list[shakehands.ServerConnection] = []
    go = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        connections.append(ws)
        await go.wait()
        unused = ws.recv()
        unused.close()  # never started: nothing taken
        for _ in range(3):
            step = ws.recv()
            with pytest.raises(StopIteration) as returned:
                step.send(None)
            results.append(returned.value.value)
            with pytest.raises(RuntimeError, match="cannot reuse"):
                step.send(None)
        results.append(await ws.recv())

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"a") + frame(OP_BINARY, b"b") + frame(OP_TEXT, b"c"))
        await wait_for_condition(lambda: bool(connections) and len(connections[0]._inbox) == 3)
        go.set()
        await asyncio.sleep(0.01)
        client.send(frame(OP_TEXT, b"d"))
        await client.read_close()
        await client.close()
    assert results == ["a", b"b", "c", "d"]


async def test_cancelled_iteration_loses_nothing(coro_impl: str) -> None:
    """An async for whose __anext__ times out is over (as an async generator is), nothing is
    lost: a new async for gets every later message, in order; a recv() handed its message
    and dropped before it ran (its task cancelled) puts it back."""
    results: list[object] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        iterator = aiter(ws)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(iterator), 0.05)
        with pytest.raises(StopAsyncIteration):
            await anext(iterator)
        await ws.send("ready")
        async for message in ws:
            results.append(message)
            if message == "stop":
                break
        # Handed a message (fragmented: see test_recv_cancellation), then cancelled: the next
        # async for gets it first.
        await cancelled_once_handed(ws, anext(aiter(ws)))
        assert ws._inbox._waiter is None
        async for message in ws:
            results.append(message)

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        assert await read_data(client, 1) == [(OP_TEXT, b"ready")]
        client.send(frame(OP_TEXT, b"x") + frame(OP_BINARY, b"y") + frame(OP_TEXT, b"stop"))
        assert await read_data(client, 1) == [(OP_TEXT, b"ready")]
        client.send(frame(OP_TEXT, b"ke", fin=False) + frame(OP_CONT, b"pt"))
        await asyncio.sleep(0.05)
        client.send(frame(OP_TEXT, b"last") + frame(OP_CLOSE, close_payload(1000)))
        assert await client.read_close() == (1000, "")
        await client.close()
    assert results == ["x", b"y", "stop", "kept", "last"]


async def test_order_across_the_hand_over_to_the_core(coro_impl: str) -> None:
    """Messages the C parser delivers and messages the core delivers (fragmented ones, after
    pings) reach a waiting recv() and the queue in the order they were sent."""
    results: list[object] = []
    connections: list[shakehands.ServerConnection] = []
    go = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        connections.append(ws)
        results.append(await ws.recv())  # waiting: a fragmented message (the core's)
        results.append(await ws.recv())  # waiting again: a whole one (C's, when compiled)
        await go.wait()
        async for message in ws:  # queued meanwhile, from both
            results.append(message)

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        await wait_for_condition(lambda: bool(connections) and connections[0]._inbox._waiter)
        client.send(frame(OP_TEXT, b"fr", fin=False) + frame(OP_CONT, b"ag"))
        await wait_for_condition(lambda: results == ["frag"] and connections[0]._inbox._waiter)
        client.send(frame(OP_BINARY, b"whole"))
        await wait_for_condition(lambda: len(results) == 2)
        client.send(
            frame(OP_TEXT, b"1")
            + frame(OP_PING, b"p")
            + frame(OP_TEXT, b"2")
            + frame(OP_BINARY, b"3", fin=False)
            + frame(OP_CONT, b"4")
            + frame(OP_TEXT, b"5")
        )
        assert await read_data(client, 1) == [(OP_PONG, b"p")]
        await wait_for_condition(lambda: len(connections[0]._inbox) == 4)
        client.send(frame(OP_TEXT, b"6"))
        await asyncio.sleep(0.01)
        go.set()
        client.send(frame(OP_CLOSE, close_payload(1000)))
        assert await client.read_close() == (1000, "")
        await client.close()
    assert results == ["frag", b"whole", "1", "2", b"34", "5", "6"]


@pytest.mark.parametrize("how", ["client close", "server close", "abort"])
async def test_close_while_waiting_in_recv(coro_impl: str, how: str) -> None:
    """A recv() waiting when the connection closes raises ConnectionClosed with the codes of
    the close (OK for a clean one, Error for an abort); an async for ends quietly on a clean
    close; recv() afterwards raises the same."""
    errors: list[shakehands.ConnectionClosed] = []
    iterated: list[str] = []
    connections: list[shakehands.ServerConnection] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        connections.append(ws)
        if how == "server close":
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: asyncio.ensure_future(ws.close(1001, "bye")))
        try:
            await ws.recv()
        except shakehands.ConnectionClosed as exc:
            errors.append(exc)
        try:
            async for _ in ws:
                pass
            iterated.append("ended")
        except shakehands.ConnectionClosed as exc:
            iterated.append(type(exc).__name__)
        try:
            await ws.recv()
        except shakehands.ConnectionClosed as exc:
            errors.append(exc)

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        await wait_for_condition(lambda: bool(connections) and connections[0]._inbox._waiter)
        if how == "client close":
            client.send(frame(OP_CLOSE, close_payload(1000, "done")))
            assert (await client.read_close())[0] == 1000
        elif how == "server close":
            assert await client.read_close() == (1001, "bye")
            client.send(frame(OP_CLOSE, close_payload(1001, "bye")))
        else:
            client.abort()
        await wait_for_condition(lambda: len(errors) == 2)
        await client.close()
    first, last = errors
    assert type(first) is type(last)
    assert (first.code, first.reason) == (last.code, last.reason)
    if how == "abort":
        assert isinstance(first, shakehands.ConnectionClosedError)
        assert iterated == ["ConnectionClosedError"]
    else:
        assert isinstance(first, shakehands.ConnectionClosedOK)
        expected = (1000, "done") if how == "client close" else (1001, "bye")
        assert (first.code, first.reason) == expected
        assert iterated == ["ended"]


async def test_max_queue_with_recv_and_iteration(coro_impl: str) -> None:
    """max_queue pauses reading while the handler is away, whether the messages come from the
    C parser or the core, and reading resumes once the queue is down to a quarter; every
    message arrives once, in order."""
    count = 300
    connections: list[shakehands.ServerConnection] = []
    received: list[str | bytes] = []
    go = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        connections.append(ws)
        await go.wait()
        while len(received) < count:
            received.append(await ws.recv())
            if len(received) % 3 == 0 and len(received) < count:
                async for message in ws:
                    received.append(message)
                    break
        await ws.send("all")

    def message(i: int) -> bytes:
        if i % 10 == 5:  # fragmented: the core's (and the rest of that read)
            return frame(OP_BINARY, b"f%d" % i, fin=False) + frame(OP_CONT, b"!")
        return frame(OP_BINARY, b"m%d" % i)

    async with shakehands.serve(handler, HOST, 0, max_queue=16) as server:
        client = await open_raw(server.port)
        for start in range(0, count, 20):  # several reads: each starts on the C parser
            client.send(b"".join(message(i) for i in range(start, start + 20)))
            await client.writer.drain()
            await asyncio.sleep(0.002)
        await wait_for_condition(lambda: bool(connections) and connections[0]._inbox.paused)
        ws = connections[0]
        assert not ws.transport.is_reading()
        go.set()
        assert await read_data(client, 1) == [(OP_TEXT, b"all")]
        assert received == [(b"f%d!" if i % 10 == 5 else b"m%d") % i for i in range(count)]
        assert not ws._inbox.paused and ws.transport.is_reading()
        await client.close()


async def test_recv_awaitable_protocol(coro_impl: str) -> None:
    """What recv() returns is a coroutine as asyncio sees it (a task, wait_for, throw and close
    work on it); a throw before it started raises without taking a message."""
    results: list[object] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        pending = ws.recv()
        assert asyncio.iscoroutine(pending)
        with pytest.raises(ValueError, match="boom"):
            pending.throw(ValueError("boom"))
        results.append(await asyncio.wait_for(ws.recv(), 5))
        results.append(await asyncio.create_task(ws.recv()))

    async with shakehands.serve(handler, HOST, 0) as server:
        client = await open_raw(server.port)
        client.send(frame(OP_TEXT, b"one"))
        await asyncio.sleep(0.02)
        client.send(frame(OP_TEXT, b"two"))
        await client.read_close()
        await client.close()
    assert results == ["one", "two"]


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


def test_no_speedups_selects_pure_python() -> None:
    code = "from shakehands.asyncio import _fastcoro; print(_fastcoro.AVAILABLE, _fastcoro.enabled)"
    env = {**os.environ, "SHAKEHANDS_NO_SPEEDUPS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_on_uvloop() -> None:
    """uvloop calls data_received (C as well): the same exchanges on its loop."""
    uvloop = pytest.importorskip("uvloop")
    if not _fastcoro.AVAILABLE:
        pytest.skip("shakehands._fastpath is not built (or SHAKEHANDS_NO_SPEEDUPS is set)")

    async def main() -> None:
        handler = Echo()
        async with shakehands.serve(handler, HOST, 0) as server:
            client = await open_raw(server.port)
            stream = frame(OP_TEXT, b"abc") + frame(OP_PING, b"p") + frame(OP_BINARY, b"d" * 300)
            for cut in range(1, len(stream), 7):
                client.send(stream[:cut])
                await client.writer.drain()
                await asyncio.sleep(0.002)
                client.send(stream[cut:])
                frames = await read_data(client, 3)
                assert without_pongs(frames) == [(OP_TEXT, b"abc"), (OP_BINARY, b"d" * 300)]
            client.send(b"".join(frame(OP_BINARY, b"%d" % i) for i in range(3000)))
            assert await read_data(client, 3000) == [(OP_BINARY, b"%d" % i) for i in range(3000)]
            big = os.urandom(2**20)
            client.send(frame(OP_BINARY, big))
            assert await read_data(client, 1) == [(OP_BINARY, big)]
            check_impl("compiled", handler)
            await client.close()

    uvloop.run(main())
