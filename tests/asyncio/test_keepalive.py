"""Keepalive pings on real sockets: a silent peer is dropped with 1011, a live one is kept,
``ping()`` measures the round trip, and ``ping_interval=None`` sends nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import shakehands
from shakehands import ConnectionClosedError

from ..helpers import HOST, OP_CLOSE, OP_PING, OP_PONG
from .asyncio_helpers import (
    RawClient,
    RawServer,
    RawServerConnection,
    echo_server,
    uri,
    wait_for_condition,
)

pytestmark = pytest.mark.timeout(30)


async def test_server_drops_peer_that_never_answers_pings(api: str) -> None:
    async with echo_server(api, ping_interval=0.2, ping_timeout=0.2) as server:
        client = await RawClient.open(server.port)
        try:
            async with asyncio.timeout(5):
                await client.handshake(server.port)
                start = time.monotonic()
                pings = 0
                while True:
                    _, opcode, payload = await client.read_frame()
                    if opcode == OP_PING:
                        pings += 1
                        assert len(payload) == 4
                        continue
                    assert opcode == OP_CLOSE
                    break
                elapsed = time.monotonic() - start
                assert payload[:2] == (1011).to_bytes(2, "big")
                assert b"keepalive" in payload[2:]
                assert pings >= 1
                assert 0.3 < elapsed < 1.2, elapsed
                assert await client.read_eof() == b""
                await wait_for_condition(lambda: not server.connections)
        finally:
            await client.close()


async def test_handler_sees_connection_closed_after_keepalive_timeout() -> None:
    result: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            await ws.recv()
        except ConnectionClosedError as exc:
            result.set_result(exc)

    async with shakehands.serve(handler, HOST, 0, ping_interval=0.1, ping_timeout=0.1) as server:
        client = await RawClient.open(server.port)
        try:
            async with asyncio.timeout(5):
                await client.handshake(server.port)
                exc = await result
                assert isinstance(exc, ConnectionClosedError)
                assert exc.sent_code == 1011
                # The error says what happened, not only "1006".
                assert "keepalive ping not answered within 0.1 s" in str(exc), str(exc)
        finally:
            await client.close()


async def test_callback_on_close_after_keepalive_timeout() -> None:
    closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Listener(shakehands.Listener):
        def on_close(self, ws: shakehands.CallbackConnection, code: int, reason: str) -> None:
            closed.set_result(code)

    async with shakehands.serve_callbacks(
        Listener(), HOST, 0, ping_interval=0.1, ping_timeout=0.1
    ) as server:
        client = await RawClient.open(server.port)
        try:
            async with asyncio.timeout(5):
                await client.handshake(server.port)
                assert await closed == 1006  # no close frame came back from the silent peer
        finally:
            await client.close()


async def test_pings_answered_keep_the_connection_open(api: str) -> None:
    async with (
        echo_server(api, ping_interval=0.2, ping_timeout=0.2) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server), ping_interval=0.2, ping_timeout=0.2) as ws,
    ):
        await asyncio.sleep(1.2)  # about six pings each way
        assert ws.open
        await ws.send("still alive")
        assert await ws.recv() == "still alive"
        (conn,) = server.connections
        assert conn.open


async def test_raw_client_answering_pings_is_kept(api: str) -> None:
    async with echo_server(api, ping_interval=0.1, ping_timeout=0.1) as server:
        client = await RawClient.open(server.port)
        try:
            async with asyncio.timeout(5):
                await client.handshake(server.port)
                for _ in range(8):  # 0.8 s of pings, each answered
                    _, opcode, payload = await client.read_frame()
                    assert opcode == OP_PING
                    client.send_frame(OP_PONG, payload)
                assert len(server.connections) == 1
        finally:
            await client.close()


async def test_client_keepalive_drops_silent_server() -> None:
    """The client side of keepalive, against a server that never answers pings."""

    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        frames = []
        while True:
            fin, opcode, payload = await conn.read_frame()
            frames.append(opcode)
            if opcode == OP_CLOSE:
                assert payload[:2] == (1011).to_bytes(2, "big")
                break
        assert OP_PING in frames

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri, ping_interval=0.1, ping_timeout=0.1)
        with pytest.raises(ConnectionClosedError) as excinfo:
            await ws.recv()
        assert excinfo.value.sent_code == 1011
        assert str(excinfo.value) == (
            "connection closed: 1006 (no close frame from the peer); "
            "sent 1011 (keepalive ping not answered within 0.1 s)"
        )
        await raw.finished()


async def test_ping_returns_float_latency_on_both_ends() -> None:
    latencies: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handler(ws: shakehands.ServerConnection) -> None:
        latency = await ws.ping()
        latencies.set_result(latency)
        await ws.wait_closed()

    async with (
        shakehands.serve(handler, HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        client_latency = await ws.ping(b"0123456789")
        server_latency = await latencies
    for latency in (client_latency, server_latency):
        assert isinstance(latency, float)
        assert 0 <= latency < 1


async def test_callback_ping_future_resolves_to_latency() -> None:
    class Pinger(shakehands.Listener):
        def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
            future = ws.ping()
            future.add_done_callback(lambda f: ws.send(repr(f.result())))

    async with (
        shakehands.serve_callbacks(Pinger(), HOST, 0) as server,
        asyncio.timeout(5),
        shakehands.connect(uri(server)) as ws,
    ):
        await ws.send("ping me")
        latency = float(await ws.recv())
        assert 0 <= latency < 1


async def test_ping_waiters_fail_when_connection_closes() -> None:
    """A ping still waiting for its pong raises ConnectionClosed when the connection goes."""

    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        await conn.read_frame()  # the ping: never answered
        conn.writer.transport.abort()

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri)
        with pytest.raises(ConnectionClosedError):
            await ws.ping()


@pytest.mark.parametrize("payload", [b"x" * 126])
async def test_ping_payload_too_long(payload: bytes) -> None:
    async with echo_server("coroutine") as server, shakehands.connect(uri(server)) as ws:
        with pytest.raises(ValueError):
            await ws.ping(payload)
        assert await ws.ping(b"x" * 125) >= 0


async def test_ping_interval_none_sends_no_ping(api: str) -> None:
    async with echo_server(api, ping_interval=None) as server:
        client = await RawClient.open(server.port)
        try:
            await client.handshake(server.port)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.6):
                    await client.read_frame()
        finally:
            await client.close()


async def test_ping_timeout_none_never_drops(api: str) -> None:
    async with echo_server(api, ping_interval=0.1, ping_timeout=None) as server:
        client = await RawClient.open(server.port)
        try:
            async with asyncio.timeout(2):
                await client.handshake(server.port)
                _, opcode, _ = await client.read_frame()
                assert opcode == OP_PING
            # Unanswered, and yet nothing else comes: one keepalive ping at a time, no timeout.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await client.read_frame()
            assert len(server.connections) == 1
        finally:
            await client.close()


async def test_client_ping_interval_none_sends_no_ping() -> None:
    async def script(conn: RawServerConnection) -> None:
        await conn.accept()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await conn.read_frame()
        conn.writer.write(b"\x88\x02\x03\xe8")  # close 1000
        await conn.read_frame()

    async with RawServer(script) as raw, asyncio.timeout(5):
        ws = await shakehands.connect(raw.uri, ping_interval=None)
        with pytest.raises(shakehands.ConnectionClosedOK):
            await ws.recv()
        await raw.finished()


async def test_one_keepalive_timer_for_many_connections(api: str) -> None:
    """Connections with one ping_interval share one KeepaliveWheel (one timer, not one per
    connection): each is pinged again after answering, and the last connection lost leaves
    nothing behind (no wheel, no timer)."""
    from shakehands.asyncio.base import KeepaliveWheel

    loop = asyncio.get_running_loop()
    interval = 0.15
    async with echo_server(api, ping_interval=interval, ping_timeout=1) as server:
        clients = [await RawClient.open(server.port) for _ in range(3)]
        try:
            async with asyncio.timeout(5):
                for client in clients:
                    await client.handshake(server.port)
                await wait_for_condition(lambda: len(server.connections) == 3)
                wheel = KeepaliveWheel._wheels[loop, interval]
                assert wheel.size == 3
                assert wheel.handle is not None
                for _ in range(2):  # answered, then pinged again
                    for client in clients:
                        _, opcode, payload = await client.read_frame()
                        assert opcode == OP_PING
                        client.send_frame(OP_PONG, payload)
                # One connection lost: out of the wheel at once; the others stay enrolled.
                await clients.pop().close()
                await wait_for_condition(lambda: len(server.connections) == 2)
                assert KeepaliveWheel._wheels[loop, interval] is wheel
                assert wheel.size == 2
                _, opcode, _ = await clients[0].read_frame()
                assert opcode == OP_PING
        finally:
            for client in clients:
                await client.close()
        await wait_for_condition(lambda: not server.connections)
        assert (loop, interval) not in KeepaliveWheel._wheels
        assert wheel.size == 0 and wheel.handle is None and not wheel.buckets


def test_the_wheels_of_closed_loops_are_forgotten() -> None:
    """An event loop closed while connections were still enrolled (nothing told the wheel:
    ``asyncio.run()`` in a loop, test suites) is not kept alive by its wheel once another wheel
    is made."""
    import gc
    import weakref

    from shakehands.asyncio.base import KeepaliveWheel

    class Enrolled:
        """What the wheel uses of a connection: its loop and ``_keepalive``."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop

        def _keepalive(self) -> None:
            raise AssertionError("not due in this test")

    old = asyncio.new_event_loop()
    KeepaliveWheel.enroll(Enrolled(old), 7.0)  # type: ignore[arg-type]
    assert (old, 7.0) in KeepaliveWheel._wheels
    old.close()
    old_ref = weakref.ref(old)
    del old
    new = asyncio.new_event_loop()
    connection = Enrolled(new)
    bucket = KeepaliveWheel.enroll(connection, 7.0)  # type: ignore[arg-type]
    try:
        gc.collect()
        assert old_ref() is None
        assert not [loop for loop, _ in KeepaliveWheel._wheels if loop.is_closed()]
        assert KeepaliveWheel._wheels[new, 7.0].size == 1
    finally:
        bucket.wheel.remove(connection, bucket)  # type: ignore[arg-type]
        new.close()
    assert (new, 7.0) not in KeepaliveWheel._wheels
