"""Rooms benchmark: deliveries per core, end-to-end latency, and the cost of resuming, for each
Hub backend (in memory, Redis pub/sub, Redis Streams, Redis Cluster).

Run: ``python bench/rooms.py`` (needs ``redis-server`` and ``redis-cli`` on PATH for the Redis
rows, and the ``redis`` package). Options: ``--clients 200``, ``--messages 200``, ``--rate 500``,
``--herd 10000``, ``--missed 100``, ``--backends memory pubsub streams cluster``.

What it measures (everything on 127.0.0.1; the clients live in a child process, so that their
parsing does not count against the server):

1. Deliveries per second per core: the server process (this one) holds ``--clients`` clients
   subscribed to one room; it publishes ``--messages`` messages as fast as the backend takes
   them; deliveries / the server's CPU seconds (``time.process_time``) from the first
   publication to the last delivery counted by the clients. Redis's own CPU is not counted.
2. Latency: ``--messages`` publications paced at ``--rate`` per second, each carrying its send
   time (``time.time()``); the clients take the difference on arrival: p50 and p99 over all
   deliveries. The publication goes through the backend (Redis round trip included).
3. Resume: ``--herd`` clients connect at once (at most ``--opening`` handshakes in flight, 500
   by default), each with the same position ``--missed`` publications old, while the room goes
   on publishing (``--live`` publications, 10 per second); time until all have their replay and
   the ``subscribed`` notice, each client's time to caught-up (p50 / p99, from the herd's
   start), the server's CPU per resumed client, its peak RSS and the hub's counters (history
   reads, wire messages and frames built for the replays). Both processes raise
   ``RLIMIT_NOFILE`` to its hard limit (10 000 clients need 10 000 descriptors on each side).
   The herd's clients do not offer permessage-deflate: with compression every connection has
   its own compressor context (about 64 KiB with the defaults), which frames cannot share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import shakehands  # noqa: E402
from shakehands.pubsub import (  # noqa: E402
    HistoryBackend,
    Hub,
    MemoryBackend,
    Position,
    RedisBackend,
    RedisClusterBackend,
    RedisStreamsBackend,
)

HOST = "127.0.0.1"


def stamp(topic: str, position: Position | None, message: str | bytes) -> str:
    """Wire format: offset and the publication's own text (which holds its send time)."""
    offset = position.offset if position else 0
    assert isinstance(message, str)  # the bench publishes JSON text
    return f'{{"o":{offset},"m":{message}}}'


# ---------------------------------------------------------------------------------------------
# The client process
# ---------------------------------------------------------------------------------------------


def clients_main(uri: str, count: int, expected: int, queue: Any) -> None:
    """Connect ``count`` clients, count ``expected`` messages each, report latencies."""

    async def main() -> None:
        clients = [await shakehands.connect(uri) for _ in range(count)]
        for client in clients:
            await client.recv()  # the subscription notice
        queue.put("ready")
        latencies: list[float] = []

        async def read(client: Any) -> None:
            for _ in range(expected):
                data = json.loads(await client.recv())
                latencies.append(time.time() - data["m"]["t"])

        await asyncio.gather(*(read(c) for c in clients))
        queue.put(("done", time.time(), latencies))
        for client in clients:
            await client.close()

    asyncio.run(main())


def raise_open_files() -> int:
    """Raise this process's RLIMIT_NOFILE to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def herd_main(uri: str, count: int, expected: int, opening: int, queue: Any) -> None:
    """``count`` clients resuming at once; each reads messages until it has the subscription
    notice and ``expected`` messages (live ones arrive in between)."""
    raise_open_files()

    async def main() -> None:
        # All at once, as after a deploy; the handshakes themselves are limited in flight so
        # that the kernel's accept queue does not drop SYNs (the replays overlap them).
        gate = asyncio.Semaphore(opening)
        caught_up: list[float] = []

        async def one() -> Any:
            async with gate:
                client = await shakehands.connect(uri, compression=None, open_timeout=120)
            seen = 0
            subscribed = False
            while seen < expected or not subscribed:
                data = json.loads(await client.recv())
                if "subscribed" in data:
                    subscribed = True
                else:
                    seen += 1
            caught_up.append(time.time() - start)
            return client

        queue.put("start")
        start = time.time()
        clients = await asyncio.gather(*(one() for _ in range(count)))
        queue.put(("done", start, time.time(), caught_up))
        for client in clients:
            await client.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# The server side
# ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def room_server(hub: Hub) -> AsyncIterator[int]:
    async def handler(ws: shakehands.ServerConnection) -> None:
        assert ws.request is not None
        since = parse_qs(ws.request.query).get("since", [])
        result = await hub.subscribe(ws, "room", since=Position.parse(since[0]) if since else None)
        await ws.send(json.dumps({"subscribed": str(result.position), "lost": bool(result.lost)}))
        await ws.wait_closed()

    async with shakehands.serve(handler, HOST, 0, backlog=4096) as server:
        yield server.port


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def measure(name: str, make_hub: Any, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    row: dict[str, Any] = {"backend": name}
    async with make_hub() as hub, room_server(hub) as port:
        uri = f"ws://{HOST}:{port}/room"
        loop = asyncio.get_running_loop()

        async def run_clients(expected: int, publish: Any) -> tuple[float, list[float]]:
            queue = context.Queue()
            child = context.Process(target=clients_main, args=(uri, args.clients, expected, queue))
            child.start()
            assert await loop.run_in_executor(None, queue.get, True, 600) == "ready"
            cpu = time.process_time()
            await publish()
            # Keep serving while the clients read: poll the queue from a thread.
            _, _, latencies = await loop.run_in_executor(None, queue.get, True, 600)
            used = time.process_time() - cpu
            await loop.run_in_executor(None, child.join, 60)
            return used, latencies

        async def burst() -> None:
            for i in range(args.messages):
                await hub.publish("room", json.dumps({"t": time.time(), "i": i}))

        used, _ = await run_clients(args.messages, burst)
        deliveries = args.clients * args.messages
        row["deliveries_per_cpu_second"] = round(deliveries / used)

        async def paced() -> None:
            for i in range(args.messages):
                await hub.publish("room", json.dumps({"t": time.time(), "i": i}))
                await asyncio.sleep(1 / args.rate)

        _, latencies = await run_clients(args.messages, paced)
        latencies.sort()
        row["latency_p50_ms"] = round(1000 * statistics.median(latencies), 2)
        row["latency_p99_ms"] = round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2)

        if name != "pubsub" and args.herd:
            backend = hub.backend
            assert isinstance(backend, HistoryBackend)
            head = await backend.head("room")
            since = Position(head.epoch, head.offset)
            for i in range(args.missed):
                await hub.publish("room", json.dumps({"t": time.time(), "i": i}))
            queue = context.Queue()
            child = context.Process(
                target=herd_main,
                args=(f"{uri}?since={since}", args.herd, args.missed, args.opening, queue),
            )
            before = hub.counters
            reads, built, frames = before.history_reads, before.replay_built, before.replay_frames
            rss = rss_kib()
            child.start()
            assert await loop.run_in_executor(None, queue.get, True, 600) == "start"
            cpu = time.process_time()

            async def live() -> None:  # the room goes on while the herd resumes
                for i in range(args.live):
                    await asyncio.sleep(0.1)
                    await hub.publish("room", json.dumps({"t": time.time(), "i": -i}))

            publishing = asyncio.create_task(live())
            _, start, end, caught_up = await loop.run_in_executor(None, queue.get, True, 900)
            used = time.process_time() - cpu
            await publishing
            await loop.run_in_executor(None, child.join, 120)
            caught_up.sort()
            counters = hub.counters
            row["herd_clients"] = args.herd
            row["herd_missed"] = args.missed
            row["herd_seconds"] = round(end - start, 2)
            row["caught_up_p50_s"] = round(statistics.median(caught_up), 2)
            row["caught_up_p99_s"] = round(caught_up[int(0.99 * (len(caught_up) - 1))], 2)
            row["resume_cpu_ms_per_client"] = round(1000 * used / args.herd, 3)
            row["server_peak_rss_mib"] = round(rss_kib() / 1024, 1)
            row["herd_rss_growth_mib"] = round((rss_kib() - rss) / 1024, 1)
            row["replayed"] = counters.replayed
            row["history_reads"] = counters.history_reads - reads
            row["replay_wire_built"] = counters.replay_built - built
            row["replay_frames"] = counters.replay_frames - frames
    return row


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--herd", type=int, default=10000)
    parser.add_argument("--missed", type=int, default=100)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--opening", type=int, default=500)
    parser.add_argument("--backends", nargs="+", default=["memory", "pubsub", "streams", "cluster"])
    args = parser.parse_args()
    if raise_open_files() < args.herd + 200:
        parser.error(f"--herd {args.herd} needs more open files than RLIMIT_NOFILE allows")

    from tests.pubsub.pubsub_helpers import LocalRedisCluster, RedisServer

    with tempfile.TemporaryDirectory(prefix="rooms-bench-") as directory:
        redis = cluster = None
        server_binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        rows = []
        try:
            for name in args.backends:
                if name == "memory":
                    make: Any = lambda: Hub(MemoryBackend(history_size=5000), wire=stamp)  # noqa: E731
                elif server_binary is None:
                    print(f"{name}: skipped (no redis-server)", file=sys.stderr)
                    continue
                elif name in ("pubsub", "streams"):
                    if redis is None:
                        redis = RedisServer(server_binary, Path(directory))
                        redis.start()
                    url = redis.url
                    make = (
                        (lambda url=url: Hub(RedisBackend(url), wire=stamp))
                        if name == "pubsub"
                        else (
                            lambda url=url: Hub(
                                RedisStreamsBackend(url, history_size=5000), wire=stamp
                            )
                        )
                    )
                else:
                    assert cli is not None
                    path = Path(directory) / "cluster"
                    path.mkdir()
                    cluster = LocalRedisCluster(server_binary, cli, path)
                    cluster.start()
                    urls = cluster.urls[:3]
                    make = lambda urls=urls: Hub(  # noqa: E731
                        RedisClusterBackend(urls, history_size=5000), wire=stamp
                    )
                row = await measure(name, make, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            if redis is not None:
                redis.stop()
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
