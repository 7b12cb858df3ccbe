"""A thundering herd: 2 000 clients resuming from the same position at once, while the topic
goes on publishing. Every client gets every publication once, in order, and the server's work is
bounded by the publications replayed, not by clients x publications: the hub reads each page of
history once per wave of readers, builds each wire message once and frames each once (issue 16
items 2 and 6; bench/rooms.py --herd 10000 measures memory and time at full size)."""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import pytest

import shakehands
from shakehands.pubsub import Hub, MemoryBackend, Position

from .test_history import Counting, receive, resuming_server

HOST = "127.0.0.1"
CLIENTS = 2000
MISSED = 50
LIVE = 5


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_a_herd_resuming_at_once_frames_each_publication_once() -> None:
    raise_open_files(2 * CLIENTS + 200)
    wire = Counting()
    async with (
        Hub(MemoryBackend(), wire=wire) as hub,
        resuming_server(hub) as port,
    ):
        await hub.publish("herd", "first")
        since = await hub.backend.head("herd")  # type: ignore[attr-defined]
        for i in range(MISSED):
            await hub.publish("herd", f"m{i}")
        wire.calls = 0
        # Clients open in waves of 200 at a time (the kernel's accept queue), compression
        # off: connections without a compression context share frames.
        gate = asyncio.Semaphore(200)
        opened: list[Any] = []

        async def one() -> Any:
            async with gate:
                client = await shakehands.connect(
                    f"ws://{HOST}:{port}/herd?since={since}", compression=None, open_timeout=60
                )
                opened.append(client)
                return client

        async def publish_live() -> None:
            for i in range(LIVE):
                await asyncio.sleep(0.2)  # while the herd replays
                await hub.publish("herd", f"live{i}")

        clients, _ = await asyncio.gather(
            asyncio.gather(*(one() for _ in range(CLIENTS))), publish_live()
        )
        try:
            expected = [f"m{i}" for i in range(MISSED)] + [f"live{i}" for i in range(LIVE)]
            for client in clients:
                got = await receive(client, MISSED + LIVE + 1, timeout=120)
                texts = [m["text"] for m in got if "text" in m]
                offsets = [m["offset"] for m in got if "text" in m]
                assert texts == expected
                assert offsets == list(range(2, MISSED + LIVE + 2))
                (notice,) = [m for m in got if "subscribed" in m]
                assert notice["lost"] is None and notice["replayed"] >= 1
        finally:
            await asyncio.gather(*(client.close() for client in opened))
        counters = hub.counters
        replayed = counters.replayed
        assert counters.resumed == CLIENTS and counters.history_lost == 0
        # Work per publication, not per client: each replayed publication was built once and
        # framed once (live ones: once each too), however many clients it was replayed to.
        assert replayed >= CLIENTS * MISSED
        assert counters.replay_built <= MISSED + LIVE
        assert counters.replay_frames <= MISSED + LIVE
        assert wire.calls <= 2 * (MISSED + LIVE)  # live publications: once live, once replayed
        print(
            f"\nherd of {CLIENTS}: {replayed} replayed deliveries from {counters.history_reads} "
            f"history reads, {counters.replay_built} wire messages built, "
            f"{counters.replay_frames} frames"
        )


class GatedBackend(MemoryBackend):
    """History reads wait at a gate (a slow Redis), so that they overlap subscriptions."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0

    async def read_history(self, topic: str, since: Position, limit: int) -> Any:
        self.reads += 1
        await self.gate.wait()
        return await super().read_history(topic, since, limit)


async def test_a_shared_read_is_not_complete_for_a_later_subscriber() -> None:
    """A subscribes and its history read starts; a publication comes; B subscribes from the
    same position and shares A's read, which does not hold that publication (nor does B's
    live path: it came before B subscribed). B reads on from the end of the shared page, and
    both get every publication once, in order."""
    backend = GatedBackend()
    async with (
        Hub(backend, wire=Counting()) as hub,
        resuming_server(hub) as port,
    ):
        await hub.publish("race", "m1")
        since = await backend.head("race")
        await hub.publish("race", "m2")
        backend.gate.clear()
        a = await shakehands.connect(f"ws://{HOST}:{port}/race?since={since}")
        async with asyncio.timeout(10):
            while backend.reads < 1:  # A's read is under way
                await asyncio.sleep(0.01)
        await hub.publish("race", "m3")
        b = await shakehands.connect(f"ws://{HOST}:{port}/race?since={since}")
        async with asyncio.timeout(10):
            while hub.counters.resumed < 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert backend.reads == 1  # B waits for A's read
        backend.gate.set()
        for client in (a, b):
            got = await receive(client, 3)
            assert [m.get("text") for m in got if "text" in m] == ["m2", "m3"]
        # A got m3 live (held during its replay); B read on from m2: one read more.
        assert backend.reads == 2
        await hub.publish("race", "m4")
        assert [m["text"] for m in await receive(a, 1)] == ["m4"]
        assert [m["text"] for m in await receive(b, 1)] == ["m4"]
        await a.close()
        await b.close()
