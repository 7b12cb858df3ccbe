"""Rooms from ASGI apps: FastAPI endpoints served through shakehands join ``Hub`` rooms.

Two uvicorn servers in one process, and ``uvicorn --workers 2`` (two processes), share a room
through a real ``redis-server``; the FastAPI endpoint hands its Starlette ``WebSocket`` to
``hub.subscribe`` as it is.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

import shakehands
from shakehands import Hub, MemoryBackend, RedisBackend
from shakehands.asgi import UvicornWebSocket
from shakehands.pubsub import connection_of

from ..helpers import HOST, free_port
from ..pubsub.pubsub_helpers import RedisServer
from .asgi_helpers import UvicornThread

ROOT = Path(__file__).resolve().parent.parent.parent


def room_app(backend: Any) -> FastAPI:
    """``/rooms/{name}``: what a client sends is published to the room; the room's messages
    come to every member, in every process sharing the backend. The Hub is made in the server's
    loop, on first use."""
    app = FastAPI()
    hubs: list[Hub] = []

    @app.websocket("/rooms/{name}")
    async def room(websocket: WebSocket, name: str) -> None:
        if not hubs:
            hubs.append(Hub(backend()))
        hub = hubs[0]
        await websocket.accept()
        await hub.subscribe(websocket, name)
        await websocket.send_text(f"joined {name}")
        try:
            while True:
                await hub.publish(name, await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return app


async def test_room_in_one_process() -> None:
    async with (
        UvicornThread(room_app(MemoryBackend), UvicornWebSocket) as server,
        shakehands.connect(server.uri("/rooms/a")) as alice,
        shakehands.connect(server.uri("/rooms/a")) as bob,
        shakehands.connect(server.uri("/rooms/b")) as carol,
    ):
        for ws, room in ((alice, "a"), (bob, "a"), (carol, "b")):
            assert await ws.recv() == f"joined {room}"
        await alice.send("hello a")
        assert await alice.recv() == "hello a"
        assert await bob.recv() == "hello a"
        await carol.send("hello b")
        assert await carol.recv() == "hello b"
        await bob.send("bye")
        assert await alice.recv() == "bye"
        assert await bob.recv() == "bye"


async def test_room_across_two_servers_through_redis(redis_server: RedisServer) -> None:
    pytest.importorskip("redis")

    def backend() -> RedisBackend:
        return RedisBackend(redis_server.url)

    async with (
        UvicornThread(room_app(backend), UvicornWebSocket) as one,
        UvicornThread(room_app(backend), UvicornWebSocket) as two,
        shakehands.connect(one.uri("/rooms/lobby")) as alice,
        shakehands.connect(two.uri("/rooms/lobby")) as bob,
    ):
        assert await alice.recv() == "joined lobby"
        assert await bob.recv() == "joined lobby"
        # hub.subscribe was awaited before "joined": both Redis subscriptions are live.
        await alice.send("from one")
        assert await bob.recv() == "from one"
        assert await alice.recv() == "from one"
        await bob.send("from two")
        assert await alice.recv() == "from two"
        assert await bob.recv() == "from two"


async def test_room_across_two_uvicorn_workers(redis_server: RedisServer) -> None:
    """``uvicorn --workers 2``: two processes accepting on one socket share a room through Redis.
    Clients connect until both workers serve one (each says its process id; bursts, 30 s at most),
    then a message sent to one worker reaches the member served by the other."""
    pytest.importorskip("redis")
    port = free_port()
    env = dict(os.environ, SHAKEHANDS_TEST_REDIS=redis_server.url)
    command = [
        sys.executable, "-m", "uvicorn", "tests.asgi.worker_app:app",
        "--host", HOST, "--port", str(port), "--workers", "2",
        "--ws", "shakehands.asgi:UvicornWebSocket", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
    members: dict[str, shakehands.ClientConnection] = {}
    spare: list[shakehands.ClientConnection] = []
    try:
        uri = f"ws://{HOST}:{port}/rooms/lobby"
        for _ in range(200):  # the workers start (10 s at most)
            try:
                first = await shakehands.connect(uri)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                await asyncio.sleep(0.05)
        else:
            pytest.fail("uvicorn --workers 2 did not start")
        spare.append(first)

        async def join(ws: shakehands.ClientConnection) -> None:
            joined = await ws.recv()
            assert isinstance(joined, str) and joined.startswith("joined lobby in ")
            pid = joined.rpartition(" ")[2]
            if pid in members:
                spare.append(ws)
            else:
                members[pid] = ws

        await join(first)
        # The second worker may still be starting (a loaded machine: seconds), and an idle
        # worker tends to win every accept of sequential connects: connect in bursts of 8,
        # for 30 s at most.
        deadline = asyncio.get_running_loop().time() + 30
        while len(members) < 2 and asyncio.get_running_loop().time() < deadline:
            burst = await asyncio.gather(*(shakehands.connect(uri) for _ in range(8)))
            await asyncio.gather(*(join(ws) for ws in burst))
            if len(members) < 2:
                await asyncio.sleep(0.25)
        assert len(members) == 2, "every connection went to one worker"
        one, two = members.values()
        # The spare members (all in the room too) are not read from: drop them first.
        for ws in spare:
            if ws not in (one, two):
                await ws.close()
        await one.send("across workers")
        assert await two.recv() == "across workers"
        assert await one.recv() == "across workers"
        await two.send("and back")
        assert await one.recv() == "and back"
    finally:
        for ws in {*members.values(), *spare}:
            await ws.close()
        process.terminate()
        process.wait(15)
        if process.stderr:
            process.stderr.close()


def test_connection_of_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match="not a shakehands connection"):
        connection_of(object())
    with pytest.raises(TypeError):
        connection_of({"type": "websocket", "extensions": {"websocket.http.response": {}}})


async def test_reference_websocket_cannot_join() -> None:
    """Under uvicorn's own implementation there is no connection to subscribe: a TypeError."""
    app = FastAPI()

    @app.websocket("/")
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            connection_of(websocket)
        except TypeError as exc:
            await websocket.send_text(type(exc).__name__)
        await websocket.close()

    async with (
        UvicornThread(app, "websockets-sansio") as server,
        shakehands.connect(server.uri("/")) as ws,
    ):
        assert await ws.recv() == "TypeError"
