"""The Redis Streams backend, on a real redis-server: positions shared by every process,
resume from another process, the hand-over race, history lost, and a Redis restart with AOF
(the server process killed and started again on the same port and data directory).

Two Hub objects on one Redis stand for two processes: each holds its own Redis connections.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import shakehands
from shakehands.pubsub import Gap, Hub, Position, PublishError, RedisStreamsBackend
from shakehands.pubsub.hub import REPLAY_PAGE

from .pubsub_helpers import RedisServer
from .test_history import as_json, receive, resuming_server, silent, subscribed, two_hubs, wait_for

HOST = "127.0.0.1"


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server with AOF, fsync on every write."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(executable, tmp_path, appendonly=True)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"redis-server could not be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


def streams(redis: RedisServer, **options: Any) -> RedisStreamsBackend:
    options.setdefault("min_backoff", 0.05)
    options.setdefault("max_backoff", 0.3)
    return RedisStreamsBackend(redis.url, **options)


def xread_calls(redis: RedisServer) -> int:
    info = redis.command("INFO", "commandstats").decode()
    for line in info.splitlines():
        if line.startswith("cmdstat_xread:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_two_processes_see_the_same_positions(redis_server: RedisServer) -> None:
    backends = streams(redis_server), streams(redis_server)
    async with two_hubs(*backends) as (hub_a, hub_b, port_a, port_b):
        on_a = await shakehands.connect(f"ws://{HOST}:{port_a}/room")
        on_b = await shakehands.connect(f"ws://{HOST}:{port_b}/room")
        joined_a, joined_b = (await receive(on_a, 1))[0], (await receive(on_b, 1))[0]
        assert joined_a["subscribed"] == joined_b["subscribed"]
        epoch = joined_a["subscribed"].split(":")[0]
        for i in range(10):
            await (hub_a if i % 2 else hub_b).publish("room", f"m{i}")
        got_a, got_b = await receive(on_a, 10), await receive(on_b, 10)
        assert got_a == got_b
        assert [m["offset"] for m in got_a] == list(range(1, 11))
        assert {m["epoch"] for m in got_a} == {epoch}
        # The key names carry the topic as a hash tag (one cluster slot per topic).
        assert redis_server.command("XLEN", "shakehands:{room}") == b":10\r\n"
        await on_a.close()
        await on_b.close()


async def test_the_reader_blocks_instead_of_polling(redis_server: RedisServer) -> None:
    async with Hub(streams(redis_server)) as hub, resuming_server(hub) as port:
        client = await shakehands.connect(f"ws://{HOST}:{port}/quiet")
        await receive(client, 1)
        before = xread_calls(redis_server)
        await asyncio.sleep(1.5)
        assert xread_calls(redis_server) - before <= 2  # one pending read, maybe woken once
        await hub.publish("quiet", "wake up")
        assert await client.recv() == "wake up"
        await client.close()


async def test_resume_on_another_process_replays_then_live(redis_server: RedisServer) -> None:
    backends = streams(redis_server), streams(redis_server)
    async with two_hubs(*backends) as (hub_a, hub_b, port_a, port_b):
        client = await subscribed(port_a, "news")
        for i in range(1, 4):
            await hub_a.publish("news", f"n{i}")
        got = await receive(client, 3)
        last = Position(got[-1]["epoch"], got[-1]["offset"])
        await client.close()
        for i in range(4, 8):
            await hub_b.publish("news", f"n{i}")
        moved = await shakehands.connect(f"ws://{HOST}:{port_b}/news?since={last}")
        replay = await receive(moved, 5)
        assert [m.get("text") for m in replay[:4]] == ["n4", "n5", "n6", "n7"]
        assert replay[4] == {"subscribed": f"{last.epoch}:7", "replayed": 4, "lost": None}
        await hub_a.publish("news", "n8")
        assert (await receive(moved, 1))[0]["offset"] == 8
        assert await silent(moved)
        await moved.close()


async def test_publications_during_a_redis_replay_arrive_once_in_order(
    redis_server: RedisServer,
) -> None:
    async with (
        Hub(streams(redis_server, history_size=5000), wire=as_json) as hub,
        Hub(streams(redis_server), wire=as_json) as publisher_hub,
        resuming_server(hub) as port,
    ):
        backlog = 3 * REPLAY_PAGE + 7
        for i in range(backlog):
            await publisher_hub.publish("race", f"m{i + 1}")
        epoch = (await hub.backend.head("race")).epoch  # type: ignore[attr-defined]
        published = backlog
        stop = asyncio.Event()

        async def publisher() -> None:
            nonlocal published
            while not stop.is_set() and published < backlog + 1000:
                published += 1
                await publisher_hub.publish("race", f"m{published}")

        task = asyncio.create_task(publisher())
        await asyncio.sleep(0.01)
        during_start = published
        client = await shakehands.connect(f"ws://{HOST}:{port}/race?since={epoch}:5")
        messages: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while "subscribed" not in (message := json.loads(await client.recv())):
                messages.append(message)
        during_end = published
        stop.set()
        await task
        assert during_end > during_start
        messages += await receive(client, published - 5 - len(messages))
        assert [m["offset"] for m in messages] == list(range(6, published + 1))
        assert message["lost"] is None
        assert await silent(client)
        await client.close()


async def test_history_lost_cases_over_redis(redis_server: RedisServer) -> None:
    async with (
        Hub(streams(redis_server, history_size=10), wire=as_json) as hub,
        resuming_server(hub) as port,
    ):
        for i in range(600):
            await hub.publish("t", f"m{i}")
        await hub.publish("other", "o")
        head = await hub.backend.head("t")  # type: ignore[attr-defined]
        other = await hub.backend.head("other")  # type: ignore[attr-defined]
        assert head.offset == 600
        cases = {
            f"{head.epoch}:0": "trimmed",  # MAXLEN ~ 10 kept far fewer than 600
            f"{head.epoch}:601": "ahead",
            f"{other.epoch}:0": "epoch",  # another topic's position
            "0123456789abcdef:3": "epoch",
            f"{head.epoch}:600": None,
        }
        for since, reason in cases.items():
            client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={since}")
            notice = (await receive(client, 1))[0]
            assert notice["lost"] == reason, since
            assert notice["subscribed"] == str(head) and notice["replayed"] == 0
            await client.close()
        # A topic nobody published on: an epoch is made, and positions of it hold.
        fresh = await hub.backend.head("fresh")  # type: ignore[attr-defined]
        assert fresh.offset == 0
        await hub.publish("fresh", "first")
        assert (await hub.backend.head("fresh")).epoch == fresh.epoch  # type: ignore[attr-defined]


async def test_a_redis_restart_with_aof_loses_nothing_acknowledged(
    persistent_redis: RedisServer,
) -> None:
    """Kill -9 redis-server mid-traffic and start it again on the same port and directory: the
    offsets continue in the same epoch, every subscriber of both processes gets every
    acknowledged publication once, in order, and no Gap is reported."""
    gaps: list[Gap] = []
    backend_a, backend_b = streams(persistent_redis), streams(persistent_redis)
    async with two_hubs(backend_a, backend_b) as (hub_a, hub_b, port_a, port_b):
        hub_a.on_gap(gaps.append)
        hub_b.on_gap(gaps.append)
        clients = [await subscribed(port, "room") for port in (port_a, port_b)]
        acknowledged: list[str] = []
        failures = 0

        async def publisher() -> None:
            nonlocal failures
            i = 0
            while len(acknowledged) < 300:
                text = f"m{i}"
                try:
                    await hub_a.publish("room", text)
                except PublishError:
                    failures += 1
                    await asyncio.sleep(0.02)  # retried as a new publication
                else:
                    acknowledged.append(text)
                i += 1
                if len(acknowledged) % 10 == 0:
                    await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        await wait_for(lambda: len(acknowledged) >= 100, timeout=60)
        before = await backend_b.head("room")
        persistent_redis.stop()  # SIGKILL
        await wait_for(lambda: not backend_a.connected and not backend_b.connected)
        persistent_redis.start()
        await asyncio.wait_for(task, 120)
        after = await backend_b.head("room")
        assert after.epoch == before.epoch and after.offset >= 300
        for client in clients:
            got = await receive(client, after.offset, timeout=60)
            assert [m["offset"] for m in got] == list(range(1, after.offset + 1))
            texts = [m["text"] for m in got]
            assert [t for t in texts if t in set(acknowledged)] == acknowledged
            assert await silent(client)
            await client.close()
        assert gaps == [] and failures >= 1


async def test_a_redis_restart_without_persistence_is_a_new_epoch(
    redis_server: RedisServer,
) -> None:
    gaps: list[Gap] = []
    backend = streams(redis_server)
    async with Hub(backend, wire=as_json) as hub, resuming_server(hub) as port:
        hub.on_gap(gaps.append)
        client = await shakehands.connect(f"ws://{HOST}:{port}/t")
        await receive(client, 1)
        await hub.publish("t", "before")
        old = (await receive(client, 1))[0]
        redis_server.stop()
        await wait_for(lambda: not backend.connected)
        redis_server.start()
        await wait_for(lambda: backend.connected and len(gaps) == 1, timeout=30)
        assert gaps[0].topics == ("t",)
        await hub.publish("t", "after")
        new = (await receive(client, 1))[0]
        assert new["offset"] == 1 and new["epoch"] != old["epoch"]
        # A client coming back with the old position is told, not silently served nothing.
        back = await shakehands.connect(f"ws://{HOST}:{port}/t?since={old['epoch']}:1")
        assert (await receive(back, 1))[0]["lost"] == "epoch"
        await back.close()
        await client.close()


def test_history_size_is_validated() -> None:
    with pytest.raises(ValueError):
        RedisStreamsBackend(history_size=0)


async def test_a_herd_resuming_at_once_over_redis(redis_server: RedisServer) -> None:
    """300 clients resume together: history reads queue (a bounded number in flight) instead
    of exhausting Redis connections; every client gets its replay, none is told history was
    unavailable."""
    async with (
        Hub(streams(redis_server), wire=as_json) as hub,
        resuming_server(hub) as port,
    ):
        await hub.publish("herd", "first")
        since = await hub.backend.head("herd")  # type: ignore[attr-defined]
        for i in range(20):
            await hub.publish("herd", f"m{i}")

        async def one() -> list[dict[str, Any]]:
            client = await shakehands.connect(f"ws://{HOST}:{port}/herd?since={since}")
            got = await receive(client, 21, timeout=120)
            await client.close()
            return got

        results = await asyncio.gather(*(one() for _ in range(300)))
        for got in results:
            assert [m["offset"] for m in got[:20]] == list(range(2, 22))
            assert got[20]["lost"] is None and got[20]["replayed"] == 20
        assert hub.counters.history_lost == 0


async def test_history_is_bounded_by_age_too(redis_server: RedisServer) -> None:
    """``history_age``: entries older than it are trimmed (XTRIM MINID on Redis's clock) when
    the topic is published to, or its history read: a resume from before is ``trimmed``."""
    async with (
        Hub(streams(redis_server, history_age=0.5), wire=as_json) as hub,
        resuming_server(hub) as port,
    ):
        for i in range(3):
            await hub.publish("aged", f"old{i}")
        head = await hub.backend.head("aged")  # type: ignore[attr-defined]
        start = Position(head.epoch, 0)
        # Within the age: what followed is replayed. (From offset 1: the hub keeps the pages
        # its replays read for a few seconds, and a resume from 0 below must reach Redis.)
        client = await shakehands.connect(f"ws://{HOST}:{port}/aged?since={head.epoch}:1")
        assert [m.get("text") for m in await receive(client, 3)][:2] == ["old1", "old2"]
        await client.close()
        await asyncio.sleep(0.8)
        # Aged out, with no publication since: the read trims them first.
        client = await shakehands.connect(f"ws://{HOST}:{port}/aged?since={start}")
        assert (await receive(client, 1))[0]["lost"] == "trimmed"
        await client.close()
        assert redis_server.command("XLEN", "shakehands:{aged}") == b":0\r\n"
        await hub.publish("aged", "new")
        # Offsets go on; a resume from the last aged-out one gets the new entry.
        client = await shakehands.connect(f"ws://{HOST}:{port}/aged?since={head}")
        got = await receive(client, 2)
        assert got[0]["text"] == "new" and got[0]["offset"] == 4 and got[1]["lost"] is None
        await client.close()
        # A publication trims too: the old entry goes when a later one comes after the age.
        await asyncio.sleep(0.8)
        await hub.publish("aged", "newer")
        assert redis_server.command("XLEN", "shakehands:{aged}") == b":1\r\n"
    with pytest.raises(ValueError):
        RedisStreamsBackend(history_age=-1)
    with pytest.raises(ValueError):
        RedisStreamsBackend(history_age=float("nan"))
    assert RedisStreamsBackend(history_age=float("inf"))._age_ms == -1
