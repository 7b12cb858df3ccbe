"""A FastAPI room endpoint for ``uvicorn --workers 2`` (tests/asgi/test_rooms.py): each worker
process imports this module; the room travels through the Redis server named by
``SHAKEHANDS_TEST_REDIS``. A member is told which worker (process id) serves it."""

from __future__ import annotations

import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from shakehands import Hub, RedisBackend

app = FastAPI()
_hubs: list[Hub] = []


@app.websocket("/rooms/{name}")
async def room(websocket: WebSocket, name: str) -> None:
    if not _hubs:  # made in the worker's loop, on first use
        _hubs.append(Hub(RedisBackend(os.environ["SHAKEHANDS_TEST_REDIS"])))
    hub = _hubs[0]
    await websocket.accept()
    await hub.subscribe(websocket, name)
    await websocket.send_text(f"joined {name} in {os.getpid()}")
    try:
        while True:
            await hub.publish(name, await websocket.receive_text())
    except WebSocketDisconnect:
        pass
