"""Hub: topics over the in-memory backend (both APIs) and over a real Redis server.

Two Hub objects on one Redis stand for two processes: each holds its own Redis connections, so
what crosses between them really goes through redis-server. The chat tests run real processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

import shakehands
from shakehands import Gap, Hub, PublishError, RedisBackend

from .pubsub_helpers import RedisServer

HOST = "127.0.0.1"


class Rooms(shakehands.Listener):
    """Callback API: join the room named by the path, publish what is received."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def on_open(self, ws: shakehands.CallbackConnection) -> None:
        assert ws.request is not None
        self.hub.subscribe(ws, ws.request.path[1:])

    def on_message(self, ws: shakehands.CallbackConnection, message: str | bytes) -> None:
        assert ws.request is not None
        self.hub.publish_soon(ws.request.path[1:], message)


def rooms_handler(hub: Hub) -> Any:
    """Coroutine API: the same application."""

    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        room = ws.request.path[1:]
        await hub.subscribe(ws, room)
        async for message in ws:
            await hub.publish(room, message)

    return handler


@contextlib.asynccontextmanager
async def rooms_server(api: str, hub: Hub) -> AsyncIterator[shakehands.Server[Any]]:
    context: Any = (
        shakehands.serve(rooms_handler(hub), HOST, 0)
        if api == "coroutine"
        else shakehands.serve_callbacks(Rooms(hub), HOST, 0)
    )
    async with context as server:
        yield server


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def no_message(client: Any) -> bool:
    try:
        async with asyncio.timeout(0.2):
            await client.recv()
    except TimeoutError:
        return True
    return False


@pytest.mark.parametrize("api", ["coroutine", "callback"])
async def test_memory_hub_delivers_to_the_room_only(api: str) -> None:
    async with Hub() as hub, rooms_server(api, hub) as server:
        base = f"ws://{HOST}:{server.port}"
        red = [await shakehands.connect(f"{base}/red") for _ in range(3)]
        blue = [await shakehands.connect(f"{base}/blue") for _ in range(2)]
        await wait_for(
            lambda: len(hub.subscribers("red")) == 3 and len(hub.subscribers("blue")) == 2
        )
        assert hub.topics() == {"red", "blue"}
        await red[0].send("hello red")
        await blue[1].send(b"hello blue")
        for client in red:
            assert await client.recv() == "hello red"
        for client in blue:
            assert await client.recv() == b"hello blue"
        assert all([await no_message(c) for c in red + blue])
        assert hub.counters.published == 2 and hub.counters.delivered == 5
        # Subscriptions end with their connection.
        await red[0].close()
        await blue[0].close()
        await blue[1].close()
        await wait_for(lambda: len(hub.subscribers("red")) == 2 and hub.topics() == {"red"})
        await red[1].send("still here")
        assert await red[2].recv() == "still here"
        for client in red[1:]:
            await client.close()


async def test_unsubscribe_one_topic() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        hub.subscribe(ws, "a")
        hub.subscribe(ws, "b")
        async for message in ws:
            assert isinstance(message, str)
            hub.unsubscribe(ws, message)

    async with Hub() as hub, shakehands.serve(handler, HOST, 0) as server:
        client = await shakehands.connect(f"ws://{HOST}:{server.port}/")
        await wait_for(lambda: hub.topics() == {"a", "b"})
        (conn,) = hub.subscribers("a")
        await client.send("a")
        await wait_for(lambda: hub.topics(conn) == {"b"})
        await hub.publish("a", "not for you")
        await hub.publish("b", "for you")
        assert await client.recv() == "for you"
        await client.close()


async def test_publish_rejects_other_types() -> None:
    async with Hub() as hub:
        with pytest.raises(TypeError):
            await hub.publish("t", 3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["coroutine", "callback"])
async def test_redis_hubs_share_rooms_with_one_subscription_per_process(
    api: str, redis_server: RedisServer
) -> None:
    async with (
        Hub(RedisBackend(redis_server.url)) as hub_a,
        Hub(RedisBackend(redis_server.url)) as hub_b,
        rooms_server(api, hub_a) as server_a,
        rooms_server(api, hub_b) as server_b,
    ):
        on_a = [await shakehands.connect(f"ws://{HOST}:{server_a.port}/room") for _ in range(4)]
        on_b = [await shakehands.connect(f"ws://{HOST}:{server_b.port}/room") for _ in range(3)]
        await wait_for(
            lambda: len(hub_a.subscribers("room")) == 4 and len(hub_b.subscribers("room")) == 3
        )
        # One Redis subscription per process, not per connection.
        await wait_for(lambda: redis_server.numsub("shakehands:room") == 2)
        for i in range(20):
            await on_a[i % 4].send(f"from a {i}")
            await on_b[i % 3].send(f"from b {i}")
        orders = []
        for client in on_a + on_b:
            got = [await client.recv() for _ in range(40)]
            orders.append(got)
            assert sorted(got) == sorted(
                [f"from a {i}" for i in range(20)] + [f"from b {i}" for i in range(20)]
            )
            # In publish order per publisher (connection k of each side sent i = k mod 4 or 3).
            for k in range(4):
                mine = [f"from a {i}" for i in range(20) if i % 4 == k]
                assert [m for m in got if m in mine] == mine
            for k in range(3):
                mine = [f"from b {i}" for i in range(20) if i % 3 == k]
                assert [m for m in got if m in mine] == mine
            assert await no_message(client)
        # Everything goes through Redis, even to the publisher's own process: one order for all.
        assert all(order == orders[0] for order in orders)
        assert hub_a.counters.published == 20
        # The last local subscriber leaving drops the process's Redis subscription.
        for client in on_b:
            await client.close()
        await wait_for(lambda: redis_server.numsub("shakehands:room") == 1)
        for client in on_a:
            await client.close()
        await wait_for(lambda: redis_server.numsub("shakehands:room") == 0)


async def test_redis_outage_fails_publications_and_reports_the_gap(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shakehands.hub")
    gaps: list[Gap] = []
    backend = RedisBackend(redis_server.url, min_backoff=0.05, max_backoff=0.5)
    async with Hub(backend) as hub, rooms_server("coroutine", hub) as server:
        hub.on_gap(gaps.append)
        client = await shakehands.connect(f"ws://{HOST}:{server.port}/news")
        await wait_for(lambda: redis_server.numsub("shakehands:news") == 1)
        assert await hub.publish("news", "before") == 1
        assert await client.recv() == "before"

        redis_server.stop()
        await wait_for(lambda: not backend.connected)
        with pytest.raises(PublishError, match="unreachable"):
            await hub.publish("news", "during")
        assert hub.counters.publish_failures == 1
        await asyncio.sleep(0.3)  # a few reconnection attempts, each logged

        redis_server.start()
        await wait_for(lambda: backend.connected and len(gaps) == 1)
        assert gaps[0].topics == ("news",) and gaps[0].duration > 0.3
        await wait_for(lambda: redis_server.numsub("shakehands:news") == 1)
        assert await hub.publish("news", "after") == 1
        assert await client.recv() == "after"
        await client.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "shakehands.hub"]
    assert any("lost the connection to Redis" in m for m in messages)
    assert any("retrying in" in m for m in messages)
    assert any("reconnected to Redis" in m for m in messages)


async def test_redis_unreachable_at_start_then_available(tmp_path: Any) -> None:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    redis = RedisServer(executable, tmp_path)
    backend = RedisBackend(redis.url, min_backoff=0.05, max_backoff=0.2)
    async with Hub(backend) as hub, rooms_server("coroutine", hub) as server:
        assert not backend.connected
        with pytest.raises(PublishError):
            await hub.publish("x", "nobody")
        client = await shakehands.connect(f"ws://{HOST}:{server.port}/x")
        await wait_for(lambda: hub.subscribers("x"))
        try:
            redis.start()
        except (OSError, RuntimeError) as exc:
            pytest.skip(f"redis-server could not be started: {exc}")
        try:
            await wait_for(lambda: backend.connected and redis.numsub("shakehands:x") == 1)
            await hub.publish("x", "first")
            assert await client.recv() == "first"
            await client.close()
        finally:
            redis.stop()


def test_redis_backend_names_the_missing_package() -> None:
    # The import is lazy: shakehands imports without redis; starting the backend says what to do.
    code = (
        "import sys, asyncio; sys.modules['redis'] = None\n"
        "import shakehands\n"
        "hub = shakehands.Hub(shakehands.RedisBackend('redis://127.0.0.1:1/0'))\n"
        "try:\n"
        "    asyncio.run(hub.start())\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'shakehands[redis]'" in result.stdout


class FreezingProxy:
    """A TCP proxy to Redis that can go silent: it stops forwarding without closing anything,
    like a machine that vanished or a partitioned network."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, HOST, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.frozen:
            return  # accept and never answer
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    if not self.frozen:
                        sink.write(data)

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


async def test_silent_redis_link_is_detected_by_the_health_check(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shakehands.hub")
    proxy = FreezingProxy(redis_server.port)
    port = await proxy.start()
    gaps: list[Gap] = []
    backend = RedisBackend(
        f"redis://{HOST}:{port}/0",
        health_check_interval=0.2,
        connect_timeout=0.5,
        min_backoff=0.05,
        max_backoff=0.2,
    )
    try:
        async with Hub(backend) as hub, rooms_server("coroutine", hub) as server:
            hub.on_gap(gaps.append)
            client = await shakehands.connect(f"ws://{HOST}:{server.port}/quiet")
            await wait_for(lambda: redis_server.numsub("shakehands:quiet") == 1)
            proxy.frozen = True
            # No FIN, no RST: only the missing answers to PING tell.
            await wait_for(lambda: not backend.connected)
            with pytest.raises(PublishError):
                await hub.publish("quiet", "lost")
            proxy.frozen = False
            await wait_for(lambda: backend.connected and len(gaps) == 1)
            await hub.publish("quiet", "heard")
            assert await client.recv() == "heard"
            await client.close()
    finally:
        await proxy.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "shakehands.hub"]
    assert any("no answer from Redis" in m for m in messages)
