"""Graceful shutdown with 1 000 connections: ``server.close()`` and SIGTERM send 1001 to every
client, after every message that ``send()`` accepted before the shutdown; peers that never answer
the close are aborted after ``close_timeout``."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

import shakehands
from shakehands import ConnectionClosed

from ..asyncio.asyncio_helpers import RawClient, uri
from ..helpers import HOST
from .hardening_helpers import EchoProcess, gather_limited

pytestmark = pytest.mark.timeout(180)

CONNECTIONS = 1000
SILENT = 100  # of which raw peers that never read and never answer the close
BURST = 20  # messages sent to each client right before the shutdown
PAD = "x" * 4000  # 20 x 4 KB per connection: above write_limit, so data is in flight
CLOSE_TIMEOUT = 3.0


def message(cid: int, i: int) -> str:
    return f"{cid}:{i}:{PAD}"


async def test_server_close_with_1000_connections(api: str) -> None:
    accepted: dict[int, int] = {}
    go = asyncio.Event()
    handlers_done: list[int] = []

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        cid = int(ws.request.query)
        await go.wait()
        try:
            for i in range(BURST):
                await ws.send(message(cid, i))
                accepted[cid] = i + 1  # send() returned: the message was accepted
            await ws.wait_closed()
        finally:
            handlers_done.append(cid)

    opened: dict[int, shakehands.CallbackConnection] = {}
    closed: dict[int, int] = {}

    class Burst(shakehands.Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            assert ws.request is not None
            opened[int(ws.request.query)] = ws

        def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
            assert ws.request is not None
            closed[int(ws.request.query)] = code

    context = (
        shakehands.serve(handler, HOST, 0, close_timeout=CLOSE_TIMEOUT, backlog=1024)
        if api == "coroutine"
        else shakehands.serve_callbacks(Burst(), HOST, 0, close_timeout=CLOSE_TIMEOUT, backlog=1024)
    )
    server = await context
    port = server.port
    async with asyncio.timeout(150):
        clients = await gather_limited(
            [
                lambda cid=cid: shakehands.connect(uri(server, f"/?{cid}"), max_queue=BURST + 1)
                for cid in range(CONNECTIONS - SILENT)
            ]
        )
        silent = []
        for cid in range(CONNECTIONS - SILENT, CONNECTIONS):
            raw = await RawClient.open(server.port)
            await raw.handshake(server.port, f"/?{cid}")
            silent.append(raw)
        while len(server.connections) < CONNECTIONS or (
            api == "callback" and len(opened) < CONNECTIONS
        ):
            await asyncio.sleep(0.05)

        async def collect(ws: shakehands.ClientConnection) -> list[str]:
            received = []
            async for item in ws:  # ends quietly on a clean close (1000/1001)
                assert isinstance(item, str)
                received.append(item)
            return received

        readers = [asyncio.ensure_future(collect(ws)) for ws in clients]
        if api == "callback":
            # Every send() of a listener is accepted at once; then, in the same loop iteration,
            # the shutdown: all these messages must arrive before the 1001.
            for cid, ws in opened.items():
                for i in range(BURST):
                    ws.send(message(cid, i))
                accepted[cid] = BURST
        else:
            go.set()
            await asyncio.sleep(0)  # the handlers start their bursts; some send()s wait
        server.close()
        await server.wait_closed()
        results = await asyncio.gather(*readers)

        for cid, (ws, received) in enumerate(zip(clients, results, strict=True)):
            assert ws.close_code == 1001, (cid, ws.close_code)
            assert ws.close_reason == "server shutting down"
            # In order, nothing lost, nothing after the close frame.
            assert received == [message(cid, i) for i in range(len(received))]
            assert len(received) >= accepted.get(cid, 0)
        if api == "callback":
            assert sum(len(r) for r in results) == (CONNECTIONS - SILENT) * BURST
        # The silent peers were aborted after close_timeout: wait_closed() has returned.
        for raw in silent:
            await raw.read_eof()
            await raw.close()
    assert server.connections == set()
    if api == "coroutine":
        assert len(handlers_done) == CONNECTIONS
    else:
        assert len(closed) == CONNECTIONS
        assert {code for cid, code in closed.items() if cid < CONNECTIONS - SILENT} == {1001}
        assert {code for cid, code in closed.items() if cid >= CONNECTIONS - SILENT} == {1006}
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, port)


async def test_sigterm_with_1000_connections(api: str) -> None:
    with EchoProcess("--api", api) as echo:
        target = f"ws://127.0.0.1:{echo.port}/"
        async with asyncio.timeout(150):

            async def client(cid: int) -> shakehands.ClientConnection:
                ws = await shakehands.connect(target)
                await ws.send(f"{cid}-a")
                assert await ws.recv() == f"{cid}-a"
                return ws

            clients = await gather_limited(
                [lambda cid=cid: client(cid) for cid in range(CONNECTIONS)]
            )
            # Messages in flight when the signal comes: their echoes, where the server read them
            # before the shutdown, must come back in order and before the close frame.
            for cid, ws in enumerate(clients):
                for i in range(3):
                    await ws.send(f"{cid}-b{i}")
            assert echo.process is not None
            echo.process.send_signal(signal.SIGTERM)

            async def drain(ws: shakehands.ClientConnection) -> list[Any]:
                return [item async for item in ws]

            results = await asyncio.gather(*(drain(ws) for ws in clients))
            for cid, (ws, echoed) in enumerate(zip(clients, results, strict=True)):
                assert ws.close_code == 1001, (cid, ws.close_code)
                assert echoed == [f"{cid}-b{i}" for i in range(len(echoed))]
            returncode = await asyncio.get_running_loop().run_in_executor(
                None, echo.process.wait, 60
            )
        assert returncode == 0
        _, stderr = echo.process.communicate(timeout=10)
        assert "Traceback" not in stderr
        echoed_total = sum(len(r) for r in results)
        print(f"\n[SIGTERM {api}] {echoed_total} of {3 * CONNECTIONS} in-flight messages echoed")


async def test_send_after_shutdown_started_raises() -> None:
    # The other half of the guarantee: a message not accepted raises rather than vanishing.
    results: list[str] = []
    started = asyncio.Event()

    async def handler(ws: shakehands.ServerConnection) -> None:
        started.set()
        await ws.wait_closed()
        try:
            await ws.send("too late")
            results.append("sent")
        except ConnectionClosed:
            results.append("raised")

    async with shakehands.serve(handler, HOST, 0) as server:
        async with asyncio.timeout(10):
            ws = await shakehands.connect(uri(server))
            await started.wait()
            server.close()
            assert [m async for m in ws] == []
            assert ws.close_code == 1001
            await server.wait_closed()
    assert results == ["raised"]
