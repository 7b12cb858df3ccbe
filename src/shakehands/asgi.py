"""Serve ASGI applications (FastAPI, Starlette, Django Channels) through shakehands, under uvicorn.

:class:`UvicornWebSocket` is a uvicorn WebSocket protocol class, beside uvicorn's own
``websockets``, ``websockets-sansio`` and ``wsproto``::

    uvicorn app:app --ws shakehands.asgi:UvicornWebSocket

or ``uvicorn.run(app, ws="shakehands.asgi:UvicornWebSocket")`` (``ws=UvicornWebSocket`` works
too). uvicorn parses HTTP and hands each upgrade request over; from then on the shakehands
sans-I/O core (:class:`~shakehands.protocol.server.ServerProtocol`) does the WebSocket protocol
and :class:`~shakehands.asyncio.base.TransportProtocol` the transport: writes, keepalive, the
closing handshake, the lingering close after a refusal, the abort timers. When the compiled
data path is built, ``UvicornWebSocket(...)`` makes a :class:`FastUvicornWebSocket`: whole
simple frames are parsed and unmasked in C straight into the application's inbox, every other
byte still goes to the core (see the class).

uvicorn's options map onto the core's (:class:`~shakehands.protocol.config.ServerConfig`):
``ws_max_size`` is ``max_message_size`` (1009 beyond), ``ws_max_queue`` is ``max_queue`` (received
messages waiting for the application before reading pauses), ``ws_ping_interval`` /
``ws_ping_timeout`` are ``ping_interval`` / ``ping_timeout`` (0 or ``None``: off) and
``ws_per_message_deflate`` is ``compression="deflate"`` (or ``None``).

This module needs uvicorn (``pip install 'shakehands[asgi]'``); ``import shakehands`` does not
import it.

Where it differs from uvicorn's ``websockets-sansio`` (on purpose; see ``docs/asgi.md``):

- an application that raises after ``websocket.accept`` closes the connection with 1011 (uvicorn's
  implementations drop the TCP connection: the client sees 1006);
- an application that returns while the connection is open closes it with 1000 (uvicorn's drop
  the TCP connection);
- a ``websocket.disconnect`` after the TCP connection was lost without a close frame has code
  1006 (uvicorn's say 1005), and the application gets exactly one ``websocket.disconnect``, then
  the same event again on every later ``receive()`` instead of waiting forever;
- a malformed event (no ``type``, ``websocket.send`` with neither ``text`` nor ``bytes``, values
  of the wrong type, a denial status outside 200-599) raises ``TypeError`` / ``RuntimeError`` in
  the application instead of being ignored;
- the scope's ``extensions`` also carry ``"shakehands": {"connection": <this object>}``, so
  that :class:`shakehands.Hub` rooms and :func:`shakehands.broadcast` work from ASGI endpoints
  (see :func:`shakehands.pubsub.connection_of`);
- messages over ``ws_max_size``, invalid UTF-8 and other protocol violations close the connection
  with the close code of RFC 6455 (1009, 1007, 1002) and the application's
  ``websocket.disconnect`` carries that code.

Why one module of some 800 lines: it is one class (and its compiled-path subclass, which
feeds the same inbox), uvicorn's protocol contract on one side and the ASGI events on the
other, and each ASGI event changes state the transport side reads (the inbox, the owed close
frame, the pending denial); split apart, each half would hold half of every event's rules.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import unquote

from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.utils import (
    ClientDisconnected,
    get_client_addr,
    get_local_addr,
    get_path_with_query_string,
    get_remote_addr,
    is_ssl,
)
from uvicorn.server import ServerState

from .asyncio.base import HoldsCloseForReader, TransportProtocol, write_chunks
from .protocol._accel import fastpath as _compiled
from .protocol.config import ServerConfig, server_config
from .protocol.connection import Close, State
from .protocol.errors import CloseCode
from .protocol.headers import FIELD_VALUE_RE, TOKEN_RE, Headers
from .protocol.http11 import Request, Response
from .protocol.server import ServerProtocol

__all__ = ["UvicornWebSocket", "ClientDisconnected", "config_from_uvicorn"]

#: Whether the compiled data path (``shakehands._fastpath``) is built and allowed (not
#: ``SHAKEHANDS_NO_SPEEDUPS=1``): then :class:`UvicornWebSocket` parses whole simple frames in C
#: (see :class:`FastUvicornWebSocket`).
FASTPATH_AVAILABLE: bool = _compiled is not None

#: Whether ``UvicornWebSocket(...)`` makes a :class:`FastUvicornWebSocket`: by default, when
#: :data:`FASTPATH_AVAILABLE`; ``False`` keeps every connection on the pure-Python path.
fastpath_enabled: bool = FASTPATH_AVAILABLE

#: The import string to give uvicorn (``--ws`` or ``ws=``).
IMPORT_STRING = "shakehands.asgi:UvicornWebSocket"

# uvicorn's logger: the "[accepted]" / "403" lines and application errors appear where uvicorn
# users look for them, as with uvicorn's own WebSocket implementations.
logger = logging.getLogger("uvicorn.error")

ASGIMessage = dict[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[ASGIMessage, Receive, Send], Awaitable[object]]

#: Up to this many bytes, what the core queued (a frame header and its uncopied payload of 64 KiB
#: or more, say) is joined into one write: one copy costs less than a second ``transport.write``
#: and ``send()`` system call (measured: ``bench/asgi.py --cpu``, the 64 KiB row). Above it,
#: the payload is handed over uncopied (:func:`~shakehands.asyncio.base.write_chunks`).
_JOIN_LIMIT = 2**18

#: The modules of uvicorn's HTTP protocols (``--http h11`` / ``httptools``), which hand the
#: upgrade over with their ``server``, ``client``, ``scheme`` and ``headers`` set.
_UVICORN_HTTP_PROTOCOLS = frozenset(
    {"uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.httptools_impl"}
)

_CONFIGS: weakref.WeakKeyDictionary[UvicornConfig, ServerConfig] = weakref.WeakKeyDictionary()
# The last one looked up (a server has one config): a weak reference to it and its options, so
# that each connection is spared the WeakKeyDictionary's new weak reference per lookup.
_last_config: tuple[weakref.ref[UvicornConfig], ServerConfig] | None = None


def config_from_uvicorn(config: UvicornConfig) -> ServerConfig:
    """The shakehands :class:`ServerConfig` for uvicorn's ``ws_*`` options (cached per config).

    Example:
        >>> import uvicorn
        >>> c = config_from_uvicorn(uvicorn.Config(app=None, ws_max_size=1000, ws_ping_interval=0))
        >>> c.max_message_size, c.ping_interval, c.compression is not None
        (1000, None, True)
    """
    global _last_config
    last = _last_config
    if last is not None and last[0]() is config:
        return last[1]
    cached = _CONFIGS.get(config)
    if cached is None:
        cached = server_config(
            max_message_size=config.ws_max_size,
            max_queue=config.ws_max_queue,
            ping_interval=config.ws_ping_interval or None,
            ping_timeout=config.ws_ping_timeout or None,
            compression="deflate" if config.ws_per_message_deflate else None,
            # uvicorn has parsed the request already; the application decides how long the
            # handshake takes (as with uvicorn's own implementations).
            open_timeout=None,
        )
        _CONFIGS[config] = cached
    _last_config = (weakref.ref(config), cached)
    return cached


def _header_pairs(headers: object, what: str) -> list[tuple[str, str]]:
    """ASGI headers (an iterable of ``(name, value)`` byte strings), checked and decoded."""
    if headers is None:
        return []
    if isinstance(headers, (str, bytes)) or not isinstance(headers, Iterable):
        raise TypeError(f"{what}: headers must be an iterable of (name, value) pairs")
    pairs: list[tuple[str, str]] = []
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"{what}: header {pair!r} is not a (name, value) pair") from None
        if not isinstance(name, (bytes, bytearray)) or not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"{what}: header names and values must be bytes, got {pair!r}")
        if not TOKEN_RE.fullmatch(name) or not FIELD_VALUE_RE.fullmatch(value):
            raise ValueError(f"{what}: invalid header {pair!r}")
        pairs.append((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")))
    return pairs


#: uvicorn's default headers (``Server``, ``Date``: a new list each second) as checked pairs,
#: and their lines in a response head.
_default_headers_cache: tuple[object, list[tuple[str, str]], bytes] = (None, [], b"")


def _default_header_pairs(
    headers: list[tuple[bytes, bytes]],
) -> tuple[list[tuple[str, str]], bytes]:
    """:func:`_header_pairs` of uvicorn's default headers and their lines (``name: value``
    and CRLF each), computed once per list (uvicorn replaces the list when the ``Date``
    changes). The list is shared: do not change it."""
    global _default_headers_cache
    source, pairs, lines = _default_headers_cache
    if source is not headers:
        pairs = _header_pairs(headers, "default headers")
        lines = _header_lines(pairs)
        _default_headers_cache = (headers, pairs, lines)
    return pairs, lines


def _header_lines(pairs: list[tuple[str, str]]) -> bytes:
    """Header fields as :meth:`Response.serialize` writes them, each line ended by CRLF."""
    return "".join(f"{name}: {value}\r\n" for name, value in pairs).encode("latin-1")


def _write(transport: asyncio.Transport, out: list[bytes]) -> None:
    """Write what the core queued: one write, but large payloads (past ``_JOIN_LIMIT``)
    uncopied."""
    if len(out) == 1:
        transport.write(out[0])
    elif sum(map(len, out)) <= _JOIN_LIMIT:
        transport.write(b"".join(out))
    else:
        write_chunks(transport, out)


class UvicornWebSocket(HoldsCloseForReader, TransportProtocol):
    """A uvicorn WebSocket protocol class driving the shakehands core.

    uvicorn creates one per upgrade request: ``UvicornWebSocket(config, server_state,
    app_state)``, then ``connection_made(transport)`` and ``data_received(request)`` with the
    request it parsed, and switches the transport over to it. It runs the ASGI application
    with a ``websocket`` scope and the events of the ASGI WebSocket specification (2.4),
    including the WebSocket Denial Response extension (``websocket.http.response.start`` /
    ``.body``). ``shutdown()`` (uvicorn's graceful shutdown) closes open connections with
    1012, "service restart".

    Args:
        config: uvicorn's configuration (its ``ws_*`` options, see :func:`config_from_uvicorn`).
        server_state: uvicorn's ``ServerState``: connections and tasks are registered there.
        app_state: the lifespan state, copied into each scope's ``state``.
        _loop: the event loop (default: the running one).
    """

    protocol: ServerProtocol

    # The close frame owed for the client's close or a protocol violation waits until the
    # application has read the messages received before it (at most close_hold_limit), so that
    # its answers to them leave first, as with the coroutine API.
    answers_later = True

    __slots__ = (
        "uvicorn_config",
        "app",
        "app_state",
        "root_path",
        "asgi_version",
        "connections",
        "tasks",
        "default_headers",
        "scope",
        "_request_headers",
        "server",
        "client",
        "scheme",
        "_inbox",
        "_receive_waiter",
        "_disconnect",
        "_response",
        "_accepted",
        "_denial",
        "_closing",
        "_reading_paused",
        "_unread",
        "_close_hold_timer",
        "_close_hold_expired",
        "_flush_handle",
        "_unflushed",
    )

    def __new__(cls, *args: Any, **kwargs: Any) -> UvicornWebSocket:
        # uvicorn makes the class it was given: this one gives the compiled data path when
        # available (subclasses get what they ask for).
        if cls is UvicornWebSocket and fastpath_enabled and FASTPATH_AVAILABLE:
            cls = FastUvicornWebSocket
        return object.__new__(cls)

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        ws_config = config_from_uvicorn(config)
        super().__init__(ServerProtocol(ws_config), ws_config)
        if _loop is not None:
            self.loop = _loop
        #: uvicorn's configuration (``config`` is the shakehands one).
        self.uvicorn_config = config
        self.app = cast(ASGIApp, config.loaded_app)
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.asgi_version: str = config.asgi_version
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.default_headers: list[tuple[bytes, bytes]] = server_state.default_headers
        #: The ASGI scope, once the request is in.
        self.scope: ASGIMessage | None = None
        # The request's headers as uvicorn parsed them (see connection_made), until the scope
        # has them.
        self._request_headers: list[tuple[bytes, bytes]] | None = None
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "ws"
        # Events for the application's receive(), and its waiter.
        self._inbox: collections.deque[ASGIMessage] = collections.deque()
        self._receive_waiter: asyncio.Future[None] | None = None
        # The websocket.disconnect event once known: delivered once in order, then repeated.
        self._disconnect: ASGIMessage | None = None
        # The 101 built for the request, sent on websocket.accept.
        self._response: Response | None = None
        self._accepted = False
        # A denial response in progress: status, headers, body so far.
        self._denial: tuple[int, list[tuple[str, str]], list[bytes]] | None = None
        # We started the closing handshake (application close, shutdown): messages that
        # still arrive are dropped, as the application is done reading.
        self._closing = False
        self._reading_paused = False
        # websocket.receive events in the inbox.
        self._unread = 0
        self._close_hold_timer: asyncio.TimerHandle | None = None
        self._close_hold_expired = False
        # Messages the application sends are written once per loop iteration (or at once past
        # write_limit bytes): an application answering a burst of messages makes one write.
        self._flush_handle: asyncio.Handle | None = None
        self._unflushed = 0

    # -----------------------------------------------------------------------------------------
    # asyncio.Protocol
    # -----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connections.add(self)
        # uvicorn calls this from its HTTP protocol's handle_websocket_upgrade, before it
        # switches the transport over: that protocol has the addresses and the request's headers
        # (as the scope wants them: lowercase names, bytes) already; the request it hands us
        # is serialised from them. Anything else: found out here.
        get_protocol = getattr(transport, "get_protocol", None)
        http: Any = get_protocol() if get_protocol is not None else None
        if (
            type(http).__module__ in _UVICORN_HTTP_PROTOCOLS
            and type(getattr(http, "headers", None)) is list
        ):
            self.server = http.server
            self.client = http.client
            self.scheme = "wss" if http.scheme == "https" else "ws"
            self._request_headers = http.headers
        else:
            self.server = get_local_addr(self.transport)
            self.client = get_remote_addr(self.transport)
            self.scheme = "wss" if is_ssl(self.transport) else "ws"

    def _on_connection_lost(self) -> None:
        self.connections.discard(self)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._cancel_close_hold()
        # The close frame received, else the one we sent, else 1006 (no closing handshake).
        close = self.protocol.close_rcvd or self.protocol.close_sent
        if close is not None:
            self._deliver_disconnect(close.code, close.reason)
        else:
            self._deliver_disconnect(CloseCode.ABNORMAL_CLOSURE, "")

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close with 1012 (service restart).

        An open connection gets a close frame 1012 and its application a
        ``websocket.disconnect`` with 1012; the TCP connection closes when the client answers
        (or after ``close_timeout``). A request the application has not answered yet gets a 500.
        """
        state = self.protocol.state
        if state is State.OPEN:
            self._deliver_disconnect(CloseCode.SERVICE_RESTART, "")
            self._close_from_server(CloseCode.SERVICE_RESTART, "")
        elif state is State.CONNECTING and self.scope is not None and self._denial is None:
            self._refuse(self.protocol.internal_error("server shutting down"))
        elif state is not State.CLOSING and not self.transport.is_closing():
            self.transport.close()

    # -----------------------------------------------------------------------------------------
    # The core's events
    # -----------------------------------------------------------------------------------------

    def _process(self) -> None:
        super()._process()
        protocol = self.protocol
        if protocol.failure is not None and self._disconnect is None:
            # The peer broke the protocol (1002, 1007, 1009...): the core sent its close frame.
            sent = protocol.close_sent
            code = sent.code if sent is not None else protocol.failure.code
            self._deliver_disconnect(code, sent.reason if sent is not None else "")

    def _on_event(self, event: object) -> None:
        kind = type(event)
        if kind is str:
            if not self._closing:
                self._unread += 1
                self._deliver({"type": "websocket.receive", "text": event})
        elif kind is bytes:
            if not self._closing:
                self._unread += 1
                self._deliver({"type": "websocket.receive", "bytes": event})
        elif kind is Close:
            close = cast(Close, event)
            self._deliver_disconnect(close.code, close.reason)
        elif kind is Request:
            self._got_request(cast(Request, event))

    def _deliver(self, message: ASGIMessage) -> None:
        inbox = self._inbox
        inbox.append(message)
        waiter = self._receive_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(inbox) >= self.config.max_queue:
            self._inbox_full()

    def _inbox_full(self) -> None:
        """The inbox holds ``max_queue`` events: pause reading (unless paused or closing)."""
        if not self._reading_paused and not self.transport.is_closing():
            self._reading_paused = True
            self.transport.pause_reading()

    def _deliver_disconnect(self, code: int, reason: str) -> None:
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._deliver(self._disconnect)

    def _has_unread_messages(self) -> bool:
        return self._unread > 0

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -----------------------------------------------------------------------------------------
    # The opening handshake
    # -----------------------------------------------------------------------------------------

    def _got_request(self, request: Request) -> None:
        request.remote_address = self.client
        response = self.protocol.accept(request)
        if response.status != 101:
            # A bad handshake: refused by the core (400, 426...) before the application runs.
            client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
            logger.info('%s - "WebSocket %s" %d', client, request.path, response.status)
            self._refuse(response)
            return
        self._response = response
        headers = self._request_headers
        if headers is None:
            headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in request.headers.items()
            ]
        else:
            self._request_headers = None
        raw_path, _, query = request.target.partition("?")
        root = self.root_path
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": root,
            "path": root + unquote(raw_path),
            "raw_path": root.encode("ascii") + raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": headers,
            "subprotocols": request.subprotocols,
            "state": self.app_state.copy(),
            "extensions": {
                "websocket.http.response": {},
                # The connection itself, for what plain ASGI cannot do: shakehands.Hub rooms
                # and shakehands.broadcast (see shakehands.pubsub.hub.connection_of).
                "shakehands": {"connection": self},
            },
        }
        self._deliver({"type": "websocket.connect"})
        task = self.loop.create_task(self._run_asgi())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _refuse(self, response: Response) -> None:
        """Answer the request with ``response`` (not a 101) and end the connection."""
        if self.protocol.state is not State.CONNECTING or self.transport.is_closing():
            return
        self._closing = True
        self.protocol.answer(response)
        self._deliver_disconnect(CloseCode.ABNORMAL_CLOSURE, "")
        self._process()

    # -----------------------------------------------------------------------------------------
    # The application
    # -----------------------------------------------------------------------------------------

    async def _run_asgi(self) -> None:
        assert self.scope is not None
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            self._app_ended(CloseCode.INTERNAL_ERROR)
        else:
            if self.protocol.state is State.CONNECTING and self._denial is None:
                logger.error("ASGI callable returned without completing handshake.")
            elif result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
            self._app_ended(CloseCode.NORMAL_CLOSURE)

    def _app_ended(self, code: int) -> None:
        """The application returned (``code`` 1000) or raised (1011): end the connection."""
        if self.transport.is_closing():
            return
        state = self.protocol.state
        if state is State.CONNECTING:
            if self._denial is not None:
                # A denial response cut short: nothing valid can be sent any more.
                self.transport.close()
            else:
                self._refuse(self.protocol.internal_error("the ASGI application failed"))
        elif state is State.OPEN:
            self._close_from_server(code, "")

    def _flush(self) -> None:
        out = self.protocol.data_to_send(send_close=not self._hold_close)
        if out and not self.transport.is_closing():
            _write(self.transport, out)

    def _deferred_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._unflushed = 0
        if not self._lost:
            self._flush()

    def _close_from_server(self, code: int, reason: str) -> None:
        if self.protocol.close_pending:
            # We owe the client a close frame already (its close, or a violation): send that
            # one now, the application is done answering.
            self._closing = True
            self._close_hold_expired = True
            self._release_close()
            return
        # First, as it validates code and reason (ValueError for a code that cannot be sent).
        self._start_close(code, reason)
        self._closing = True
        # Read again: the client's close frame must be seen.
        self._resume_reading()

    async def receive(self) -> ASGIMessage:
        """The ASGI ``receive`` callable: the next event for the application.

        After ``websocket.disconnect`` it returns the same event again rather than wait forever.

        Raises:
            RuntimeError: another coroutine is waiting in ``receive()`` already.
        """
        inbox = self._inbox
        while not inbox:
            if self._disconnect is not None:
                return dict(self._disconnect)
            if self._receive_waiter is not None:
                raise RuntimeError("another coroutine is already waiting in receive()")
            waiter = self._receive_waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self._receive_waiter = None
        message = inbox.popleft()
        if message["type"] == "websocket.receive":
            self._unread -= 1
            if not self._unread and self._hold_close:
                # The last message read before the client's close or violation: the answer
                # the application is about to send leaves before our close frame.
                self.loop.call_soon(self._release_close)
        if self._reading_paused and len(inbox) < self.config.max_queue:
            self._resume_reading()
        return message

    async def send(self, message: Mapping[str, Any]) -> None:
        """The ASGI ``send`` callable.

        Raises:
            ClientDisconnected: the client is gone (uvicorn's exception, an ``OSError``).
            RuntimeError: an event out of place (say ``websocket.send`` after
                ``websocket.close``), as uvicorn's implementations raise.
            TypeError, ValueError: a malformed event.
        """
        if type(message) is not dict and not isinstance(message, Mapping):
            raise TypeError(f"ASGI messages are mappings, got {message!r}")
        kind = message.get("type")
        if type(kind) is not str and not isinstance(kind, str):
            raise TypeError(f"ASGI message without a 'type': {message!r}")
        if self._writing_paused and not self._lost:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._lost:
            raise ClientDisconnected()
        if self._denial is not None:
            self._send_denial_body(kind, message)
        elif not self._accepted and not self._closing:
            self._send_handshake(kind, message)
        elif not self._closing:
            self._send_message(kind, message)
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}', after sending 'websocket.close'."
            )

    def _send_handshake(self, kind: str, message: Mapping[str, Any]) -> None:
        if kind not in ("websocket.accept", "websocket.close", "websocket.http.response.start"):
            raise RuntimeError(
                "Expected ASGI message 'websocket.accept', 'websocket.close' "
                f"or 'websocket.http.response.start' but got '{kind}'."
            )
        if self.protocol.state is not State.CONNECTING or self.transport.is_closing():
            raise ClientDisconnected()
        assert self.scope is not None
        if kind == "websocket.accept":
            subprotocol = message.get("subprotocol")
            if subprotocol is not None:
                if not isinstance(subprotocol, str):
                    raise TypeError(
                        f"websocket.accept: subprotocol must be a str, got {subprotocol!r}"
                    )
                # It becomes a header value of the 101: a token (RFC 6455, 4.3), so that
                # nothing the app passes can split or end the header line.
                if subprotocol and (
                    not subprotocol.isascii() or not TOKEN_RE.fullmatch(subprotocol.encode())
                ):
                    raise ValueError(f"websocket.accept: invalid subprotocol {subprotocol!r}")
            defaults, lines = _default_header_pairs(self.default_headers)
            extra = message.get("headers")
            added = _header_pairs(extra, "websocket.accept") if extra else []
            response = self._response
            assert response is not None
            if subprotocol:
                self.protocol.subprotocol = subprotocol
                added.append(("Sec-WebSocket-Protocol", subprotocol))
            # The core's 101 comes with its bytes from a template (see Response._with_head):
            # the headers added here are appended to them (and to its compacted headers), so
            # that the response is not serialised again field by field.
            if not response._extend_head(
                defaults + added, lines + _header_lines(added) if added else lines
            ):
                for name, value in defaults:
                    response.headers.add(name, value)
                for name, value in added:
                    response.headers.add(name, value)
            if logger.isEnabledFor(logging.INFO):  # the arguments cost 1 % of a handshake
                logger.info(
                    '%s - "WebSocket %s" [accepted]',
                    get_client_addr(self.scope),  # type: ignore[arg-type]
                    get_path_with_query_string(self.scope),  # type: ignore[arg-type]
                )
            self._accepted = True
            self._response = None
            self.protocol.answer(response)
            self._start_keepalive()
            # Frames that came early (before the 101) are read now.
            self._process()
        elif kind == "websocket.close":
            logger.info(
                '%s - "WebSocket %s" 403',
                get_client_addr(self.scope),  # type: ignore[arg-type]
                get_path_with_query_string(self.scope),  # type: ignore[arg-type]
            )
            self._refuse(self.protocol.reject(403, "Forbidden"))
        else:
            status = message.get("status")
            if type(status) is not int or not 200 <= status < 600:
                raise RuntimeError(f"Invalid HTTP status code '{status}' in response.")
            headers = _header_pairs(message.get("headers"), "websocket.http.response.start")
            logger.info(
                '%s - "WebSocket %s" %d',
                get_client_addr(self.scope),  # type: ignore[arg-type]
                get_path_with_query_string(self.scope),  # type: ignore[arg-type]
                status,
            )
            self._denial = (status, headers, [])

    def _send_denial_body(self, kind: str, message: Mapping[str, Any]) -> None:
        if kind != "websocket.http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'websocket.http.response.body' but got '{kind}'."
            )
        assert self._denial is not None
        status, headers, chunks = self._denial
        if not chunks and self.transport.is_closing():
            raise ClientDisconnected()
        body = message.get("body", b"")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"websocket.http.response.body: body must be bytes, got {body!r}")
        chunks.append(bytes(body))
        if message.get("more_body", False):
            return
        if self.protocol.state is not State.CONNECTING or self.transport.is_closing():
            raise ClientDisconnected()
        response = Response(status, Headers(headers), b"".join(chunks))
        if "Content-Type" not in response.headers:
            response.headers.add("Content-Type", "text/plain; charset=utf-8")
        self._refuse(response)

    def _send_message(self, kind: str, message: Mapping[str, Any]) -> None:
        protocol = self.protocol
        if kind == "websocket.send":
            data = message.get("bytes")
            text = message.get("text")
            if data is not None:
                if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
                    raise TypeError(
                        f"websocket.send: bytes must be bytes, not {type(data).__name__}"
                    )
            elif text is not None:
                if not isinstance(text, str):
                    raise TypeError(
                        f"websocket.send: text must be a str, not {type(text).__name__}"
                    )
            else:
                raise TypeError("websocket.send needs 'bytes' or 'text'")
            if protocol.state is not State.OPEN or self.transport.is_closing():
                raise ClientDisconnected()
            if data is not None:
                protocol.send_binary(data)
                self._unflushed += len(data)
            else:
                protocol.send_text(cast(str, text))
                self._unflushed += len(cast(str, text))
            if not self._inbox or self._unflushed >= self.write_limit:
                # The application has read everything received (the common case: it answers
                # the last message), or the answers pile up: write now. Answers to a burst of
                # messages read in one go are written together, by the last one.
                if self._flush_handle is None:
                    self._unflushed = 0
                    self._flush()  # _deferred_flush without a call (transport not closing)
                else:
                    self._deferred_flush()
            elif self._flush_handle is None:
                self._flush_handle = self.loop.call_soon(self._deferred_flush)
        elif kind == "websocket.close":
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            if type(code) is not int:
                raise TypeError(f"websocket.close: code must be an int, got {code!r}")
            if not isinstance(reason, str):
                raise TypeError(f"websocket.close: reason must be a str, got {reason!r}")
            if len(reason.encode("utf-8")) > 123:
                raise ValueError("websocket.close: reason is limited to 123 bytes in UTF-8")
            if protocol.state is not State.OPEN:
                # The client closed first: the connection is closing already.
                self._closing = True
                return
            self._close_from_server(code, reason)
            self._deliver_disconnect(code, reason)
        else:
            raise RuntimeError(
                f"Expected ASGI message 'websocket.send' or 'websocket.close', but got '{kind}'."
            )


# ---------------------------------------------------------------------------------------------
# The compiled data path
# ---------------------------------------------------------------------------------------------


class _NoMixin:
    __slots__ = ()


_Mixin: Any = getattr(_compiled, "UvicornFastPathMixin", _NoMixin)

#: The read buffer of each event loop (a loop reads one socket at a time: its connections share
#: one; see ``shakehands._fastpath``).
_READ_BUFFERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
    weakref.WeakKeyDictionary()
)


def _read_buffer(loop: asyncio.AbstractEventLoop) -> Any:
    buffer = _READ_BUFFERS.get(loop)
    if buffer is None:
        assert _compiled is not None
        buffer = _READ_BUFFERS[loop] = _compiled.ReadBuffer()
    return buffer


class FastUvicornWebSocket(_Mixin, UvicornWebSocket, asyncio.BufferedProtocol):  # type: ignore[misc]
    """:class:`UvicornWebSocket` with the received messages parsed in C
    (``shakehands._fastpath``, as the callback API's
    :class:`~shakehands.asyncio._fastpath.FastCallbackConnection`); the same in every other
    respect. ``UvicornWebSocket(...)`` makes one when :data:`fastpath_enabled`.

    The C path is on only while the core is open and between messages, after
    ``websocket.accept`` and before anyone starts closing (:meth:`_refresh_fast`). While on,
    ``data_received`` (uvloop) and ``get_buffer`` / ``buffer_updated`` (asyncio's socket
    transports, which read into a buffer shared by the loop's connections) are C: it unmasks
    whole, unfragmented, uncompressed text and binary frames within ``ws_max_size`` straight
    from the bytes read into the message, checks UTF-8, and hands each message to
    :meth:`on_message`, i.e. the application's inbox, without a Python frame per read. A
    large frame cut by reads is assembled in its message: each piece is unmasked into it once
    (asyncio reads the rest of the frame straight into it). The first frame it does not take
    (a control frame, a fragment, RSV bits, a frame over the limit, invalid UTF-8) and
    everything after it goes to the core (:meth:`_slow_received`), which answers, fails or
    closes exactly as without the C path; the path comes back on once the core is between
    messages again.

    ``send`` (the ASGI send callable) is C too: while the C path is on, a ``websocket.send``
    with ``bytes`` (a ``bytes`` object) or ``text`` (a ``str``) is framed in one allocation and
    written (or queued for the end of the loop step, as the Python send batches answers), and
    the awaitable it returns has finished; unless writing is paused, the transport closing,
    or the core has output queued or a fragmented message in progress. Every other event, and
    every error, is the Python :meth:`UvicornWebSocket.send` (:attr:`_send_slow`), through the
    core. What C queued leaves before anything the core writes (:meth:`_flush`,
    :meth:`write_queued`).
    """

    __slots__ = ("_fast", "_in_slow")

    #: The Python ASGI send, for what the C ``send`` does not build (see the class).
    _send_slow = UvicornWebSocket.send

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert _compiled is not None
        self._fast = _compiled.AsgiFastPath(
            _read_buffer(self.loop),
            self.write_limit,
            self.loop.call_soon,
            self._inbox,
            self.protocol,
        )
        self._in_slow = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._fast.attach(self.transport)

    def on_message(self, ws: object, message: str | bytes) -> None:
        """A message parsed by the C path (``ws`` is this connection): into the inbox."""
        if self._closing:
            return
        self._unread += 1
        # _deliver, inlined: one call per message.
        inbox = self._inbox
        if type(message) is str:
            inbox.append({"type": "websocket.receive", "text": message})
        else:
            inbox.append({"type": "websocket.receive", "bytes": message})
        waiter = self._receive_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(inbox) >= self.config.max_queue:
            self._inbox_full()

    def _slow_received(self, data: bytes) -> None:
        """Bytes for the core (the C path is off, or handed these over)."""
        self._in_slow = True
        try:
            UvicornWebSocket.data_received(self, data)
        finally:
            self._in_slow = False
        self._refresh_fast()

    def _refresh_fast(self) -> None:
        """Turn the C path on if the connection is accepted, not closing, and the core lets it
        take the next frames (see
        :meth:`~shakehands.protocol.connection.Connection.frames_takeable`)."""
        if (
            self._in_slow
            or not self._accepted
            or self._closing
            or self._hold_close
            or self._eof_sent
            or self._lost
            or self.transport.is_closing()
        ):
            return
        limit = self.protocol.frames_takeable()
        if limit is not None:
            self._fast.enable(self, limit)

    def _process(self) -> None:
        super()._process()
        if not self._in_slow:
            self._refresh_fast()  # after websocket.accept: the early frames were read

    def _flush(self) -> None:
        # What C queued leaves first; then UvicornWebSocket._flush, inlined, then: a state
        # that ends the open state (our close frame, a failure) turns the C path off.
        self._fast.flush()
        protocol = self.protocol
        out = protocol.data_to_send(send_close=not self._hold_close)
        if out and not self.transport.is_closing():
            _write(self.transport, out)
        if protocol.state is not State.OPEN or protocol.close_pending:
            self._fast.disable()

    def write_queued(self) -> None:
        """Write now what C and the core have queued, in that order (never an owed close
        frame)."""
        self._fast.flush()
        super().write_queued()

    def _fast_error(self, exc: BaseException) -> None:
        """:meth:`on_message` raised in the C path (it does not, short of ``MemoryError``):
        the application cannot be told; close with 1011."""
        if not isinstance(exc, Exception):
            raise exc
        logger.error("Exception delivering a WebSocket message", exc_info=exc)
        self._fast.disable()
        if self.protocol.state is State.OPEN:
            self._close_from_server(CloseCode.INTERNAL_ERROR, "")
            self._deliver_disconnect(CloseCode.INTERNAL_ERROR, "")

    def _on_connection_lost(self) -> None:
        self._fast.attach(None)
        super()._on_connection_lost()
