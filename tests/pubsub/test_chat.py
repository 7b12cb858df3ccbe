"""The chat demo as users run it: ``python -m shakehands chat`` processes, real clients, Redis.

Two chat processes on different ports share a real redis-server: clients on both, in one room,
get every message exactly once, each publisher's in the order sent. Redis is killed and started
again mid-test: publications in the outage are refused to their sender, the servers reconnect and
tell their clients about the window in which messages may be missing, and messages flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

import shakehands

from ..helpers import HOST, free_port
from .pubsub_helpers import ChatProcess, RedisServer


async def join(uri: str) -> tuple[Any, dict[str, Any]]:
    ws = await shakehands.connect(uri)
    joined = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert joined["type"] == "joined"
    return ws, joined


async def events(ws: Any, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        return [json.loads(await ws.recv()) for _ in range(count)]


@contextlib.asynccontextmanager
async def shakehands_process(arguments: list[str]) -> AsyncIterator[subprocess.Popen[str]]:
    """``python -m shakehands`` with ``arguments`` (output piped, as text), stopped with SIGTERM
    at the end: it must exit with 0 (its stderr in the message)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "shakehands", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.to_thread(process.communicate, timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, err


async def read_until(stream: Any, predicate: Any, timeout: float = 30) -> str:
    """Read lines until ``predicate(text so far)``; workers' lines may interleave on one pipe."""
    text = ""
    async with asyncio.timeout(timeout):
        while not predicate(text):
            line = await asyncio.to_thread(stream.readline)
            if not line:
                break
            text += line
    return text


async def quiet(ws: Any, seconds: float = 0.3) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await ws.recv()
    except TimeoutError:
        return True
    return False


async def test_two_processes_share_a_room_through_redis(
    chats_over_redis: tuple[ChatProcess, ChatProcess],
) -> None:
    first, second = chats_over_redis
    clients = []
    for k in range(6):
        server = first if k % 2 == 0 else second
        clients.append(await join(server.uri("room", f"user{k}")))
    elsewhere, _ = await join(first.uri("other"))
    assert len({joined["server"] for _, joined in clients}) == 2

    per_client = 15

    async def talk(ws: Any, k: int) -> None:
        for i in range(per_client):
            await ws.send(f"{k}:{i}")

    await asyncio.gather(*(talk(ws, k) for k, (ws, _) in enumerate(clients)))
    total = per_client * len(clients)
    orders = []
    for ws, _ in clients:
        got = await events(ws, total)
        assert all(event["type"] == "message" and event["room"] == "room" for event in got)
        texts = [event["text"] for event in got]
        # Exactly once each.
        assert Counter(texts) == Counter(f"{k}:{i}" for k in range(6) for i in range(per_client))
        # In publish order per publisher, with the publisher's id and name.
        for k, (_, joined) in enumerate(clients):
            mine = [event for event in got if event["id"] == joined["id"]]
            assert [event["text"] for event in mine] == [f"{k}:{i}" for i in range(per_client)]
            assert all(event["name"] == f"user{k}" for event in mine)
        orders.append(texts)
        assert await quiet(ws)
    assert all(order == orders[0] for order in orders)  # one order for the whole room
    assert await quiet(elsewhere)
    for ws, _ in clients:
        await ws.close()
    await elsewhere.close()


async def test_redis_restart_mid_chat(
    redis_server: RedisServer, chats_over_redis: tuple[ChatProcess, ChatProcess]
) -> None:
    first, second = chats_over_redis
    a, _ = await join(first.uri("ops", "a"))
    b, _ = await join(second.uri("ops", "b"))

    await a.send("before")
    for ws in (a, b):
        assert [e["text"] for e in await events(ws, 1)] == ["before"]

    redis_server.stop()
    # Each publication in the outage is refused to its sender, never silently lost.
    for ws, text in ((a, "during a"), (b, "during b")):
        await ws.send(text)
        (reply,) = await events(ws, 1)
        assert reply["type"] == "error" and reply["text"] == text
    await asyncio.sleep(0.5)

    redis_server.start()
    # Both servers reconnect and report the lost window to their clients.
    for ws in (a, b):
        (gap,) = await events(ws, 1, timeout=60)
        assert gap["type"] == "gap" and gap["until"] > gap["since"] and gap["seconds"] > 0.3

    for ws, text in ((b, "after b"), (a, "after a")):
        await ws.send(text)
    orders = []
    for ws in (a, b):
        got = await events(ws, 2)
        assert all(e["type"] == "message" for e in got)
        orders.append([e["text"] for e in got])
        assert await quiet(ws)
    assert sorted(orders[0]) == ["after a", "after b"] and orders[0] == orders[1]
    await a.close()
    await b.close()
    for process in (first, second):
        log = process.stop()
        assert "lost the connection to Redis" in log
        assert "reconnected to Redis" in log


async def test_in_memory_chat_page_rooms_and_errors(chat_processes: list[ChatProcess]) -> None:
    chat = ChatProcess()
    chat_processes.append(chat)

    def get(path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection(HOST, chat.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    status, body = await asyncio.to_thread(get, "/")
    assert status == 200 and "shakehands chat" in body and "new WebSocket" in body
    status, body = await asyncio.to_thread(get, "/kitchen")
    assert status == 200 and "shakehands chat" in body
    status, _ = await asyncio.to_thread(get, "/no%20spaces")
    assert status == 404
    with pytest.raises(shakehands.InvalidStatus):
        await shakehands.connect(f"ws://{HOST}:{chat.port}/a/b")

    one, joined_one = await join(chat.uri("kitchen", "one"))
    two, joined_two = await join(f"ws://{HOST}:{chat.port}/kitchen")
    assert joined_two["name"].startswith("guest-")
    lobby, joined_lobby = await join(f"ws://{HOST}:{chat.port}/")
    assert joined_lobby["room"] == "lobby"
    await one.send("héllo")
    for ws in (one, two):
        (event,) = await events(ws, 1)
        assert event == {
            "type": "message",
            "room": "kitchen",
            "id": joined_one["id"],
            "name": "one",
            "text": "héllo",
            "offset": 1,
            "epoch": joined_one["epoch"],
        }
    await two.send(b"binary")
    (error,) = await events(two, 1)
    assert error["type"] == "error"
    assert await quiet(one) and await quiet(lobby)
    for ws in (one, two, lobby):
        await ws.close()


async def test_workers_share_one_port(redis_server: RedisServer) -> None:
    port = free_port()
    command = ["chat", "--port", str(port), "--redis", redis_server.url, "--workers", "2"]
    async with shakehands_process(command) as process:
        assert process.stdout is not None
        text = await read_until(
            process.stdout, lambda t: t.count("Chat server on") == 2 and "Started 2" in t
        )
        assert text.count("Chat server on") == 2 and "Started 2 workers" in text, text
        clients = [await join(f"ws://{HOST}:{port}/hall") for _ in range(16)]
        # SO_REUSEPORT spreads connections over both processes (hash of the client's port).
        assert len({joined["server"] for _, joined in clients}) == 2
        await clients[0][0].send("to everyone")
        for ws, _ in clients:
            (event,) = await events(ws, 1)
            assert event["text"] == "to everyone"
            await ws.close()


@pytest.mark.parametrize("command", [["echo"], []])
async def test_workers_for_echo_and_the_demo(command: list[str]) -> None:
    port = free_port()
    async with shakehands_process([*command, "--port", str(port), "--workers", "2"]) as process:
        assert process.stdout is not None
        text = await read_until(process.stdout, lambda t: t.count(str(port)) == 3)
        assert "Started 2 workers" in text and text.count(str(port)) == 3, text
        for _ in range(4):
            async with shakehands.connect(f"ws://{HOST}:{port}/") as ws:
                if command == ["echo"]:
                    await ws.send("ping")
                    assert await ws.recv() == "ping"
                else:
                    assert await ws.recv() == "滴水之恩当以涌泉相报"


def test_workers_must_be_positive() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shakehands", "echo", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--workers must be at least 1" in result.stderr


async def test_history_size_and_age_options() -> None:
    """``--history-size`` and ``--history-age`` bound what a reconnecting client gets back."""
    chat = ChatProcess("--history-size", "2", "--history-age", "60")
    try:
        ws, joined = await join(chat.uri("kept", "ann"))
        for text in ("one", "two", "three", "four"):
            await ws.send(text)
        sent = await events(ws, 4)
        await ws.close()
        assert [event["offset"] for event in sent] == [1, 2, 3, 4]
        epoch = joined["epoch"]
        # Two messages kept: resuming after "two" gets "three" and "four" back...
        ws = await shakehands.connect(chat.uri("kept") + f"?since=2&epoch={epoch}")
        *replayed, joined_again = await events(ws, 3)
        assert [event["text"] for event in replayed] == ["three", "four"]
        assert joined_again["type"] == "joined" and joined_again["replayed"] == 2
        assert await quiet(ws)
        await ws.close()
        # ... resuming after "one" cannot be served whole ("two" is gone): it is told so, and
        # goes on from the last message.
        ws = await shakehands.connect(chat.uri("kept") + f"?since=1&epoch={epoch}")
        joined_again, lost = await events(ws, 2)
        assert joined_again["type"] == "joined" and joined_again["replayed"] == 0
        assert lost == {"type": "history_lost", "reason": "trimmed", "offset": 4, "epoch": epoch}
        assert await quiet(ws)
        await ws.close()
    finally:
        assert "Traceback" not in chat.stop()

    chat = ChatProcess("--history-age", "0.5")
    try:
        ws, joined = await join(chat.uri("brief"))
        await ws.send("soon gone")
        (sent,) = await events(ws, 1)
        await ws.close()
        await asyncio.sleep(1.0)
        ws = await shakehands.connect(chat.uri("brief") + f"?since=0&epoch={joined['epoch']}")
        joined_again, lost = await events(ws, 2)
        assert joined_again["replayed"] == 0
        assert lost["type"] == "history_lost" and lost["reason"] == "trimmed"
        assert await quiet(ws)
        await ws.close()
    finally:
        assert "Traceback" not in chat.stop()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--history-size", "-1"], "history_size must be 0 or more"),
        (["--history-age", "-5"], "history_age must be 0 or more seconds"),
        (["--history-size", "many"], "invalid int value"),
        (["--redis", "redis://127.0.0.1:1/0", "--history-size", "0"], "must be 1 or more"),
    ],
)
def test_history_options_out_of_range(args: list[str], error: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shakehands", "chat", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and error in result.stderr, result
    assert "Traceback" not in result.stderr
