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
import contextlib
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
from ..protocol.connection import State
from ..protocol.handshake import Headers, Request, Response
from ..protocol.server import ServerProtocol

__all__ = ["ALPNSwitch", "HTTP2Connection", "H2Stream", "HTTP_VERSION"]

logger = logging.getLogger("shakehands.server")

#: ``transport.get_extra_info("http_version")`` of an :class:`H2Stream`.
HTTP_VERSION = "2"

#: Response headers that HTTP/2 forbids (RFC 9113 §8.2.2): dropped from a response's head.
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)

#: The stream window we grant (HTTP/2's default initial window).
STREAM_WINDOW = 2**16 - 1


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


class H2Stream(asyncio.Transport):
    """One HTTP/2 stream as the ``asyncio.Transport`` of one server connection.

    What the connection writes is sent as DATA within the flow-control windows (buffered
    beyond them, with ``pause_writing`` above the high-water mark); ``close`` ends the stream
    (END_STREAM) once the buffer is sent, ``abort`` resets it (RST_STREAM ``CANCEL``);
    ``pause_reading`` holds received DATA unacknowledged. The answer's head goes out through
    :meth:`send_response_head` (called by the handshake, see
    :class:`~shakehands.asyncio.handshake.ServerHandshake`). ``get_extra_info`` answers
    ``"http_version"`` (``"2"``) and ``"h2_stream_id"`` itself and the rest (``peername``,
    ``ssl_object``...) from the TLS connection.
    """

    def __init__(
        self,
        owner: HTTP2Connection,
        stream_id: int,
        protocol: TransportProtocol | None,
        *,
        head_only: bool = False,
    ) -> None:
        super().__init__()
        self._owner = owner
        #: The HTTP/2 stream identifier.
        self.stream_id = stream_id
        self._protocol = protocol
        self._head_only = head_only
        self._out = bytearray()
        self._high = 2**16
        self._low = 2**14
        self._write_paused = False
        self._reading = True
        self._held: list[tuple[bytes, int]] = []
        self._closing = False
        self._local_ended = False
        self._remote_ended = False
        self._lost = False
        self._head_sent = False
        self._opened = False
        self._linger: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------------------
    # asyncio.Transport
    # ------------------------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"http_version"``: ``"2"``; ``"h2_stream_id"``: this stream's id; anything else:
        the TLS connection's (``peername``, ``sockname``, ``ssl_object``, ...)."""
        if name == "http_version":
            return HTTP_VERSION
        if name == "h2_stream_id":
            return self.stream_id
        return self._owner.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost or self._local_ended or self._closing:
            return
        self._ensure_head()
        if self._head_only and not self._opened:
            return  # HEAD: the head only
        self._out += data
        self._owner._send(self)
        if not self._write_paused and len(self._out) > self._high and self._protocol is not None:
            self._write_paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("an HTTP/2 stream ends with close()")

    def close(self) -> None:
        if self._closing or self._lost:
            return
        self._ensure_head()
        if not self._head_sent:
            # Nothing was answered (a connection dropped during its handshake): refuse.
            self.abort()
            return
        self._closing = True
        self._owner._send(self)

    def abort(self) -> None:
        if self._lost:
            return
        self._out.clear()
        if not (self._local_ended and self._remote_ended):
            self._owner._reset(self.stream_id, ErrorCodes.CANCEL)
        self._local_ended = self._remote_ended = True
        self._connection_lost(None)
        self._owner._forget(self)

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            if self._held or self._remote_ended:
                self._owner.loop.call_soon(self._deliver_held)

    def is_reading(self) -> bool:
        return self._reading

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 2**16 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    # ------------------------------------------------------------------------------------
    # The answer's head
    # ------------------------------------------------------------------------------------

    def send_response_head(self, response: Response) -> None:
        """Send ``response``'s status and headers as this stream's HEADERS frame.

        A response that opens the WebSocket (the ``200`` of an accepted extended CONNECT)
        leaves the stream open; any other ends it after its body (a HEAD request: at once).
        """
        if self._head_sent or self._lost:
            return
        self._head_sent = True
        core = getattr(self._protocol, "protocol", None)
        self._opened = isinstance(core, ServerProtocol) and core.state is State.OPEN
        fields = [(":status", str(response.status))]
        for name, value in response.headers.items():
            lower = name.lower()
            if lower not in _CONNECTION_SPECIFIC:
                fields.append((lower, value))
        end = not self._opened and (self._head_only or not response.body)
        self._owner._send_headers(self.stream_id, fields, end)
        if end:
            self._local_ended = True
            self._after_end()
        elif self._opened and self._remote_ended and not self._held:
            # The peer ended its side before the answer: the WebSocket sees that EOF now.
            self._owner.loop.call_soon(self._remote_end_seen)

    def _ensure_head(self) -> None:
        """Send the core's answer if it was decided without the handshake's hook (the core
        refused on its own: too much data before the answer)."""
        if self._head_sent:
            return
        core = getattr(self._protocol, "protocol", None)
        response = getattr(core, "response", None)
        if isinstance(response, Response):
            self.send_response_head(response)

    # ------------------------------------------------------------------------------------
    # Called by the HTTP/2 connection
    # ------------------------------------------------------------------------------------

    def _receive(self, data: bytes, flow_controlled: int) -> None:
        if self._lost or self._protocol is None:
            self._owner._ack(flow_controlled, self.stream_id)
            return
        if self._reading and not self._held:
            self._protocol.data_received(data)
            self._owner._ack(flow_controlled, self.stream_id)
        else:
            self._held.append((data, flow_controlled))

    def _deliver_held(self) -> None:
        while self._reading and self._held and not self._lost and self._protocol is not None:
            data, flow_controlled = self._held.pop(0)
            self._protocol.data_received(data)
            self._owner._ack(flow_controlled, self.stream_id)
        if self._remote_ended and not self._held and not self._lost:
            self._remote_end_seen()
        self._owner._flush()

    def _remote_end(self) -> None:
        self._remote_ended = True
        if not self._held:
            self._remote_end_seen()
        if self._local_ended:
            self._owner._forget(self)

    _eof_delivered = False

    def _remote_end_seen(self) -> None:
        if self._eof_delivered or self._lost or self._protocol is None:
            return
        if not self._head_sent:
            # The end of a request (a GET has no body) is not the end of a connection: it
            # reaches the WebSocket only once the stream is open (send_response_head).
            return
        self._eof_delivered = True
        self._protocol.eof_received()

    def _reset_by_peer(self) -> None:
        self._out.clear()
        self._held.clear()
        self._local_ended = self._remote_ended = True
        self._connection_lost(None)
        self._owner._forget(self)

    def _sent(self) -> None:
        """The owner moved what it could of :attr:`_out` into DATA frames."""
        if self._write_paused and len(self._out) <= self._low and self._protocol is not None:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._closing and not self._out and not self._local_ended:
            self._owner._end_stream(self.stream_id)
            self._local_ended = True
            self._after_end()

    def _after_end(self) -> None:
        """Our side ended: the connection is done with this stream; wait a little for the
        peer's END_STREAM, then reset it."""
        self._connection_lost(None)
        if self._remote_ended:
            self._owner._forget(self)
        elif self._owner._goaway_sent:
            self._owner._maybe_done()
        elif self._linger is None or self._protocol is None:
            self._cancel_linger()
            self._linger = self._owner.loop.call_later(
                self._owner.server.config.close_limit, self.abort
            )

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            if self._linger is not None and self._remote_ended:
                self._linger.cancel()
            return
        self._lost = True
        self._closing = True
        if self._protocol is not None:
            self._owner.loop.call_soon(self._protocol.connection_lost, exc)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None


class HTTP2Connection(asyncio.Protocol):
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
        self.server = server
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.h2: h2.connection.H2Connection
        #: The streams with a request, by id.
        self.streams: dict[int, H2Stream] = {}
        # The streams whose buffer waits for a window (or for the socket), in order.
        self._waiting: dict[int, H2Stream] = {}
        #: Done when the TLS connection is lost.
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._goaway_sent = False
        self._ended = False
        self._tls_paused = False
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
        for stream in list(self.streams.values()):
            stream._connection_lost(exc)
            stream._cancel_linger()
        self.streams.clear()
        self.server._http2.discard(self)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        # The peer does not read: stop reading too (what it sends may need answers).
        self._tls_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._tls_paused = False
        if not self._ended:
            self.transport.resume_reading()
            self._window_opened(0)
            self._flush()

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

    # ------------------------------------------------------------------------------------
    # Sending
    # ------------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._ended and self.transport.is_closing():
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def _send_headers(self, stream_id: int, fields: list[tuple[str, str]], end: bool) -> None:
        try:
            self.h2.send_headers(stream_id, fields, end_stream=end)
        except h2.exceptions.ProtocolError as exc:  # the stream is gone, or bad headers
            logger.info("cannot answer HTTP/2 stream %d: %s", stream_id, exc)
            self._reset(stream_id, ErrorCodes.INTERNAL_ERROR)
        self._flush()

    def _send(self, stream: H2Stream) -> None:
        """Move what ``stream`` buffered into DATA frames, as far as the windows allow."""
        if self._ended:
            stream._out.clear()
        elif not self._tls_paused:
            out = stream._out
            stream_id = stream.stream_id
            while out:
                try:
                    window = self.h2.local_flow_control_window(stream_id)
                except h2.exceptions.ProtocolError:
                    out.clear()
                    break
                size = min(window, self.h2.max_outbound_frame_size, len(out))
                if size <= 0:
                    break
                chunk = bytes(out[:size])
                del out[:size]
                try:
                    self.h2.send_data(stream_id, chunk)
                except h2.exceptions.ProtocolError:
                    out.clear()
            self._flush()
        stream._sent()
        if stream._out and not stream._lost:
            self._waiting[stream.stream_id] = stream
        else:
            self._waiting.pop(stream.stream_id, None)

    def _window_opened(self, stream_id: int) -> None:
        """A window grew (``stream_id`` 0: the connection's, or all streams' by SETTINGS):
        send what waited for it, and only that (the peer acknowledges often)."""
        if stream_id:
            stream = self._waiting.get(stream_id)
            if stream is not None:
                self._send(stream)
            return
        for stream in list(self._waiting.values()):
            self._send(stream)

    def _end_stream(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.end_stream(stream_id)
        self._flush()

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        if self._ended:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, code)
        self._flush()

    def _ack(self, size: int, stream_id: int) -> None:
        if size and not self._ended:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(size, stream_id)

    def _forget(self, stream: H2Stream) -> None:
        stream._cancel_linger()
        self._waiting.pop(stream.stream_id, None)
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
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

    def _peer_goaway(self) -> None:
        """The peer sent GOAWAY: h2 takes no more frames; drop the streams and close."""
        self._ended = True
        for stream in list(self.streams.values()):
            stream._connection_lost(None)
            stream._cancel_linger()
        self.streams.clear()
        self.transport.close()

    def _end(self, code: ErrorCodes, *, goaway: bool = True) -> None:
        """Close the connection: GOAWAY ``code`` (unless h2 queued one), every stream lost,
        then the socket."""
        if self._ended:
            return
        if goaway:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(error_code=code)
        try:
            data = self.h2.data_to_send()
        except h2.exceptions.ProtocolError:
            data = b""
        if data and not self.transport.is_closing():
            self.transport.write(data)
        self._ended = True
        for stream in list(self.streams.values()):
            stream._connection_lost(None)
            stream._cancel_linger()
        self.streams.clear()
        self.transport.close()

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
