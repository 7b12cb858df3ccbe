"""The asyncio APIs of shakehands: coroutine handlers, callback listeners, and the client.

Thin layers over :mod:`shakehands.protocol`: they move bytes between a transport and the sans-I/O
core, and turn its events into awaitables or callbacks. No framing or handshake logic lives here.
"""

from .base import TransportProtocol
from .callback import CallbackConnection, Listener, serve_callbacks, unix_serve_callbacks
from .client import ClientConnection, connect, unix_connect
from .connection import WebSocketConnection
from .server import Server, ServerConnection, serve, unix_serve

__all__ = [
    "CallbackConnection",
    "ClientConnection",
    "Listener",
    "Server",
    "ServerConnection",
    "TransportProtocol",
    "WebSocketConnection",
    "connect",
    "serve",
    "serve_callbacks",
    "unix_connect",
    "unix_serve",
    "unix_serve_callbacks",
]
