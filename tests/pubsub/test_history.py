"""History and resume on the in-memory backend: positions, replay then live with no gap and no
duplicate, :class:`HistoryLost` for every ``since`` that cannot be served, bad positions.

Subscribers are real clients on real servers (127.0.0.1); the application under test frames
each publication as JSON with its offset, through ``Hub(wire=...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

import pytest

import shakehands
from shakehands.pubsub import (
    HistoryLost,
    Hub,
    HubBackend,
    MemoryBackend,
    Position,
    Subscription,
)
from shakehands.pubsub.hub import REPLAY_PAGE

HOST = "127.0.0.1"


def as_json(topic: str, position: Position | None, message: str | bytes) -> str:
    """The test application's wire format: the message with its epoch and offset."""
    assert position is not None and isinstance(message, str)
    return json.dumps({"epoch": position.epoch, "offset": position.offset, "text": message})


class Counting:
    """A wire function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, topic: str, position: Position | None, message: str | bytes) -> str:
        self.calls += 1
        return as_json(topic, position, message)


@contextlib.asynccontextmanager
async def resuming_server(hub: Hub, api: str = "coroutine") -> AsyncIterator[int]:
    """Clients connect to ``/<topic>?since=<epoch>:<offset>``; the server sends
    ``{"subscribed": position, "replayed": n, "lost": reason}`` once the subscription is live,
    then the topic's publications (those published by the test)."""

    def notice(result: Subscription) -> str:
        return json.dumps(
            {
                "subscribed": str(result.position) if result.position else None,
                "replayed": result.replayed,
                "lost": result.lost.reason if result.lost else None,
            }
        )

    def parse(ws: Any) -> tuple[str, Position | None]:
        request = ws.request
        assert request is not None
        since = parse_qs(request.query).get("since", [])
        return request.path.split("?")[0][1:], Position.parse(since[0]) if since else None

    async def handler(ws: shakehands.ServerConnection) -> None:
        try:
            topic, since = parse(ws)
        except ValueError as exc:
            await ws.close(1008, str(exc)[:100])
            return
        result = await hub.subscribe(ws, topic, since=since)
        await ws.send(notice(result))
        await ws.wait_closed()

    class Listener(shakehands.Listener):
        def on_open(self, ws: shakehands.CallbackConnection) -> None:
            try:
                topic, since = parse(ws)
            except ValueError as exc:
                ws.close(1008, str(exc)[:100])
                return
            future = hub.subscribe(ws, topic, since=since)
            future.add_done_callback(lambda f: ws.send(notice(f.result())))

    context: Any = (
        shakehands.serve(handler, HOST, 0)
        if api == "coroutine"
        else shakehands.serve_callbacks(Listener(), HOST, 0)
    )
    async with context as server:
        yield server.port


@contextlib.asynccontextmanager
async def two_hubs(
    backend_a: HubBackend, backend_b: HubBackend
) -> AsyncIterator[tuple[Hub, Hub, int, int]]:
    """Two hubs on one bus as two server processes have them (a backend each, the
    :func:`as_json` wire), each behind a :func:`resuming_server`: ``(hub_a, hub_b, port_a,
    port_b)``."""
    async with (
        Hub(backend_a, wire=as_json) as hub_a,
        Hub(backend_b, wire=as_json) as hub_b,
        resuming_server(hub_a) as port_a,
        resuming_server(hub_b) as port_b,
    ):
        yield hub_a, hub_b, port_a, port_b


async def subscribed(port: int, topic: str) -> Any:
    """A client of ``topic`` on the :func:`resuming_server` at ``port``, its subscription live
    (the notice read)."""
    client = await shakehands.connect(f"ws://{HOST}:{port}/{topic}")
    await receive(client, 1)
    return client


async def receive(client: Any, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        return [json.loads(await client.recv()) for _ in range(count)]


async def silent(client: Any) -> bool:
    try:
        async with asyncio.timeout(0.3):
            await client.recv()
    except TimeoutError:
        return True
    return False


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


async def test_offsets_increase_per_topic_and_epochs_differ() -> None:
    seen: list[tuple[str, Position | None]] = []

    def wire(topic: str, position: Position | None, message: str | bytes) -> str | bytes:
        seen.append((topic, position))
        return message

    async with Hub(wire=wire) as hub, resuming_server(hub) as port:
        a = await shakehands.connect(f"ws://{HOST}:{port}/a")
        b = await shakehands.connect(f"ws://{HOST}:{port}/b")
        await receive(a, 1)
        await receive(b, 1)
        for i in range(3):
            await hub.publish("a", f"a{i}")
        await hub.publish("b", "b0")
        offsets_a = [p.offset for t, p in seen if t == "a" and p]
        offsets_b = [p.offset for t, p in seen if t == "b" and p]
        assert offsets_a == [1, 2, 3] and offsets_b == [1]
        epochs = {t: {p.epoch for u, p in seen if u == t and p} for t in "ab"}
        assert len(epochs["a"]) == len(epochs["b"]) == 1 and epochs["a"] != epochs["b"]
        assert await hub.backend.head("a") == Position(epochs["a"].pop(), 3)  # type: ignore[attr-defined]
        await a.close()
        await b.close()


async def test_wire_is_called_once_per_publication_not_per_subscriber() -> None:
    wire = Counting()
    async with Hub(wire=wire) as hub, resuming_server(hub) as port:
        clients = [await shakehands.connect(f"ws://{HOST}:{port}/room") for _ in range(5)]
        for client in clients:
            await receive(client, 1)
        for i in range(10):
            await hub.publish("room", f"m{i}")
        for client in clients:
            got = await receive(client, 10)
            assert [m["offset"] for m in got] == list(range(1, 11))
            assert [m["text"] for m in got] == [f"m{i}" for i in range(10)]
        assert wire.calls == 10
        await hub.publish("nobody-listens", "x")
        assert wire.calls == 10  # no subscriber in this process: nothing to build
        for client in clients:
            await client.close()


def test_position_parse_and_str_round_trip() -> None:
    position = Position("abc_DEF-09", 12345)
    assert Position.parse(str(position)) == position
    assert Position.parse("e:0") == Position("e", 0)
    assert Position.parse(f"e:{2**63 - 1}").offset == 2**63 - 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "42",
        ":42",
        "epoch:",
        "epoch:-1",
        "epoch:1.5",
        "epoch:0x10",
        "epoch: 1",
        "ep och:1",
        "épo:1",
        "e:" + "9" * 20,
        "e" * 65 + ":1",
        "e:1\n",
        "a:b:c",
    ],
)
def test_malformed_positions_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        Position.parse(text)


def test_positions_are_validated_when_built() -> None:
    for epoch, offset in [("e", -1), ("e", True), ("e", 2**63), ("", 1), ("e/", 1), ("e", 1.0)]:
        with pytest.raises(ValueError, match="malformed"):
            Position(epoch, offset)  # type: ignore[arg-type]


async def test_subscribe_refuses_a_since_that_is_not_a_position() -> None:
    async def handler(ws: shakehands.ServerConnection) -> None:
        with pytest.raises(TypeError, match="Position"):
            hub.subscribe(ws, "t", since="e:1")  # type: ignore[arg-type]
        await ws.send("checked")

    async with Hub() as hub, shakehands.serve(handler, HOST, 0) as server:
        async with shakehands.connect(f"ws://{HOST}:{server.port}/") as client:
            assert await client.recv() == "checked"
        assert hub.topics() == set()


def test_history_bounds_are_validated() -> None:
    with pytest.raises(ValueError):
        MemoryBackend(history_size=-1)
    with pytest.raises(ValueError):
        MemoryBackend(history_age=float("nan"))


# ---------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["coroutine", "callback"])
async def test_resume_replays_what_was_missed_then_live(api: str) -> None:
    async with Hub(wire=as_json) as hub, resuming_server(hub, api) as port:
        first = await shakehands.connect(f"ws://{HOST}:{port}/news")
        joined = await receive(first, 1)
        assert joined[0]["subscribed"].endswith(":0") and joined[0]["lost"] is None
        for i in range(1, 4):
            await hub.publish("news", f"n{i}")
        got = await receive(first, 3)
        last = Position(got[-1]["epoch"], got[-1]["offset"])
        await first.close()  # away while n4..n7 are published
        await wait_for(lambda: not hub.subscribers("news"))
        for i in range(4, 8):
            await hub.publish("news", f"n{i}")
        again = await shakehands.connect(f"ws://{HOST}:{port}/news?since={last}")
        replay = await receive(again, 5)
        assert [m.get("text") for m in replay[:4]] == ["n4", "n5", "n6", "n7"]
        assert [m.get("offset") for m in replay[:4]] == [4, 5, 6, 7]
        assert replay[4] == {"subscribed": f"{last.epoch}:7", "replayed": 4, "lost": None}
        await hub.publish("news", "n8")
        assert (await receive(again, 1))[0]["text"] == "n8"
        assert await silent(again)
        # Resuming from the last position: nothing to replay, nothing lost.
        await again.close()
        third = await shakehands.connect(f"ws://{HOST}:{port}/news?since={last.epoch}:8")
        assert (await receive(third, 1))[0] == {
            "subscribed": f"{last.epoch}:8",
            "replayed": 0,
            "lost": None,
        }
        await third.close()
        assert hub.counters.resumed == 2 and hub.counters.replayed == 4


async def test_publications_during_the_replay_arrive_once_in_order() -> None:
    """The race: a long replay (several pages, the loop turns between them) while a publisher
    keeps publishing; the subscriber sees every offset once, in order, across the hand-over."""
    backend = MemoryBackend(history_size=5000)
    async with Hub(backend, wire=as_json) as hub, resuming_server(hub) as port:
        backlog = 4 * REPLAY_PAGE + 17
        for i in range(backlog):
            await hub.publish("race", f"m{i + 1}")
        epoch = (await backend.head("race")).epoch
        published = backlog
        stop = asyncio.Event()

        async def publisher() -> None:
            nonlocal published
            while not stop.is_set() and published < backlog + 2000:
                published += 1
                await hub.publish("race", f"m{published}")
                await asyncio.sleep(0)

        task = asyncio.create_task(publisher())
        await asyncio.sleep(0)
        during_start = published
        client = await shakehands.connect(f"ws://{HOST}:{port}/race?since={epoch}:10")
        messages: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while True:
                message = json.loads(await client.recv())
                if "subscribed" in message:
                    notice = message
                    break
                messages.append(message)
        during_end = published
        stop.set()
        await task
        # The publisher ran while the replay was under way.
        assert during_end > during_start + 5
        messages += await receive(client, published - 10 - len(messages))
        assert [m["offset"] for m in messages] == list(range(11, published + 1))
        assert [m["text"] for m in messages] == [f"m{i}" for i in range(11, published + 1)]
        assert notice["lost"] is None and notice["replayed"] >= backlog - 10
        assert await silent(client)
        await client.close()


async def test_two_hubs_do_not_share_epochs_so_a_restart_is_history_lost() -> None:
    async with Hub(wire=as_json) as old:
        await old.publish("t", "before the restart")
        position = await old.backend.head("t")  # type: ignore[attr-defined]
    # A new process: a new MemoryBackend, a new epoch.
    async with Hub(wire=as_json) as hub, resuming_server(hub) as port:
        client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={position}")
        notice = (await receive(client, 1))[0]
        assert notice["lost"] == "epoch" and notice["replayed"] == 0
        assert notice["subscribed"] != str(position)
        # Live delivery goes on.
        await hub.publish("t", "after")
        assert (await receive(client, 1))[0]["text"] == "after"
        await client.close()
        assert hub.counters.history_lost == 1


async def test_history_trimmed_by_count_is_reported() -> None:
    async with (
        Hub(MemoryBackend(history_size=10), wire=as_json) as hub,
        resuming_server(hub) as port,
    ):
        for i in range(30):
            await hub.publish("t", f"m{i}")
        epoch = (await hub.backend.head("t")).epoch  # type: ignore[attr-defined]
        # Offsets 21-30 are kept: resuming from 20 is complete, from 19 is not.
        complete = await shakehands.connect(f"ws://{HOST}:{port}/t?since={epoch}:20")
        got = await receive(complete, 11)
        assert [m["offset"] for m in got[:10]] == list(range(21, 31))
        assert got[10]["lost"] is None
        trimmed = await shakehands.connect(f"ws://{HOST}:{port}/t?since={epoch}:19")
        notice = (await receive(trimmed, 1))[0]
        assert notice == {"subscribed": f"{epoch}:30", "replayed": 0, "lost": "trimmed"}
        await hub.publish("t", "live")
        for client in (complete, trimmed):
            assert (await receive(client, 1))[0]["offset"] == 31
            await client.close()


async def test_history_trimmed_by_age_is_reported() -> None:
    async with (
        Hub(MemoryBackend(history_age=0.3), wire=as_json) as hub,
        resuming_server(hub) as port,
    ):
        await hub.publish("t", "old")
        epoch = (await hub.backend.head("t")).epoch  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        await hub.publish("t", "new")
        client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={epoch}:0")
        assert (await receive(client, 1))[0]["lost"] == "trimmed"
        await client.close()
        # All of it aged out, but the offsets stand: from the last one, nothing is missing.
        await asyncio.sleep(0.5)
        client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={epoch}:2")
        assert (await receive(client, 1))[0] == {
            "subscribed": f"{epoch}:2",
            "replayed": 0,
            "lost": None,
        }
        await client.close()


async def test_a_position_from_the_future_is_history_lost_not_an_empty_replay() -> None:
    async with Hub(wire=as_json) as hub, resuming_server(hub) as port:
        await hub.publish("t", "one")
        epoch = (await hub.backend.head("t")).epoch  # type: ignore[attr-defined]
        client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={epoch}:5")
        assert (await receive(client, 1))[0] == {
            "subscribed": f"{epoch}:1",
            "replayed": 0,
            "lost": "ahead",
        }
        await client.close()


async def test_another_topics_position_cannot_read_its_history() -> None:
    async with Hub(wire=as_json) as hub, resuming_server(hub) as port:
        for i in range(5):
            await hub.publish("secret", f"s{i}")
            await hub.publish("public", f"p{i}")
        forged = await hub.backend.head("secret")  # type: ignore[attr-defined]
        forged = Position(forged.epoch, 0)
        client = await shakehands.connect(f"ws://{HOST}:{port}/public?since={forged}")
        notice = (await receive(client, 1))[0]
        assert notice["lost"] == "epoch" and notice["replayed"] == 0
        assert await silent(client)  # nothing of "secret", nothing replayed of "public"
        await client.close()


@pytest.mark.parametrize("since", ["garbage", "e:-3", "e:1e9", "%00:1"])
async def test_a_malformed_since_from_a_client_is_refused_cleanly(since: str) -> None:
    async with Hub(wire=as_json) as hub, resuming_server(hub) as port:
        client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={since}")
        with pytest.raises(shakehands.ConnectionClosed) as info:
            await client.recv()
        assert info.value.code == 1008 and "malformed" in info.value.reason
        # The server is fine.
        other = await shakehands.connect(f"ws://{HOST}:{port}/t")
        assert (await receive(other, 1))[0]["lost"] is None
        await other.close()


async def test_closing_during_the_replay_ends_it_quietly() -> None:
    async with Hub(wire=as_json) as hub, resuming_server(hub) as port:
        for _ in range(900):
            await hub.publish("t", "x" * 1000)
        epoch = (await hub.backend.head("t")).epoch  # type: ignore[attr-defined]
        client = await shakehands.connect(f"ws://{HOST}:{port}/t?since={epoch}:100")
        await client.recv()
        await client.close()
        await wait_for(lambda: not hub.topics())
        await hub.publish("t", "after")  # no one left: nothing held, nothing sent


async def test_a_resume_larger_than_the_write_buffer_is_not_dropped() -> None:
    """A replay waits for the subscriber's buffer to drain instead of dropping (the slow-client
    policy would drop a live message past 1 MiB queued)."""
    backend = MemoryBackend(history_size=3000)
    async with Hub(backend, wire=as_json) as hub, resuming_server(hub) as port:
        for i in range(3000):
            await hub.publish("big", f"{i:05d}" + "y" * 2000)  # about 6 MB of history
        epoch = (await backend.head("big")).epoch
        client = await shakehands.connect(f"ws://{HOST}:{port}/big?since={epoch}:0")
        got = await receive(client, 3001, timeout=120)
        assert [m["offset"] for m in got[:3000]] == list(range(1, 3001))
        assert got[3000]["replayed"] == 3000 and hub.counters.dropped == 0
        await client.close()


async def test_subscription_result_shapes() -> None:
    lost = HistoryLost("t", Position("e", 3), "trimmed", Position("e", 9))
    result = Subscription("t", Position("e", 9), 0, lost)
    assert result.lost is lost and result.replayed == 0


class LaggingBackend(MemoryBackend):
    """A backend whose live path lags behind its history, as Redis Streams' may (the history
    read returns entries the reader has not delivered yet): deliveries come 50 ms late."""

    async def start(self, deliver: Any, report_gap: Any) -> None:
        loop = asyncio.get_running_loop()

        def late(topic: str, message: str | bytes, position: Position | None = None) -> None:
            loop.call_later(0.05, deliver, topic, message, position)

        await super().start(late, report_gap)


async def test_a_live_path_behind_the_history_causes_no_duplicate() -> None:
    backend = LaggingBackend(history_size=5000)
    async with Hub(backend, wire=as_json) as hub, resuming_server(hub) as port:
        watcher = await shakehands.connect(f"ws://{HOST}:{port}/lag")  # keeps the topic live
        await receive(watcher, 1)
        for i in range(50):
            await hub.publish("lag", f"m{i + 1}")
        epoch = (await backend.head("lag")).epoch
        published = 50

        async def publisher() -> None:
            nonlocal published
            for _ in range(100):
                published += 1
                await hub.publish("lag", f"m{published}")
                await asyncio.sleep(0.002)

        task = asyncio.create_task(publisher())
        client = await shakehands.connect(f"ws://{HOST}:{port}/lag?since={epoch}:0")
        await task
        got = await receive(client, published + 1)
        offsets = [m["offset"] for m in got if "offset" in m]
        assert offsets == list(range(1, published + 1))
        assert await silent(client)
        assert [m["offset"] for m in await receive(watcher, published)] == offsets
        await client.close()
        await watcher.close()
