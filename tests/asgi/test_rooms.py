"""Rooms from ASGI apps: FastAPI endpoints served through shakehands join ``Hub`` rooms.

Two uvicorn servers (as two workers would be) share a room through a real ``redis-server``; the
FastAPI endpoint hands its Starlette ``WebSocket`` to ``hub.subscribe`` as it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

import shakehands
from shakehands import Hub, MemoryBackend, RedisBackend
from shakehands.asgi import UvicornWebSocket
from shakehands.pubsub import connection_of

from ..pubsub.pubsub_helpers import RedisServer
from .asgi_helpers import UvicornThread


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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = RedisServer(executable, tmp_path)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"redis-server could not be started: {exc}")
    try:
        yield server
    finally:
        server.stop()


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
