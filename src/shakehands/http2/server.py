"""WebSockets over HTTP/2 (RFC 8441) for the asyncio servers: one TLS connection, many streams.

On a TLS listener with HTTP/2 on (the ``http2`` option), ALPN offers ``h2`` and ``http/1.1``.
:class:`ALPNSwitch` is the protocol of every new TLS connection: once the TLS handshake is done
it hands the connection to :class:`HTTP2Connection` when the client chose ``h2``, else to the
server's ordinary HTTP/1.1 connection class (same port, nothing else changes).

:class:`HTTP2Connection` owns the socket and an ``h2.connection.H2Connection`` (the ``h2``
package, python-hyper: the HTTP/2 framing, HPACK, stream states and flow-control accounting
are its). It advertises ``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`` and gives every request
stream an :class:`H2Stream`, an ``asyncio.Transport`` for that stream, on which the server's
own connection class runs unchanged: :class:`~shakehands.asyncio.server.ServerConnection`
for ``serve``, the callback connection for ``serve_callbacks``. Each one drives the same
sans-I/O :class:`~shakehands.protocol.server.ServerProtocol`: the HTTP/2 request is mapped onto
its :class:`~shakehands.Request` (``:authority`` becomes ``Host``; ``request.version`` is
``"HTTP/2"``), the core decides the answer (:meth:`~.ServerProtocol.receive_http2_request`,
``process_request``, origins, subprotocols, permessage-deflate, limits) and the answer's head
leaves as a HEADERS frame (``200`` accepts an extended CONNECT), its frames as DATA.

Plain requests (``GET`` for the demo page) take the same path: ``process_request`` answers
them, and without an answer the core refuses them (405: a WebSocket over HTTP/2 is a CONNECT).
A ``CONNECT`` without ``:protocol``, or with one other than ``websocket``, gets 501; so does
an extended CONNECT on a connection that did not advertise the setting (a stream reset).

Flow control, both ways, per stream:

- outbound, what the WebSocket connection writes waits in its stream's buffer until both the
  stream's and the connection's windows allow it; above ``write_limit`` the stream tells its
  connection to pause writing (``send()`` waits, the callback API stops reading), so that a
  stream whose reader never reads holds only its own buffer and never stalls the others;
- inbound, received DATA is acknowledged (WINDOW_UPDATE) only once it is handed to the
  WebSocket connection; while that connection has paused reading (its queue is full), DATA is
  held and not acknowledged, so a peer can never have more than one stream window (64 KiB)
  buffered per stream. The connection window is opened to ``http2_max_streams`` stream
  windows at the start, so that paused streams never starve the others.

Limits on hostile peers (see docs/http2.md): ``http2_max_streams`` concurrent streams;
a header list above ``max_header_bytes + 32 × max_headers`` (HPACK's accounting) ends the
connection (HPACK state cannot be resynchronised); more than ``max_headers`` header fields
gets 431 on the stream; more than :attr:`HTTP2Connection.reset_limit` streams reset by the
peer, or more than :attr:`HTTP2Connection.control_limit` PING / SETTINGS frames, within
:attr:`HTTP2Connection.budget_seconds` get GOAWAY ``ENHANCE_YOUR_CALM`` (rapid reset,
CVE-2023-44487; control-frame floods); window overflows are ``h2``'s connection errors
(``FLOW_CONTROL_ERROR``); and a connection without streams for ``open_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from ..asyncio.base import TransportProtocol
from ..protocol.handshake import Headers, Request, Response
from ..protocol.server import ServerProtocol
from .base import HTTP_VERSION, STREAM_WINDOW, H2Endpoint, H2Stream

__all__ = ["ALPNSwitch", "HTTP2Connection", "H2Stream", "HTTP_VERSION"]

logger = logging.getLogger("shakehands.server")


class _Budget:
    """Counts events in a window of time: :meth:`spend` is false once over ``limit``."""

    __slots__ = ("limit", "seconds", "start", "count")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.start = 0.0
        self.count = 0

    def spend(self, now: float, n: int = 1) -> bool:
        if now - self.start > self.seconds:
            self.start = now
            self.count = 0
        self.count += n
        return self.count <= self.limit


class HTTP2Connection(H2Endpoint):
    """The server side of one HTTP/2 connection (after ALPN chose ``h2``).

    Args:
        server: the :class:`~shakehands.asyncio.server.Server` it belongs to (options,
            connections, graceful shutdown).
        factory: the server's connection factory: makes the connection object that runs on
            each stream (the same as for an HTTP/1.1 connection).
    """

    #: Streams the peer may reset within :attr:`budget_seconds` before the connection gets
    #: GOAWAY ``ENHANCE_YOUR_CALM`` (rapid reset, CVE-2023-44487).
    reset_limit = 200
    #: PING and SETTINGS frames (each needs an acknowledgement) the peer may send within
    #: :attr:`budget_seconds` before GOAWAY ``ENHANCE_YOUR_CALM``.
    control_limit = 500
    #: The window of time of both budgets, in seconds.
    budget_seconds = 10.0
    #: Whether to advertise ``SETTINGS_ENABLE_CONNECT_PROTOCOL``: without it, browsers open
    #: their WebSockets over HTTP/1.1 while pages still load over HTTP/2, and an extended
    #: CONNECT that comes anyway is malformed (RFC 8441 §3): its stream is reset.
    enable_connect_protocol = True

    def __init__(self, server: Any, factory: Callable[[Any], TransportProtocol]) -> None:
        super().__init__()
        self.server = server
        self.factory = factory
        #: Done when the TLS connection is lost.
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._resets = _Budget(self.reset_limit, self.budget_seconds)
        self._control = _Budget(self.control_limit, self.budget_seconds)
        self._idle: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------------------
    # asyncio.Protocol
    # ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        config = self.server.config
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        header_list = config.max_header_bytes + 32 * config.max_headers
        codes = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: config.http2_max_streams,
                codes.MAX_HEADER_LIST_SIZE: header_list,
                codes.ENABLE_CONNECT_PROTOCOL: int(self.enable_connect_protocol),
            },
        )
        self.h2.decoder.max_header_list_size = header_list
        self.h2.initiate_connection()
        # Paused streams hold their windows; the connection's must outlast them all.
        self.h2.increment_flow_control_window(
            min(config.http2_max_streams * STREAM_WINDOW, 2**31 - 1 - STREAM_WINDOW)
        )
        self.server._http2.add(self)
        self._flush()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.info("HTTP/2 connection error from %s: %s", self._peer(), exc)
            self._end(ErrorCodes.PROTOCOL_ERROR, goaway=False)  # h2 queued its GOAWAY
            return
        now = self.loop.time()
        for event in events:
            if self._ended:
                return
            if isinstance(event, h2.events.RequestReceived):
                self._request(event.stream_id, event.headers or [])
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.get(event.stream_id or 0)
                if stream is not None:
                    stream._remote_end()
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.get(event.stream_id or 0)
                if stream is not None:
                    stream._reset_by_peer()
                if event.remote_reset and not self._resets.spend(now):
                    self._calm("too many streams reset")
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_opened(event.stream_id or 0)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                if not self._control.spend(now):
                    self._calm("too many SETTINGS frames")
                else:
                    self._window_opened(0)
            elif isinstance(event, h2.events.PingReceived):
                if not self._control.spend(now):
                    self._calm("too many PING frames")
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._peer_goaway()
        self._flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._drop_streams(exc)
        self.server._http2.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # ------------------------------------------------------------------------------------
    # Requests
    # ------------------------------------------------------------------------------------

    def _request(self, stream_id: int, raw: list[Any]) -> None:
        if self._goaway_sent:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        pseudo: dict[str, str] = {}
        fields: list[tuple[str, str]] = []
        for name, value in raw:
            name = name.decode("latin-1") if isinstance(name, bytes) else name
            value = value.decode("latin-1") if isinstance(value, bytes) else value
            if name.startswith(":"):
                pseudo[name] = value
            else:
                fields.append((name, value))
        config = self.server.config
        method = pseudo.get(":method", "")
        protocol = pseudo.get(":protocol")
        if len(fields) > config.max_headers:
            self._plain(stream_id, 431, "too many header fields")
            return
        if protocol is not None and not self.h2.local_settings.enable_connect_protocol:
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)  # RFC 8441 §3: malformed
            return
        if method == "CONNECT" and protocol is None:
            self._plain(stream_id, 501, "CONNECT is not supported: this server is not a proxy")
            return
        if protocol is not None and protocol.lower() != "websocket":
            self._plain(stream_id, 501, f"unsupported protocol: {protocol}")
            return
        authority = pseudo.get(":authority")
        if authority is not None and not any(n.lower() == "host" for n, _ in fields):
            fields.insert(0, ("Host", authority))
        request = Request(
            method,
            pseudo.get(":path", "/"),
            Headers(fields),
            version="HTTP/2",
            remote_address=self._peer(),
        )
        connection = self.factory(self.server)
        # The plain core: the draft-76 one (legacy_hixie76) has no business on HTTP/2.
        connection.protocol = ServerProtocol(config)
        stream = H2Stream(self, stream_id, connection, head_only=method == "HEAD")
        self.streams[stream_id] = stream
        self._disarm_idle()
        connection.connection_made(stream)
        core = connection.protocol
        assert isinstance(core, ServerProtocol)
        core.receive_http2_request(request)
        connection._process()

    def _plain(self, stream_id: int, status: int, text: str) -> None:
        """Answer a request that reaches no connection (501, 431) with plain text."""
        stream = H2Stream(self, stream_id, None)
        self.streams[stream_id] = stream
        self._disarm_idle()
        body = (text + "\n").encode("utf-8")
        headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
        stream.send_response_head(Response(status, headers, body))
        stream._out += body
        stream._closing = True
        # A peer that never opens its window for the answer: reset after close_timeout.
        stream._linger = self.loop.call_later(self.server.config.close_limit, stream.abort)
        self._send(stream)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id or 0
        size = event.flow_controlled_length or 0
        stream = self.streams.get(stream_id)
        if stream is None:
            self._ack(size, stream_id)
        else:
            stream._receive(event.data or b"", size)

    @property
    def close_limit(self) -> float:
        """The server's ``close_limit`` (see :class:`~.base.H2Endpoint`)."""
        return float(self.server.config.close_limit)

    def _stream_done(self) -> None:
        if self._goaway_sent:
            self._maybe_done()
        elif not self.streams:
            self._arm_idle()

    def _maybe_done(self) -> None:
        """After GOAWAY: close once every stream has been answered to the end (the peer's own
        END_STREAM is not waited for: the server is going away)."""
        if all(stream._local_ended and stream._lost for stream in self.streams.values()):
            self._end(ErrorCodes.NO_ERROR)

    # ------------------------------------------------------------------------------------
    # Ending
    # ------------------------------------------------------------------------------------

    def goaway(self) -> None:
        """Graceful shutdown: GOAWAY (no new streams), then close once every stream is done.

        The streams' WebSockets are closed (1001) by the server, which also calls this.
        """
        if self._goaway_sent or self._ended:
            return
        self._disarm_idle()
        self._goaway_sent = True
        # h2 closes its state machine on GOAWAY; a graceful one (streams go on) is sent as a
        # frame of its own, and new streams are refused here.
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.h2.highest_inbound_stream_id
        frame.error_code = ErrorCodes.NO_ERROR
        self._flush()
        self.transport.write(frame.serialize())
        # The WebSockets get their 1001 from the server, with close_timeout to answer; past
        # that (and a stream that never drains), the connection ends anyway.
        self._idle = self.loop.call_later(
            2 * self.server.config.close_limit, self._end, ErrorCodes.NO_ERROR
        )
        self._maybe_done()

    def _calm(self, why: str) -> None:
        logger.warning("HTTP/2 peer %s: %s; sending GOAWAY", self._peer(), why)
        self._end(ErrorCodes.ENHANCE_YOUR_CALM)

    def _arm_idle(self) -> None:
        timeout = self.server.config.open_timeout
        if timeout is not None and self._idle is None and not self._ended and not self._goaway_sent:
            self._idle = self.loop.call_later(timeout, self._idle_expired)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_expired(self) -> None:
        self._idle = None
        if not self.streams:
            self._end(ErrorCodes.NO_ERROR)

    def _peer(self) -> Any:
        return self.transport.get_extra_info("peername")


class ALPNSwitch(asyncio.Protocol):
    """The first protocol of a TLS connection when HTTP/2 is on: after the TLS handshake, an
    :class:`HTTP2Connection` if ALPN chose ``h2``, else the server's HTTP/1.1 connection.

    Args:
        server: the server.
        factory: its connection factory (``factory(server)`` makes an HTTP/1.1 connection).
    """

    def __init__(self, server: Any, factory: Callable[[Any], TransportProtocol]) -> None:
        self.server = server
        self.factory = factory

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol: asyncio.Protocol
        if chosen == "h2":
            protocol = HTTP2Connection(self.server, self.factory)
        else:
            protocol = self.factory(self.server)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
