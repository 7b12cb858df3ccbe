"""The chat demo: ``python -m shakehands chat [--port P] [--redis URL] [--workers N]``.

A WebSocket client connecting to ``/<room>`` (``/`` is the room ``lobby``; ``?name=alice`` sets
its name) joins that room through a :class:`~shakehands.Hub`; every text message it sends is
published on the room and reaches every client in it, itself included, whichever process serves
them (with ``--redis``, every process sharing that Redis). A plain ``GET`` of ``/`` or ``/<room>``
serves a page to chat from a browser.

What a client receives is JSON, one object per message:

- ``{"type": "joined", "room", "id", "name", "server"}`` once its subscription is live;
- ``{"type": "message", "room", "id", "name", "text"}`` for every message in the room;
- ``{"type": "error", "error", "text"}`` when its message could not be published (Redis down):
  nobody got it;
- ``{"type": "gap", "since", "until", "seconds"}`` when this server's link to Redis came back after
  an outage: messages published elsewhere in that window may be missing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .asyncio.server import ServerConnection
from .protocol.handshake import Headers, Request, Response
from .pubsub import Gap, Hub, PublishError
from .static import page

__all__ = ["ChatServer", "PAGE", "room_of"]

_ROOM = re.compile(r"[A-Za-z0-9_.~-]{1,64}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,32}")


def room_of(path: str) -> str | None:
    """The room a request path names (``/`` is ``lobby``), or ``None`` if it is not a valid one."""
    room = urlsplit(path).path[1:] or "lobby"
    return room if _ROOM.fullmatch(room) else None


class ChatServer:
    """The chat application: ``process_request`` (page, room check) and ``handler`` for
    :func:`~shakehands.serve`, on a :class:`~shakehands.Hub`.

    Example::

        chat = ChatServer(Hub())
        async with chat.hub, serve(chat.handler, "127.0.0.1", 8000,
                                   process_request=chat.process_request) as server:
            await server.serve_forever()
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.server_id = f"{socket.gethostname()}:{os.getpid()}"
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()
        hub.on_gap(self._report_gap)

    def process_request(self, request: Request) -> Response | None:
        """Refuse invalid rooms (404), serve the page on a plain GET, let upgrades through."""
        room = room_of(request.path)
        if room is None:
            return Response(
                HTTPStatus.NOT_FOUND,
                Headers([("Content-Type", "text/plain; charset=utf-8")]),
                b"Not Found: rooms are 1-64 characters of A-Z a-z 0-9 _ . ~ -\n",
            )
        if request.is_upgrade:
            return None
        if request.method == "GET":
            headers = Headers([("Content-Type", "text/html; charset=utf-8")])
            return Response(HTTPStatus.OK, headers, PAGE.encode("utf-8"))
        return None

    async def handler(self, ws: ServerConnection) -> None:
        """One chat client: join the room, publish each text message it sends."""
        assert ws.request is not None
        room = room_of(ws.request.path) or "lobby"
        client_id = f"{self._prefix}-{next(self._ids)}"
        names = parse_qs(ws.request.query).get("name", [])
        name = names[0] if names and _NAME.fullmatch(names[0]) else f"guest-{client_id}"
        await self.hub.subscribe(ws, room)
        await ws.send(
            _json(type="joined", room=room, id=client_id, name=name, server=self.server_id)
        )
        async for message in ws:
            if not isinstance(message, str):
                await ws.send(_json(type="error", error="only text messages are relayed"))
                continue
            event = _json(type="message", room=room, id=client_id, name=name, text=message)
            try:
                await self.hub.publish(room, event)
            except PublishError as exc:
                await ws.send(_json(type="error", error=str(exc), text=message))

    def _report_gap(self, gap: Gap) -> None:
        notice = _json(type="gap", since=gap.since, until=gap.until, seconds=round(gap.duration, 3))
        for room in gap.topics:
            self.hub.deliver_locally(room, notice)


def _json(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


#: The page served on a plain GET (``static/chat.html``).
PAGE = page("chat.html")
