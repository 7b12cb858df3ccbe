"""The blocking API: threads and sockets, over the same sans-I/O core as the asyncio API.

A threaded server (:func:`serve`, a thread per connection), a client (:func:`connect`), and the
seed's functions for code that accepts its own sockets (:func:`shake_hands`, :func:`get_request`,
:func:`put_response`, :func:`reject`, :func:`get_frame`, :func:`put_frame`). See docs/sync.md.

Example::

    from shakehands.sync import serve

    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 8765) as server:
        server.serve_forever()
"""

from __future__ import annotations

from .client import ClientConnection, connect, reconnect, unix_connect
from .connection import Connection, Data, PongWaiter
from .seed import (
    HandshakeError,
    get_frame,
    get_message,
    get_request,
    put_frame,
    put_message,
    put_response,
    reject,
    shake_hands,
)
from .server import Server, ServerConnection, ServerOptions, serve, unix_serve

__all__ = [
    "ClientConnection",
    "Connection",
    "Data",
    "HandshakeError",
    "PongWaiter",
    "Server",
    "ServerConnection",
    "ServerOptions",
    "connect",
    "get_frame",
    "get_message",
    "get_request",
    "put_frame",
    "put_message",
    "put_response",
    "reconnect",
    "reject",
    "serve",
    "shake_hands",
    "unix_connect",
    "unix_serve",
]
