"""The Redis Cluster backend on a real cluster of 3 masters and 3 replicas (redis-server
processes on 127.0.0.1, joined by redis-cli): topics spread over the shards, positions, resume,
and a master killed mid-traffic (its replica takes over)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import shakehands
from shakehands.pubsub import Gap, Hub, Position, PublishError, RedisClusterBackend

from .pubsub_helpers import ChatProcess, LocalRedisCluster, RedisServer
from .test_chat import events, join
from .test_history import as_json, receive, resuming_server, silent, subscribed, two_hubs, wait_for

HOST = "127.0.0.1"


def cluster_backend(cluster: LocalRedisCluster, **options: Any) -> RedisClusterBackend:
    options.setdefault("min_backoff", 0.05)
    options.setdefault("max_backoff", 0.5)
    options.setdefault("connect_timeout", 0.5)
    return RedisClusterBackend(cluster.urls[:2], **options)


async def test_topics_spread_over_shards_and_share_positions(
    redis_cluster: LocalRedisCluster,
) -> None:
    backends = cluster_backend(redis_cluster), cluster_backend(redis_cluster)
    async with two_hubs(*backends) as (hub_a, hub_b, port_a, port_b):
        rooms = [f"room{i}" for i in range(8)]
        masters = {redis_cluster.master_of(f"shakehands:{{{room}}}").port for room in rooms}
        assert len(masters) >= 2  # the rooms live on several shards
        clients = {}
        for room in rooms:
            clients[room] = [await subscribed(port, room) for port in (port_a, port_b)]
        for i in range(5):
            for room in rooms:
                await (hub_a if i % 2 else hub_b).publish(room, f"{room}-{i}")
        for room in rooms:
            got = [await receive(client, 5) for client in clients[room]]
            assert got[0] == got[1]
            assert [m["offset"] for m in got[0]] == [1, 2, 3, 4, 5]
            assert [m["text"] for m in got[0]] == [f"{room}-{i}" for i in range(5)]
            for client in clients[room]:
                assert await silent(client)
                await client.close()


async def test_resume_on_another_process_over_the_cluster(
    redis_cluster: LocalRedisCluster,
) -> None:
    backends = cluster_backend(redis_cluster), cluster_backend(redis_cluster)
    async with two_hubs(*backends) as (hub_a, hub_b, port_a, port_b):
        client = await subscribed(port_a, "news")
        await hub_a.publish("news", "n1")
        first = (await receive(client, 1))[0]
        await client.close()
        for i in range(2, 6):
            await hub_b.publish("news", f"n{i}")
        since = Position(first["epoch"], first["offset"])
        moved = await shakehands.connect(f"ws://{HOST}:{port_b}/news?since={since}")
        got = await receive(moved, 5)
        assert [m.get("text") for m in got[:4]] == ["n2", "n3", "n4", "n5"]
        assert got[4]["replayed"] == 4 and got[4]["lost"] is None
        await hub_a.publish("news", "n6")
        assert (await receive(moved, 1))[0]["offset"] == 6
        await moved.close()


async def test_a_master_killed_mid_traffic(redis_cluster: LocalRedisCluster) -> None:
    """Kill the master of a room's shard while a publisher publishes: the replica takes over,
    subscribers of both processes follow it, and each gets every offset once, in order; what
    the failover lost of the acknowledged publications is measured and printed (asynchronous
    replication), and reported as a new epoch plus a Gap when it is not nothing."""
    gaps: list[Gap] = []
    backends = cluster_backend(redis_cluster), cluster_backend(redis_cluster)
    async with two_hubs(*backends) as (hub_a, hub_b, port_a, port_b):
        hub_a.on_gap(gaps.append)
        hub_b.on_gap(gaps.append)
        clients = [await subscribed(port, "room") for port in (port_a, port_b)]
        acknowledged: list[str] = []
        failures = 0

        async def publisher() -> None:
            nonlocal failures
            i = 0
            while len(acknowledged) < 200:
                text = f"m{i}"
                i += 1
                try:
                    await hub_a.publish("room", text)
                except PublishError:
                    failures += 1
                    await asyncio.sleep(0.05)
                    continue
                acknowledged.append(text)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(publisher())
        await wait_for(lambda: len(acknowledged) >= 60, timeout=60)
        master = redis_cluster.master_of("shakehands:{room}")
        killed_at = time.monotonic()
        master.stop()  # SIGKILL
        await asyncio.wait_for(task, 120)
        window = time.monotonic() - killed_at
        got = []
        for client in clients:
            messages = []
            async with asyncio.timeout(60):
                while len([m for m in messages if m["text"] == acknowledged[-1]]) == 0:
                    messages.append((await receive(client, 1))[0])
            assert await silent(client)
            got.append(messages)
            await client.close()
        assert got[0] == got[1]  # both processes, the same sequence
        for messages in got:
            # Never twice, and in order within each epoch.
            keys = [(m["epoch"], m["offset"]) for m in messages]
            assert len(keys) == len(set(keys))
            for epoch in {m["epoch"] for m in messages}:
                offsets = [m["offset"] for m in messages if m["epoch"] == epoch]
                assert offsets == sorted(offsets)
            texts = [m["text"] for m in messages]
            assert len(texts) == len(set(texts))  # no message twice, even across epochs
            lost = [t for t in acknowledged if t not in texts]
            done = set(acknowledged)
            assert [t for t in texts if t in done] == [t for t in acknowledged if t in texts]
            epochs = len({m["epoch"] for m in messages})
            print(
                f"\nfailover: {failures} publications refused during {window:.1f} s, "
                f"{len(lost)} acknowledged lost: {lost}, epochs {epochs}, "
                f"delivered but refused: {[t for t in texts if t not in done]}"
            )
            if lost:
                assert gaps  # told, never silent


async def test_chat_on_the_cluster_from_the_command_line(
    redis_cluster: LocalRedisCluster, chat_processes: list[ChatProcess]
) -> None:
    nodes = ",".join(redis_cluster.urls[:3])
    first = ChatProcess("--redis-cluster", nodes)
    second = ChatProcess("--redis-cluster", nodes)
    chat_processes += [first, second]
    a, joined = await join(first.uri("hall", "a"))
    b, _ = await join(second.uri("hall", "b"))
    assert joined["epoch"] and joined["offset"] == 0
    await a.send("over the shards")
    for ws in (a, b):
        (event,) = await events(ws, 1)
        assert event["text"] == "over the shards" and event["offset"] == 1
    await b.close()
    await a.send("while b is away")
    await events(a, 1)
    back = await shakehands.connect(second.uri("hall", "b") + f"&since=1&epoch={joined['epoch']}")
    replayed, joined_again = await events(back, 2)
    assert replayed["text"] == "while b is away" and joined_again["replayed"] == 1
    await a.close()
    await back.close()


def test_the_command_line_takes_one_bus() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shakehands", "chat", "--redis", "redis://x",
         "--redis-cluster", "redis://y"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "not both" in result.stderr


def test_cluster_backend_arguments() -> None:
    assert RedisClusterBackend("redis://a:1, redis://b:2").urls == ["redis://a:1", "redis://b:2"]
    for bad in ("", ",", []):
        with pytest.raises(ValueError):
            RedisClusterBackend(bad)
    with pytest.raises(ValueError):
        RedisClusterBackend(history_size=0)


async def test_history_is_bounded_by_age_on_the_cluster(
    redis_cluster: LocalRedisCluster,
) -> None:
    async with (
        Hub(cluster_backend(redis_cluster, history_age=0.5), wire=as_json) as hub,
        resuming_server(hub) as port,
    ):
        await hub.publish("aged", "old")
        head = await hub.backend.head("aged")  # type: ignore[attr-defined]
        await asyncio.sleep(0.8)
        await hub.publish("aged", "new")  # trims "old" on the topic's shard
        master = redis_cluster.master_of("shakehands:{aged}")
        assert master.command("XLEN", "shakehands:{aged}") == b":1\r\n"
        client = await shakehands.connect(f"ws://{HOST}:{port}/aged?since={head.epoch}:0")
        assert (await receive(client, 1))[0]["lost"] == "trimmed"
        await client.close()
        client = await shakehands.connect(f"ws://{HOST}:{port}/aged?since={head}")
        got = await receive(client, 2)
        assert got[0]["text"] == "new" and got[0]["offset"] == 2 and got[1]["lost"] is None
        await client.close()
    with pytest.raises(ValueError):
        RedisClusterBackend(history_age=-0.5)


def replica_of(cluster: LocalRedisCluster, master: RedisServer) -> RedisServer:
    """The node replicating ``master`` (from the master's ``INFO replication``)."""
    info = master.command("INFO", "replication").decode()
    (port,) = re.findall(r"slave0:ip=[^,]+,port=(\d+)", info)
    (replica,) = [node for node in cluster.nodes if node.port == int(port)]
    return replica


async def test_writes_lost_in_a_failover_are_told_never_silent(
    redis_cluster: LocalRedisCluster,
) -> None:
    """Force what asynchronous replication can do: the master acknowledges and delivers
    publications its replica never receives (the replica is stopped with SIGSTOP and its link
    cut), then dies; the replica takes over without them. The hub must notice that the new
    master's stream lacks what it delivered: a new epoch, a Gap to the live subscriber, and
    HistoryLost("epoch") to a client resuming from before; an offset never names two messages."""
    gaps: list[Gap] = []
    backend_a, backend_b = cluster_backend(redis_cluster), cluster_backend(redis_cluster)
    async with (
        Hub(backend_a, wire=as_json) as hub_a,
        Hub(backend_b, wire=as_json) as hub_b,
        resuming_server(hub_b) as port_b,
    ):
        hub_b.on_gap(gaps.append)
        live = await shakehands.connect(f"ws://{HOST}:{port_b}/room")
        assert (await receive(live, 1))[0]["lost"] is None
        for i in range(5):
            await hub_a.publish("room", f"kept{i}")
        kept = await receive(live, 5)
        master = redis_cluster.master_of("shakehands:{room}")
        replica = replica_of(redis_cluster, master)
        assert replica.process is not None

        def in_sync() -> bool:
            info = master.command("INFO", "replication").decode()
            offset = int(re.findall(r"master_repl_offset:(\d+)", info)[0])
            return f"offset={offset}," in info

        await wait_for(in_sync, timeout=30)  # the replica holds kept0..kept4
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            assert master.command("CLIENT", "KILL", "TYPE", "replica").startswith(b":1")
            for i in range(5):  # acknowledged, delivered, never replicated
                await hub_a.publish("room", f"doomed{i}")
            doomed = await receive(live, 5)
            master.stop()  # SIGKILL
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        # The replica takes over (node timeout 1 s plus the election).
        async with asyncio.timeout(60):
            while True:
                try:
                    await hub_a.publish("room", "after")
                    break
                except PublishError:
                    await asyncio.sleep(0.1)
        assert not replica.command("ROLE").startswith(b"*3\r\n$5\r\nslave")
        assert replica.command("XLEN", "shakehands:{room}") == b":6\r\n"  # kept0..4, after
        # The live subscriber: told, then the new epoch; offsets never name two messages.
        await wait_for(lambda: bool(gaps), timeout=30)
        (after,) = await receive(live, 1)
        old_epoch = kept[0]["epoch"]
        assert after["text"] == "after" and after["epoch"] != old_epoch
        assert {m["epoch"] for m in kept + doomed} == {old_epoch}
        assert [m["offset"] for m in kept + doomed] == list(range(1, 11))
        assert await silent(live)
        await live.close()
        # Resuming from before the failover, from a position the new master still has and from
        # one it lost: both told, then live from the new epoch.
        for message in (kept[2], doomed[2]):
            client = await shakehands.connect(
                f"ws://{HOST}:{port_b}/room?since={old_epoch}:{message['offset']}"
            )
            (notice,) = await receive(client, 1)
            assert notice["lost"] == "epoch" and notice["replayed"] == 0
            await hub_a.publish("room", "later")
            (got,) = await receive(client, 1)
            assert got["text"] == "later" and got["epoch"] == after["epoch"]
            await client.close()
