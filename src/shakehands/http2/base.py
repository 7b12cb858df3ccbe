"""What both roles of an HTTP/2 connection share: streams as transports, flow control.

:class:`H2Stream` is one HTTP/2 stream as the ``asyncio.Transport`` of one WebSocket
connection (the server's or the client's connection class runs on it unchanged), and
:class:`H2Endpoint` is the part of an HTTP/2 connection (an ``asyncio.Protocol`` over TLS, with
an ``h2.connection.H2Connection``) that moves the streams' bytes within the flow-control
windows, acknowledges received DATA, ends and resets streams and ends the connection.
:class:`~shakehands.http2.server.HTTP2Connection` (server) and
:class:`~shakehands.http2.client.HTTP2ClientConnection` (client) are built on it: they only
differ in how streams start (a request received, or a request sent) and in their limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import h2.connection
import h2.exceptions
from h2.errors import ErrorCodes

from ..asyncio.base import TransportProtocol
from ..protocol.connection import State
from ..protocol.handshake import Response
from ..protocol.server import ServerProtocol

__all__ = ["H2Endpoint", "H2Stream", "HTTP_VERSION", "STREAM_WINDOW"]

logger = logging.getLogger("shakehands.http2")

#: ``transport.get_extra_info("http_version")`` of an :class:`H2Stream`.
HTTP_VERSION = "2"

#: Response headers that HTTP/2 forbids (RFC 9113 §8.2.2): dropped from a response's head.
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)

#: The stream window we grant (HTTP/2's default initial window).
STREAM_WINDOW = 2**16 - 1


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
        owner: H2Endpoint,
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
        #: Whether this stream carries a request we sent (client role): a WebSocket that did
        #: not open then ends it with RST_STREAM ``CANCEL``, not END_STREAM (the server has
        #: answered in full; there is nothing more to send: RFC 9113 §8.1).
        self.client = False

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
        if not self._head_sent or (self.client and not self._opened):
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
            self._linger = self._owner.loop.call_later(self._owner.close_limit, self.abort)
            if self.client:
                # The client's WebSocket is over: a connection kept for it alone need not
                # wait for the server's END_STREAM (some servers never send it).
                self._owner._maybe_done()

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


class H2Endpoint(asyncio.Protocol):
    """The part of an HTTP/2 connection that both roles share (see the module's docstring).

    A subclass sets :attr:`transport` and :attr:`h2` in ``connection_made`` and feeds the
    ``h2`` events of its streams to them (``_receive``, ``_remote_end``, ``_reset_by_peer``,
    :meth:`_window_opened`).
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport
        self.h2: h2.connection.H2Connection
        #: The open streams, by id.
        self.streams: dict[int, H2Stream] = {}
        # The streams whose buffer waits for a window (or for the socket), in order.
        self._waiting: dict[int, H2Stream] = {}
        self._goaway_sent = False
        self._ended = False
        self._tls_paused = False

    @property
    def close_limit(self) -> float:
        """Seconds a stream that ended its side waits for the peer's end before a reset."""
        raise NotImplementedError

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
            logger.info("cannot send the head of HTTP/2 stream %d: %s", stream_id, exc)
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
        self._stream_done()

    def _drop_streams(self, exc: Exception | None) -> None:
        """The connection is gone: every stream's WebSocket loses its transport."""
        for stream in list(self.streams.values()):
            stream._connection_lost(exc)
            stream._cancel_linger()
        self.streams.clear()

    def _stream_done(self) -> None:
        """A stream was forgotten (a subclass: idle timers, closing when the last is done)."""

    def _maybe_done(self) -> None:
        """After our GOAWAY: close once every stream is done (the server's graceful end)."""

    # ------------------------------------------------------------------------------------
    # Ending
    # ------------------------------------------------------------------------------------

    def _peer_goaway(self) -> None:
        """The peer sent GOAWAY: h2 takes no more frames; drop the streams and close."""
        self._ended = True
        self._drop_streams(None)
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
        self._drop_streams(None)
        self.transport.close()
