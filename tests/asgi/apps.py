"""The ASGI applications the tests serve: a Starlette app, a FastAPI app and raw ASGI endpoints.

Each app reports what it saw (the ``websocket.disconnect`` codes, the errors its ``send``
raised) on the ``events`` queue it is given: the server runs in another thread.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, WebSocketDisconnect, WebSocketException
from fastapi import WebSocket as FastAPIWebSocket
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

Events = queue.Queue[tuple[str, object]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: The subprotocols the echo endpoint speaks, by preference.
SUBPROTOCOLS = ("chat", "superchat")


def starlette_app(events: Events) -> ASGIApp:
    """A plain Starlette app; ``/raw/...`` paths go to raw ASGI endpoints (see :func:`raw`)."""

    async def echo(ws: WebSocket) -> None:
        offered = ws.scope["subprotocols"]
        await ws.accept(subprotocol=next((p for p in SUBPROTOCOLS if p in offered), None))
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                events.put(("disconnect", message["code"]))
                return
            if message.get("text") is not None:
                await ws.send_text(message["text"])
            else:
                await ws.send_bytes(message["bytes"])

    async def close(ws: WebSocket) -> None:
        await ws.accept()
        await ws.close(code=4321, reason="bye now")

    async def deny(ws: WebSocket) -> None:
        await ws.send_denial_response(PlainTextResponse("go away", status_code=403))

    async def raise_before(ws: WebSocket) -> None:
        raise RuntimeError("boom before accept")

    async def raise_after(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        raise RuntimeError("boom after accept")

    app = Starlette(
        routes=[
            WebSocketRoute("/echo", echo),
            WebSocketRoute("/close", close),
            WebSocketRoute("/deny", deny),
            WebSocketRoute("/raise-before", raise_before),
            WebSocketRoute("/raise-after", raise_after),
        ]
    )

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith("/raw/"):
            await raw(scope, receive, send, events)
        else:
            await app(scope, receive, send)

    return dispatch


async def raw(scope: Scope, receive: Receive, send: Send, events: Events) -> None:
    """Raw ASGI endpoints, for what frameworks do not let an app do (bad or late events)."""
    path = scope["path"]
    if path.startswith("/raw/scope"):
        keys = ["type", "http_version", "scheme", "path", "raw_path", "query_string"]
        seen = {key: scope[key] for key in keys}
        seen["spec_version"] = scope["asgi"]["spec_version"]
        seen["headers"] = sorted(scope["headers"])
        seen["subprotocols"] = scope["subprotocols"]
        seen["client"] = scope["client"][0]
        seen["server"] = scope["server"][0]
        seen["extensions"] = sorted(scope["extensions"])
        events.put(("scope", seen))
    assert (await receive())["type"] == "websocket.connect"
    if path == "/raw/accept-headers":
        # The 101 with the application's own headers and a subprotocol, then closed.
        headers = [(b"x-one", b"1"), (b"X-Two", b"two, 2")]
        await send({"type": "websocket.accept", "subprotocol": "chat", "headers": headers})
        await send({"type": "websocket.close", "code": 1000})
        return
    if path == "/raw/accept-bad-subprotocol":
        # A subprotocol that would split the 101's header line: refused, nothing written; the
        # connection is still to be answered, and then it is accepted without one.
        try:
            await send({"type": "websocket.accept", "subprotocol": "chat\r\nX-Evil: 1"})
        except Exception as exc:
            events.put(("bad-subprotocol", type(exc).__name__))
        else:
            events.put(("bad-subprotocol", "none"))
            await send({"type": "websocket.close", "code": 1000})
            return
    await send({"type": "websocket.accept"})

    async def attempt(name: str, message: MutableMapping[str, Any]) -> None:
        try:
            await send(message)
        except Exception as exc:
            events.put((name, type(exc).__name__))
        else:
            events.put((name, "none"))

    if path == "/raw/send-after-close":
        await send({"type": "websocket.close", "code": 1000})
        await attempt("send-after-close", {"type": "websocket.send", "text": "late"})
    elif path == "/raw/send-after-disconnect":
        while (await receive())["type"] != "websocket.disconnect":
            pass
        await attempt("send-after-disconnect", {"type": "websocket.send", "text": "late"})
    elif path == "/raw/malformed":
        await attempt("malformed", {"type": "websocket.send"})
        await attempt("unknown", {"type": "websocket.nonsense"})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/raw/sends":
        # Every kind of websocket.send, in one row per message received: the ones the compiled
        # path frames (bytes, str) and the ones it leaves to the core (bytearray, memoryview).
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                events.put(("disconnect", message["code"]))
                return
            for kind, value in SENDS:
                await send({"type": "websocket.send", kind: value})
    elif path == "/raw/close-later":
        # Answers the first message, then closes a while later (the client has started a
        # large frame meanwhile).
        await receive()
        await send({"type": "websocket.send", "text": "ack"})
        await asyncio.sleep(0.5)
        await send({"type": "websocket.close", "code": 1000})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        events.put(("closed-later", "done"))


#: What ``/raw/sends`` sends for each message it receives, in order: (key, value).
SENDS: list[tuple[str, Any]] = [
    ("text", "a"),
    ("bytes", b"b"),
    ("bytes", bytearray(b"c")),
    ("bytes", memoryview(b"d")),
    ("text", "\u00e9" * 40_000),
    ("bytes", bytes(range(256)) * 1200),  # 307,200 bytes: written apart from its header
    ("bytes", bytearray(70_000)),
    ("text", "t" * 300_000),
    ("text", ""),
    ("bytes", b""),
]


def fastapi_app(events: Events) -> FastAPI:
    """A FastAPI app: path and query parameters, JSON, a refusal, an echo."""
    app = FastAPI()

    @app.websocket("/items/{item_id}")
    async def items(websocket: FastAPIWebSocket, item_id: str, q: str | None = None) -> None:
        await websocket.accept()
        data = await websocket.receive_json()
        await websocket.send_json({"item": item_id, "q": q, "got": data})
        await websocket.close(code=1000)

    @app.websocket("/refuse")
    async def refuse(websocket: FastAPIWebSocket) -> None:
        raise WebSocketException(code=1008, reason="not you")

    @app.websocket("/echo")
    async def echo(websocket: FastAPIWebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect as exc:
            events.put(("disconnect", exc.code))

    return app
