"""The chat demo resumes: ``python -m shakehands chat --redis`` processes, real clients that
reconnect as the page does (``?since=<offset>&epoch=<epoch>``), a chat process killed and
restarted mid-conversation. Every client sees every message exactly once, in order: the test
clients do not deduplicate, so the servers must not send anything twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest

import shakehands

from .pubsub_helpers import ChatProcess, RedisServer
from .test_chat import events, join

TALK = 60


class Reader:
    """A chat client that keeps what it receives and reconnects with its last position."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    def uri(self, server: ChatProcess) -> str:
        uri = server.uri("room", self.name)
        if self.messages:
            last = self.messages[-1]
            uri += f"&since={last['offset']}&epoch={last['epoch']}"
        return uri

    async def connect(self, server: ChatProcess) -> None:
        self.ws = await shakehands.connect(self.uri(server))
        self.task = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: Any) -> None:
        with contextlib.suppress(shakehands.ConnectionClosed):
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "message":
                    self.messages.append(message)
                elif message["type"] != "joined":
                    self.notices.append(message)

    async def disconnect(self) -> None:
        await self.ws.close()
        assert self.task is not None
        await self.task

    async def wait_closed(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)

    async def wait_for(self, count: int, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                await asyncio.sleep(0.01)


async def test_chat_process_killed_and_restarted_mid_conversation(
    redis_server: RedisServer,
    chat_processes: list[ChatProcess],
    chats_over_redis: tuple[ChatProcess, ChatProcess],
) -> None:
    first, second = chats_over_redis
    talker, _ = await join(second.uri("room", "talker"))
    on_first, on_second = Reader("one"), Reader("two")
    await on_first.connect(first)
    await on_second.connect(second)
    await asyncio.sleep(0.2)  # both subscribed (their "joined" came)

    sent = 0

    async def talk(until: int) -> None:
        nonlocal sent
        while sent < until:
            sent += 1
            await talker.send(f"line {sent}")
            await asyncio.sleep(0.01)

    await talk(15)
    await on_first.wait_for(10)
    first.kill()  # mid-conversation: no close frames, no goodbye
    await on_first.wait_closed()
    await talk(30)  # while "one" is away
    restarted = ChatProcess("--redis", redis_server.url, port=first.port)
    chat_processes.append(restarted)
    await on_first.connect(restarted)
    await talk(40)
    # (a) a client moving to another process, mid-conversation.
    await on_second.wait_for(35)
    await on_second.disconnect()
    await talk(50)
    await on_second.connect(restarted)
    await talk(TALK)

    for reader in (on_first, on_second):
        await reader.wait_for(TALK)
        await asyncio.sleep(0.3)  # nothing more comes
        assert [m["text"] for m in reader.messages] == [f"line {i}" for i in range(1, TALK + 1)]
        assert [m["offset"] for m in reader.messages] == list(range(1, TALK + 1))
        assert len({m["epoch"] for m in reader.messages}) == 1
        assert reader.notices == []
        await reader.disconnect()
    await talker.close()


async def test_in_memory_chat_restarted_tells_the_client_history_is_lost(
    chat_processes: list[ChatProcess],
) -> None:
    chat = ChatProcess()
    chat_processes.append(chat)
    client, joined = await join(chat.uri("room", "a"))
    assert joined["offset"] == 0 and joined["replayed"] == 0
    await client.send("hello")
    (message,) = await events(client, 1)
    assert message["offset"] == 1 and message["epoch"] == joined["epoch"]
    chat.kill()
    restarted = ChatProcess(port=chat.port)
    chat_processes.append(restarted)
    uri = restarted.uri("room", "a") + f"&since=1&epoch={message['epoch']}"
    again = await shakehands.connect(uri)
    joined_again, lost = await events(again, 2)
    assert joined_again["type"] == "joined" and joined_again["epoch"] != message["epoch"]
    assert lost == {
        "type": "history_lost",
        "reason": "epoch",
        "offset": 0,
        "epoch": joined_again["epoch"],
    }
    await again.send("still works")
    assert (await events(again, 1))[0]["text"] == "still works"
    await again.close()


async def test_chat_resume_in_memory_within_one_process(chat_processes: list[ChatProcess]) -> None:
    chat = ChatProcess()
    chat_processes.append(chat)
    writer, _ = await join(chat.uri("room", "w"))
    reader = Reader("r")
    await reader.connect(chat)
    await asyncio.sleep(0.2)
    for i in range(5):
        await writer.send(f"m{i}")
    await reader.wait_for(5)
    await reader.disconnect()
    for i in range(5, 9):
        await writer.send(f"m{i}")
    await events(writer, 9)
    await reader.connect(chat)
    await reader.wait_for(9)
    assert [m["text"] for m in reader.messages] == [f"m{i}" for i in range(9)]
    assert [m["offset"] for m in reader.messages] == list(range(1, 10))
    await writer.close()
    await reader.disconnect()


@pytest.mark.parametrize(
    "query",
    [
        "since=5",
        "epoch=abc",
        "since=x&epoch=abc",
        "since=-1&epoch=abc",
        "since=1&epoch=a%20b",
        "since=1&since=2&epoch=abc",
        "since=99999999999999999999&epoch=abc",
    ],
)
async def test_chat_refuses_a_malformed_since(
    query: str, chat_processes: list[ChatProcess]
) -> None:
    if not chat_processes:
        chat_processes.append(ChatProcess())
    chat = chat_processes[0]
    client = await shakehands.connect(f"ws://127.0.0.1:{chat.port}/room?{query}")
    (error,) = await events(client, 1)
    assert error["type"] == "error" and "malformed" in error["error"]
    with pytest.raises(shakehands.ConnectionClosed) as info:
        await client.recv()
    assert info.value.code == 1008
    # The server carries on.
    other, joined = await join(chat.uri("room", "fine"))
    assert joined["type"] == "joined"
    await other.close()
