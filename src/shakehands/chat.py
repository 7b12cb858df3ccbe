"""The chat demo: ``python -m shakehands chat [--port P] [--redis URL] [--workers N]``.

A WebSocket client connecting to ``/<room>`` (``/`` is the room ``lobby``; ``?name=alice`` sets
its name) joins that room through a :class:`~shakehands.Hub`; every text message it sends is
published on the room and reaches every client in it, itself included, whichever process serves
them (with ``--redis``, every process sharing that Redis, through Redis Streams). A plain ``GET``
of ``/`` or ``/<room>`` serves a page to chat from a browser.

A client that reconnects adds ``?since=<offset>&epoch=<epoch>`` (the last message it got): it
first receives what was published in the room since then, in order, then live messages, none
twice. The page does so by itself, reconnecting with backoff after losing its connection.

What a client receives is JSON, one object per message:

- ``{"type": "message", "room", "id", "name", "text", "offset", "epoch"}`` for every message in
  the room, the missed ones first when resuming (``offset`` increases by one per message in the
  room; ``epoch`` changes when the room's history was lost);
- ``{"type": "joined", "room", "id", "name", "server", "offset", "epoch", "replayed"}`` once its
  subscription is live (after the replay): resume from this position if no message came since;
- ``{"type": "history_lost", "reason", "offset", "epoch"}`` (after ``joined``) when ``since``
  could not be served: the history does not reach back that far (``"trimmed"``), or it was lost
  (``"epoch"``: a restarted in-memory server, Redis without persistence), or the position is
  beyond the last message (``"ahead"``); messages from ``offset`` on follow;
- ``{"type": "error", "error", "text"}`` when its message could not be published (Redis down):
  nobody got it; ``{"type": "error", "error"}`` and close code 1008 for a malformed ``since``;
- ``{"type": "gap", "since", "until", "seconds"}`` when this server's link to Redis came back after
  an outage in which history was lost: messages published in that window may be missing.
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
from .pubsub import Gap, Hub, Position, PublishError
from .static import page

__all__ = ["ChatServer", "PAGE", "room_of", "since_of", "with_position"]

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
        if hub.wire is None:
            hub.wire = with_position
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
        try:
            since = since_of(ws.request.query)
        except ValueError as exc:
            await ws.send(_json(type="error", error=str(exc)))
            await ws.close(1008, "malformed since")
            return
        subscription = await self.hub.subscribe(ws, room, since=since)
        position = subscription.position
        await ws.send(
            _json(
                type="joined",
                room=room,
                id=client_id,
                name=name,
                server=self.server_id,
                offset=position.offset if position else None,
                epoch=position.epoch if position else None,
                replayed=subscription.replayed,
            )
        )
        lost = subscription.lost
        if lost is not None:
            current = lost.current
            await ws.send(
                _json(
                    type="history_lost",
                    reason=lost.reason,
                    offset=current.offset if current else None,
                    epoch=current.epoch if current else None,
                )
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


def since_of(query: str) -> Position | None:
    """The position a client resumes from: ``since=<offset>&epoch=<epoch>`` in ``query``.

    Raises:
        ValueError: one without the other, repeated, or malformed.

    >>> since_of("name=al&since=41&epoch=9f3c")
    Position(epoch='9f3c', offset=41)
    >>> since_of("name=al") is None
    True
    """
    fields = parse_qs(query, keep_blank_values=True)
    since, epoch = fields.get("since", []), fields.get("epoch", [])
    if not since and not epoch:
        return None
    if len(since) != 1 or len(epoch) != 1:
        raise ValueError("malformed since: give since=<offset> and epoch=<epoch> once each")
    return Position.parse(f"{epoch[0]}:{since[0]}")


def with_position(topic: str, position: Position | None, message: str | bytes) -> str | bytes:
    """The chat's wire format: its JSON object with ``offset`` and ``epoch`` added (a
    :class:`~shakehands.Hub` ``wire`` function, called once per message, whatever the number
    of subscribers).

    >>> with_position("lobby", Position("9f3c", 7), '{"type":"message","text":"hi"}')
    '{"type":"message","text":"hi","offset":7,"epoch":"9f3c"}'
    """
    if position is None or not isinstance(message, str) or not message.endswith("}"):
        return message
    # The epoch is [0-9A-Za-z_-] (Position checks it): nothing to escape.
    return f'{message[:-1]},"offset":{position.offset},"epoch":"{position.epoch}"}}'


def _json(**fields: Any) -> str:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


#: The page served on a plain GET (``static/chat.html``).
PAGE = page("chat.html")
