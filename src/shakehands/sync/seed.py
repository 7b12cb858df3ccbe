"""The seed's functions, for code that accepts its own sockets.

The 2010 Haskell package offered ``shakeHands``, ``getRequest`` / ``putResponse``, ``getFrame`` and
``putFrame`` on a socket handle. Here they are on a :class:`socket.socket`, over the same engine as
everything else (:func:`.handshake.read_request`, :func:`.handshake.answer_request`). One flaw of
the seed is fixed: :func:`get_frame` returns ``None`` when the peer has gone, so an empty message
is not mistaken for a disconnect.

Example (the seed's ``talkTo``)::

    ws = shake_hands(sock)
    put_frame(ws, "滴水之恩当以涌泉相报")
    while (message := get_frame(ws)) is not None:
        put_frame(ws, message + ", MEOW!")
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from http import HTTPStatus
from typing import Unpack

from ..protocol.config import ServerOptions, server_config
from ..protocol.errors import ConnectionClosed, InvalidHandshake
from ..protocol.handshake import Request, Response, error_response
from ..protocol.hixie76 import new_server_protocol
from ..protocol.server import ServerProtocol
from .connection import Connection, Data
from .handshake import answer_request, read_request
from .server import ServerConnection

__all__ = [
    "HandshakeError",
    "shake_hands",
    "get_request",
    "put_response",
    "reject",
    "get_frame",
    "put_frame",
    "get_message",
    "put_message",
]

#: What :func:`shake_hands` and :func:`put_response` raise: the handshake failed. ``reason`` is
#: readable, ``status`` the HTTP status the socket was answered with.
HandshakeError = InvalidHandshake

# The handshake in progress on each socket, between get_request and put_response.
_pending: weakref.WeakKeyDictionary[socket.socket, tuple[ServerProtocol, float | None]]
_pending = weakref.WeakKeyDictionary()
_pending_lock = threading.Lock()


def get_request(sock: socket.socket, **options: Unpack[ServerOptions]) -> Request:
    """Read and parse the opening request on ``sock``, without answering it.

    Answer with :func:`put_response` (upgrade, or any response) or :func:`reject`. ``options``
    are those of :func:`~shakehands.sync.serve` (limits, origins, subprotocols, compression,
    timeouts, keepalive; not ``process_request`` or ``ssl``: wrap the socket yourself).

    Raises:
        HandshakeError: the bytes are not a valid HTTP request (answered 400 / 431, closed).
        TimeoutError: no whole request within ``open_timeout``.
    """
    config = server_config(**options)
    protocol = new_server_protocol(config, secure=False)
    deadline = None if config.open_timeout is None else time.monotonic() + config.open_timeout
    request = read_request(sock, protocol, deadline=deadline)
    with _pending_lock:
        _pending[sock] = (protocol, deadline)
    return request


def put_response(sock: socket.socket, response: Response | None = None) -> ServerConnection | None:
    """Answer the request read by :func:`get_request`.

    ``response`` ``None`` validates the request and upgrades it: the open connection is
    returned. Any other :class:`~shakehands.Response` is sent as it is and the socket closed
    (``None`` is returned), unless it is a 101.

    Raises:
        HandshakeError: the request cannot be upgraded (answered with the right status).
        RuntimeError: no request was read on this socket with :func:`get_request`.
    """
    with _pending_lock:
        pending = _pending.pop(sock, None)
    if pending is None:
        raise RuntimeError("put_response needs a request read with get_request first")
    protocol, deadline = pending
    return answer_request(sock, protocol, response, deadline=deadline)


def reject(
    sock: socket.socket, status: int | HTTPStatus = HTTPStatus.FORBIDDEN, text: str = ""
) -> None:
    """Refuse the request read by :func:`get_request` with a plain-text answer, then close."""
    status = HTTPStatus(status)
    put_response(sock, error_response(status, text or status.phrase))


def shake_hands(sock: socket.socket, **options: Unpack[ServerOptions]) -> ServerConnection:
    """Validate and answer the opening handshake on ``sock``; return the open connection.

    ``options`` are those of :func:`get_request`.

    Raises:
        HandshakeError: the request was not a valid upgrade; the socket was answered with
            :attr:`~shakehands.InvalidHandshake.status` and a readable reason, then closed.
        TimeoutError: the handshake did not complete within ``open_timeout``.
    """
    get_request(sock, **options)
    connection = put_response(sock)
    assert connection is not None  # no custom response: a 101 or an exception
    return connection


def get_message(ws: Connection) -> Data | None:
    """The next message (``str`` or ``bytes``); ``None`` once the peer has gone."""
    try:
        return ws.recv()
    except ConnectionClosed:
        return None


def put_message(ws: Connection, data: Data | bytearray | memoryview) -> None:
    """Send a message: ``str`` as text, bytes-like as binary.

    Raises:
        ConnectionClosed: the connection is closed.
    """
    ws.send(data)


def get_frame(ws: Connection) -> Data | None:
    """The seed's ``getFrame``: :func:`get_message` under its 2010 name.

    Kept for the seed's programs, with a note: it returns a whole *message* (however many
    frames it came in), not a frame; new code calls :func:`get_message`.
    """
    return get_message(ws)


def put_frame(ws: Connection, data: Data | bytearray | memoryview) -> None:
    """The seed's ``putFrame``: :func:`put_message` under its 2010 name.

    Kept for the seed's programs, with a note: it sends a whole *message* (one frame, or several
    for an iterable), not a raw frame; new code calls :func:`put_message`.
    """
    put_message(ws, data)
