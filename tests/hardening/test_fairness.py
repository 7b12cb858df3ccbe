"""One flooding peer cannot hold the event loop: the messages of one large read are handled a
bounded number per loop iteration (``CallbackConnection.batch_limit`` listener calls, with the
peer's reading paused meanwhile; ``WebSocketConnection.recv_burst`` messages between two yields
of a coroutine handler), so another client's handshake goes through in the middle of a flood.

These check the behaviour, not timings: loop iterations are counted by a callback that
reschedules itself (it runs once per iteration), and each delivered message records the
iteration it was delivered in. Timings are measured by ``python -m bench.flood_fairness``
(docs/security.md).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest

import shakehands
from shakehands.asyncio.callback import CallbackConnection
from shakehands.asyncio.connection import WebSocketConnection

from ..asyncio.asyncio_helpers import RawClient, wait_for_condition
from ..helpers import HOST

pytestmark = pytest.mark.timeout(60)

# (getattr: so that these fail on their assertions, not at import, on a tree without them)
BATCH_LIMIT = getattr(CallbackConnection, "batch_limit", 1024)
RECV_BURST = getattr(WebSocketConnection, "recv_burst", 256)
FRAMES = 50_000  # 300 kB of empty masked binary frames: a 256 KiB read holds 43 000 of them
EMPTY = b"\x82\x80\x00\x00\x00\x00"


class Ticker:
    """Counts loop iterations: ``now`` is the number of the current one."""

    def __init__(self) -> None:
        self.now = 0
        self.loop = asyncio.get_running_loop()
        self.handle = self.loop.call_soon(self.tick)

    def tick(self) -> None:
        self.now += 1
        self.handle = self.loop.call_soon(self.tick)

    def stop(self) -> None:
        self.handle.cancel()


async def flood_while_connecting(
    port: int, delivered: list[int], ticker: Ticker, after: Callable[[], bool] | None = None
) -> int:
    """Flood one connection with FRAMES empty messages (reading the echoes), then open a good
    client at once; once the flood is all delivered, wait for ``after()``. Return the
    iteration in which the good client's handshake completed."""
    flooder = await RawClient.open(port)
    await flooder.handshake(port, "/flood")
    drain = asyncio.ensure_future(flooder.read_eof())
    flooder.send(EMPTY * FRAMES)
    async with asyncio.timeout(10):
        async with shakehands.connect(f"ws://{HOST}:{port}/good") as ws:
            opened = ticker.now
            await ws.send("hello")
            assert await ws.recv() == "hello"
        await wait_for_condition(lambda: len(delivered) == FRAMES)
        if after is not None:
            await wait_for_condition(after)
    await flooder.close()
    drain.cancel()
    return opened


def check(delivered: list[int], opened: int, limit: int) -> None:
    per_iteration = collections.Counter(delivered)
    assert sum(per_iteration.values()) == FRAMES
    assert max(per_iteration.values()) <= limit
    # The good client got its handshake in the middle of the flood, not after it.
    assert delivered[0] < opened < delivered[-1]


async def test_callback_flood_is_delivered_in_batches_with_reading_paused() -> None:
    ticker = Ticker()
    delivered: list[int] = []
    reading_during_backlog: list[bool] = []

    class Listener(shakehands.Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            if ws.request is not None and ws.request.path == "/flood":
                delivered.append(ticker.now)
                if getattr(ws, "_backlog", None) is not None:
                    reading_during_backlog.append(ws.transport.is_reading())
                flooded.append(ws)
            ws.send(message)

    flooded: list[shakehands.CallbackConnection] = []
    async with shakehands.serve_callbacks(Listener(), HOST, 0) as server:
        opened = await flood_while_connecting(
            server.port,
            delivered,
            ticker,
            # Once the backlog is delivered, reading resumes.
            after=lambda: (
                getattr(flooded[-1], "_backlog", None) is None
                and flooded[-1].transport.is_reading()
            ),
        )
    ticker.stop()
    check(delivered, opened, BATCH_LIMIT)
    # The backlog of a large read was delivered with reading paused.
    assert reading_during_backlog and not any(reading_during_backlog)


async def test_coroutine_handler_yields_while_working_through_a_flood() -> None:
    ticker = Ticker()
    delivered: list[int] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        flood = ws.request is not None and ws.request.path == "/flood"
        async for message in ws:
            if flood:
                delivered.append(ticker.now)
            await ws.send(message)

    async with shakehands.serve(handler, HOST, 0) as server:
        opened = await flood_while_connecting(server.port, delivered, ticker)
    ticker.stop()
    check(delivered, opened, RECV_BURST)
