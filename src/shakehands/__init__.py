"""shakehands: WebSocket servers and clients for Python (RFC 6455).

The asyncio API is re-exported here: :func:`serve`, :func:`connect`, :func:`serve_callbacks`.
The blocking API (threads and sockets) is :mod:`shakehands.sync`.
The sans-I/O core lives in :mod:`shakehands.protocol`.
"""

from __future__ import annotations

from .protocol.deflate import DeflateOptions
from .protocol.errors import (
    CloseCode,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HeadersTooLarge,
    InvalidHandshake,
    InvalidOrigin,
    InvalidPayload,
    InvalidRequest,
    InvalidResponse,
    InvalidState,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
    PolicyViolation,
    ProtocolError,
    ShakehandsError,
    UnsupportedVersion,
)
from .protocol.handshake import Headers, Request, Response

__version__ = "0.1.0"

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeflateOptions",
    "Headers",
    "HeadersTooLarge",
    "InvalidHandshake",
    "InvalidOrigin",
    "InvalidPayload",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "NegotiationError",
    "PayloadTooBig",
    "PolicyViolation",
    "ProtocolError",
    "Request",
    "Response",
    "ShakehandsError",
    "UnsupportedVersion",
    "__version__",
]

from .asyncio import (  # noqa: E402
    CallbackConnection,
    ClientConnection,
    Listener,
    Server,
    ServerConnection,
    WebSocketConnection,
    connect,
    serve,
    serve_callbacks,
)

__all__ += [
    "CallbackConnection",
    "ClientConnection",
    "Listener",
    "Server",
    "ServerConnection",
    "WebSocketConnection",
    "connect",
    "serve",
    "serve_callbacks",
]

# The blocking API is a subpackage of its own (its serve/connect would clash with the asyncio ones).
from . import sync  # noqa: E402

__all__ += ["sync"]

from .broadcast import (  # noqa: E402
    BroadcastResult,
    ConnectionCounters,
    SlowClientPolicy,
    broadcast,
    broadcast_counters,
    set_slow_client_policy,
)
from .hub import Gap, Hub, MemoryBackend, PublishError, RedisBackend  # noqa: E402

__all__ += [
    "BroadcastResult",
    "ConnectionCounters",
    "Gap",
    "Hub",
    "MemoryBackend",
    "PublishError",
    "RedisBackend",
    "SlowClientPolicy",
    "broadcast",
    "broadcast_counters",
    "set_slow_client_policy",
]
