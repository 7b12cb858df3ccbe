"""shakehands: WebSocket servers and clients for Python (RFC 6455).

The asyncio API is re-exported here: :func:`serve`, :func:`connect`, :func:`serve_callbacks`;
so are fan-out, ``shakehands.broadcast`` (the function
:func:`~shakehands.asyncio.broadcast.broadcast`), and rooms (:mod:`shakehands.pubsub`).
The blocking API (threads and sockets) is :mod:`shakehands.sync`.
The sans-I/O core lives in :mod:`shakehands.protocol`.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from .protocol.errors import (
    CloseCode,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectionRefused,
    HandshakeInterrupted,
    HeadersTooLarge,
    HostNotFound,
    InsecureRedirect,
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
    NotWebSocketServer,
    OpenTimeout,
    PayloadTooBig,
    PolicyViolation,
    ProtocolError,
    RedirectError,
    RedirectLoop,
    ShakehandsError,
    TooManyRedirects,
    UnsupportedVersion,
)
from .protocol.extensions.permessage_deflate import DeflateOptions
from .protocol.handshake import Headers, Request, Response

#: The version of shakehands, as in ``pyproject.toml``.
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

# Everything below is imported on first use (PEP 562), so that ``import shakehands`` and
# ``import shakehands.protocol`` stay cheap and the sans-I/O core never pulls in asyncio,
# threading, socket, selectors or ssl (tests/protocol/test_imports.py checks it).
_LAZY: dict[str, str] = {
    # The asyncio API (coroutines and callbacks) and the client.
    "CallbackConnection": ".asyncio",
    "ClientConnection": ".asyncio",
    "Listener": ".asyncio",
    "Server": ".asyncio",
    "ServerConnection": ".asyncio",
    "TransportProtocol": ".asyncio",
    "WebSocketConnection": ".asyncio",
    "connect": ".asyncio",
    "serve": ".asyncio",
    "serve_callbacks": ".asyncio",
    # Fan-out to many connections.
    "BroadcastResult": ".asyncio.broadcast",
    "ConnectionCounters": ".asyncio.broadcast",
    "SlowClientPolicy": ".asyncio.broadcast",
    "broadcast": ".asyncio.broadcast",
    "broadcast_counters": ".asyncio.broadcast",
    "set_slow_client_policy": ".asyncio.broadcast",
    # Scale-out across processes.
    "Gap": ".pubsub",
    "Hub": ".pubsub",
    "MemoryBackend": ".pubsub",
    "PublishError": ".pubsub",
    "RedisBackend": ".pubsub",
}
#: Subpackages that ``shakehands.<name>`` reaches without an explicit import. The blocking API is
#: a subpackage of its own (its serve/connect would clash with the asyncio ones).
_SUBMODULES = frozenset({"asyncio", "sync", "protocol", "broadcast", "hub", "pubsub", "static"})

__all__ += [
    "BroadcastResult",
    "CallbackConnection",
    "ClientConnection",
    "ConnectionCounters",
    "Gap",
    "Hub",
    "Listener",
    "MemoryBackend",
    "PublishError",
    "RedisBackend",
    "Server",
    "ServerConnection",
    "SlowClientPolicy",
    "TransportProtocol",
    "WebSocketConnection",
    "broadcast",
    "broadcast_counters",
    "connect",
    "serve",
    "serve_callbacks",
    "set_slow_client_policy",
    "sync",
]

# The client: Unix sockets, and the errors of connecting (issue 15).
_LAZY["unix_connect"] = ".asyncio"
_LAZY["TLSVerificationError"] = ".client_errors"
__all__ += [
    "ConnectionRefused",
    "HandshakeInterrupted",
    "HostNotFound",
    "InsecureRedirect",
    "NotWebSocketServer",
    "OpenTimeout",
    "RedirectError",
    "RedirectLoop",
    "TLSVerificationError",
    "TooManyRedirects",
    "unix_connect",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or subpackage) on first use, then keep it in the module."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


class _Package(types.ModuleType):
    """This package's module type: ``shakehands.broadcast`` stays the function.

    The import system sets ``shakehands.broadcast`` to the submodule of that name whenever it
    loads it (``from shakehands.broadcast import ...``); the function is what that name has
    always meant here, so the submodule is turned into its function on the way in.
    ``sys.modules["shakehands.broadcast"]`` is the module, as for any submodule.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "broadcast" and isinstance(value, types.ModuleType):
            value = value.broadcast
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import sync
    from .asyncio import (
        CallbackConnection,
        ClientConnection,
        Listener,
        Server,
        ServerConnection,
        TransportProtocol,
        WebSocketConnection,
        connect,
        serve,
        serve_callbacks,
        unix_connect,
    )
    from .broadcast import (
        BroadcastResult,
        ConnectionCounters,
        SlowClientPolicy,
        broadcast,
        broadcast_counters,
        set_slow_client_policy,
    )
    from .client_errors import TLSVerificationError
    from .pubsub import Gap, Hub, MemoryBackend, PublishError, RedisBackend

# Servers on Unix sockets, the router and HTTP Basic auth (issue 15).
_LAZY.update(
    {
        "unix_serve": ".asyncio",
        "unix_serve_callbacks": ".asyncio",
        "Route": ".router",
        "Router": ".router",
        "basic_auth": ".auth",
    }
)
__all__ += ["Route", "Router", "basic_auth", "unix_serve", "unix_serve_callbacks"]

if TYPE_CHECKING:
    from .asyncio import unix_serve, unix_serve_callbacks
    from .auth import basic_auth
    from .router import Route, Router

# Client proxies (docs/proxies.md): the errors to catch, and the proxy selection as functions.
__all__ += [
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "Proxy",
    "ProxyError",
    "parse_proxy",
    "proxy_bypassed",
    "proxy_from_environment",
]
_LAZY.update(dict.fromkeys(__all__[__all__.index("InvalidProxyMessage") :], ".protocol.proxy"))

if TYPE_CHECKING:
    from .protocol.proxy import (
        InvalidProxyMessage,
        InvalidProxyStatus,
        Proxy,
        ProxyError,
        parse_proxy,
        proxy_bypassed,
        proxy_from_environment,
    )
