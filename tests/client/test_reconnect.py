"""Reconnection (issue 15, item 1): ``async for ws in connect(uri)`` and ``sync.reconnect(uri)``
against real shakehands servers, one of them stopped and started again on the same port while
the client is connected. Backoff delays are kept tiny (the policy itself is checked in
test_policy.py); every loop is bounded by the test's timeout and by counters."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from typing import Any

import pytest

import shakehands
from shakehands import (
    ConnectionClosed,
    InvalidStatus,
    Request,
    Response,
    TLSVerificationError,
    sync,
)

from ..helpers import HOST, free_port
from .client_helpers import sync_server

pytestmark = pytest.mark.timeout(90)

FAST: dict[str, Any] = {"backoff_initial_delay": 0.05, "backoff_max_delay": 0.2}


def attempts_logged(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if what in r.getMessage()]


# ---------------------------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------------------------


async def test_asyncio_reconnects_across_a_server_restart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shakehands.client")
    port = free_port()
    generation = 1

    async def hello(ws: shakehands.ServerConnection) -> None:
        await ws.send(f"generation {generation}")
        async for _ in ws:
            pass

    first_seen = asyncio.Event()
    received: list[str | bytes] = []

    async def run_client() -> None:
        async for ws in shakehands.connect(f"ws://{HOST}:{port}/", **FAST):
            try:
                async for message in ws:
                    received.append(message)
                    if message == "generation 1":
                        first_seen.set()
                    if message == "generation 2":
                        return
            except ConnectionClosed:
                continue

    async with asyncio.timeout(60):
        server = await shakehands.serve(hello, HOST, port).__aenter__()
        client = asyncio.create_task(run_client())
        await first_seen.wait()
        server.close()  # 1001 going away: the client connects again...
        await server.wait_closed()
        # ... and is refused while nothing listens.
        while len(attempts_logged(caplog, "refused the connection")) < 2:
            await asyncio.sleep(0.05)
        generation = 2
        async with shakehands.serve(hello, HOST, port):
            await client
    assert received == ["generation 1", "generation 2"]
    assert attempts_logged(caplog, "closed the connection with 1001; reconnecting in")
    failures = attempts_logged(caplog, "refused the connection")
    assert all("; retrying in" in message for message in failures)
    attempts = attempts_logged(caplog, f"connecting to ws://{HOST}:{port}/ (attempt")
    assert len(attempts) >= 4  # first, >= 2 refused, the one after the restart


@pytest.mark.parametrize(
    ("code", "reconnects"),
    [
        (1001, True),
        (1006, True),
        (1011, True),
        (1012, True),
        (1013, True),
        (1000, False),
        (1008, False),
        (4000, False),
    ],
)
async def test_asyncio_close_codes(code: int, reconnects: bool) -> None:
    connections = 0

    async def handler(ws: shakehands.ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if connections > 1:
            await ws.send("again")
            return  # closes with 1000: the iteration ends
        if code == 1006:
            ws.transport.abort()  # no close frame at all
        else:
            await ws.close(code)

    received: list[str | bytes] = []
    async with shakehands.serve(handler, HOST, 0) as server, asyncio.timeout(30):
        iterations = 0
        async for ws in shakehands.connect(f"ws://{HOST}:{server.port}/", **FAST):
            iterations += 1
            try:
                async for message in ws:
                    received.append(message)
            except ConnectionClosed:
                continue
            finally:
                assert iterations <= 2
    assert connections == (2 if reconnects else 1)
    assert received == (["again"] if reconnects else [])


async def test_asyncio_retries_5xx_then_connects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shakehands.client")
    requests = 0

    def overloaded_twice(request: Request) -> Response | None:
        nonlocal requests
        requests += 1
        return Response(503, body="busy") if requests <= 2 else None

    async def hello(ws: shakehands.ServerConnection) -> None:
        await ws.send("in")

    async with (
        shakehands.serve(hello, HOST, 0, process_request=overloaded_twice) as server,
        asyncio.timeout(30),
    ):
        async for ws in shakehands.connect(f"ws://{HOST}:{server.port}/", **FAST):
            assert await ws.recv() == "in"
            break
    assert requests == 3
    assert len(attempts_logged(caplog, "HTTP 503 Service Unavailable")) == 2


async def test_asyncio_gives_up_at_once_on_4xx(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shakehands.client")
    requests = 0

    def forbid(request: Request) -> Response:
        nonlocal requests
        requests += 1
        return Response(403)

    async def never(ws: shakehands.ServerConnection) -> None:
        raise AssertionError("not reached")

    async with shakehands.serve(never, HOST, 0, process_request=forbid) as server:
        with pytest.raises(InvalidStatus) as caught:
            async for _ in shakehands.connect(f"ws://{HOST}:{server.port}/", **FAST):
                raise AssertionError("not reached")
    assert caught.value.response.status == 403
    assert requests == 1
    assert attempts_logged(caplog, "failed, giving up: server refused the upgrade: HTTP 403")


async def test_asyncio_gives_up_at_once_on_tls_verification(
    server_context: ssl.SSLContext,
) -> None:
    async def never(ws: shakehands.ServerConnection) -> None:
        raise AssertionError("not reached")

    async with shakehands.serve(never, HOST, 0, ssl=server_context) as server:
        with pytest.raises(TLSVerificationError):
            async for _ in shakehands.connect(f"wss://{HOST}:{server.port}/", **FAST):
                raise AssertionError("not reached")


async def test_asyncio_invalid_uri_raises_at_once() -> None:
    with pytest.raises(shakehands.InvalidURI):
        async for _ in shakehands.connect("http://example.com/"):
            raise AssertionError("not reached")


async def test_asyncio_next_iteration_on_an_open_connection_reconnects() -> None:
    connections = 0

    async def hello(ws: shakehands.ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(str(connections))
        async for _ in ws:
            pass

    seen: list[str | bytes] = []
    async with shakehands.serve(hello, HOST, 0) as server, asyncio.timeout(30):
        async for ws in shakehands.connect(f"ws://{HOST}:{server.port}/", **FAST):
            seen.append(await ws.recv())
            if len(seen) == 3:
                last = ws
                break
        # break: the connection is closed (by the generator's finalization).
        while last.state is not shakehands.protocol.connection.State.CLOSED:
            await asyncio.sleep(0.01)
    assert seen == ["1", "2", "3"]


async def test_asyncio_unix_reconnects(tmp_path: Any) -> None:
    import socket

    path = f"/tmp/sh-reconnect-{tmp_path.name[-20:]}.sock"
    connections = 0

    async def handler(ws: shakehands.ServerConnection) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            await ws.close(1012)
        else:
            await ws.send("back")

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    try:
        async with shakehands.serve(handler, sock=listener), asyncio.timeout(30):
            got = []
            async for ws in shakehands.unix_connect(path, **FAST):
                try:
                    got += [message async for message in ws]
                except ConnectionClosed:
                    continue
        assert got == ["back"]
    finally:
        import os

        os.unlink(path)


# ---------------------------------------------------------------------------------------------
# Blocking
# ---------------------------------------------------------------------------------------------


def test_sync_reconnects_across_a_server_restart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="shakehands.client")
    port = free_port()
    generation = [1]

    def hello(ws: sync.ServerConnection) -> None:
        ws.send(f"generation {generation[0]}")
        for _ in ws:
            pass

    first_seen = threading.Event()
    done = threading.Event()

    def operator() -> None:
        # Stops the server once the client has its first message, lets the client be refused
        # a few times, starts the server again on the same port.
        with sync_server(hello, port=port):
            first_seen.wait(30)
        deadline = time.monotonic() + 30
        while len(attempts_logged(caplog, "refused the connection")) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        generation[0] = 2
        with sync_server(hello, port=port):
            done.wait(30)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    received: list[str | bytes] = []
    try:
        for ws in sync.reconnect(f"ws://{HOST}:{port}/", **FAST):
            try:
                for message in ws:
                    received.append(message)
                    if message == "generation 1":
                        first_seen.set()
                    if message == "generation 2":
                        break
            except ConnectionClosed:
                continue
            if received[-1] == "generation 2":
                break
            assert len(received) < 5
    finally:
        done.set()
        thread.join(30)
    assert received == ["generation 1", "generation 2"]
    assert ws.state is shakehands.protocol.connection.State.CLOSED  # break closed it
    assert attempts_logged(caplog, "closed the connection with 1001; reconnecting in")
    assert all("; retrying in" in m for m in attempts_logged(caplog, "refused the connection"))


@pytest.mark.parametrize(("code", "reconnects"), [(1011, True), (1013, True), (1000, False)])
def test_sync_close_codes(code: int, reconnects: bool) -> None:
    connections = [0]

    def handler(ws: sync.ServerConnection) -> None:
        connections[0] += 1
        if connections[0] > 1:
            ws.send("again")
            return
        ws.close(code)

    received: list[str | bytes] = []
    with sync_server(handler) as server:
        for iterations, ws in enumerate(
            sync.reconnect(f"ws://{HOST}:{server.port}/", **FAST), start=1
        ):
            assert iterations <= 2
            try:
                received += list(ws)
            except ConnectionClosed:
                continue
    assert connections[0] == (2 if reconnects else 1)
    assert received == (["again"] if reconnects else [])


def test_sync_retries_5xx_and_gives_up_on_4xx() -> None:
    requests = [0]

    def answers(request: Request) -> Response | None:
        requests[0] += 1
        if requests[0] <= 2:
            return Response(502)
        if requests[0] == 3:
            return None
        return Response(401)

    def hello(ws: sync.ServerConnection) -> None:
        ws.send("in")
        ws.close(1013)  # try again later: the client reconnects, and gets a 401

    with sync_server(hello, process_request=answers) as server:
        received: list[str | bytes] = []
        with pytest.raises(InvalidStatus) as caught:
            for ws in sync.reconnect(f"ws://{HOST}:{server.port}/", **FAST):
                try:
                    for message in ws:
                        received.append(message)
                except ConnectionClosed:
                    continue
    assert received == ["in"]
    assert caught.value.response.status == 401
    assert requests[0] == 4


def test_sync_reconnect_arguments_checked_at_once() -> None:
    with pytest.raises(shakehands.InvalidURI):
        sync.reconnect("http://example.com/")
    with pytest.raises(ValueError, match="backoff factor must be >= 1"):
        sync.reconnect("ws://example.com/", backoff_factor=0.5)
    with pytest.raises(TypeError, match="unknown client option"):
        sync.reconnect("ws://example.com/", nonsense=1)  # type: ignore[call-arg]


def test_sync_unix_reconnects() -> None:
    import os
    import socket

    path = f"/tmp/sh-sync-reconnect-{os.getpid()}.sock"
    connections = [0]

    def handler(ws: sync.ServerConnection) -> None:
        connections[0] += 1
        if connections[0] == 1:
            ws.close(1013)
        else:
            ws.send("back")

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)
    try:
        got: list[str | bytes] = []
        with sync_server(handler, sock=listener):
            for ws in sync.reconnect("ws://localhost/", unix_path=path, **FAST):
                try:
                    got += list(ws)
                except ConnectionClosed:
                    continue
        assert got == ["back"]
        assert ws.uri == "ws://localhost/"
    finally:
        os.unlink(path)
