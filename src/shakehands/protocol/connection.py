"""The WebSocket state machine of RFC 6455 §5-§7, for both roles, with no I/O.

Theory of operation. A :class:`Connection` is fed the bytes read from the socket
(:meth:`~Connection.receive_data`, :meth:`~Connection.receive_eof`) and hands back what happened
(:meth:`~Connection.events_received`) and what to write (:meth:`~Connection.data_to_send`). Send
calls (:meth:`~Connection.send_text`, :meth:`~Connection.send_close`, ...) only queue bytes. The I/O
layer writes the queued bytes, delivers the events, and closes the TCP connection when
:meth:`~Connection.close_expected` says so. Three rules:

1. Everything the peer can do wrong is decided here, and mapped to a close code: the I/O layers
   never inspect frames.
2. Payloads are consumed as they arrive: a data frame's bytes are unmasked, inflated,
   UTF-8-checked and counted against the limits before the frame is complete, so a bad byte fails
   the connection at once and an oversized message is refused before it is buffered.
3. A failure or the peer's close frame stops parsing at once, but our close frame (the error
   code, or the echo) is queued by the next :meth:`~Connection.data_to_send`, so whatever the
   application sends in answer to the messages that came before it leaves first (RFC 6455 §5.5.1
   lets an endpoint finish its current message before answering a close). An I/O layer that
   queues messages for the application (the coroutine and blocking APIs) asks for it with
   ``data_to_send(send_close=False)`` while the application has not read them, for at most
   :func:`close_hold_limit` seconds: the same rule, and the same bound, in every layer.

The module is the state machine, the send paths and close handling. The receive half (bytes to
frames to messages: limits, UTF-8, reassembly) is :class:`~.reader.FrameReader`, a base class;
the event values are in :mod:`.events`. Extensions (:mod:`.extensions`) wrap the message path:
each claims RSV bits, decodes what comes in and encodes what goes out, and is reached through the
:class:`~.extensions.Extension` interface only: this module names none.

Events are plain values: ``str`` for a text message, ``bytes`` for a binary one, and
:class:`Ping`, :class:`Pong`, :class:`Close` for control frames. The opening handshake is the
business of the role-specific subclasses in :mod:`.server` and :mod:`.client`; this class starts
in :attr:`State.OPEN` when used directly. (Some 500 lines: the state machine and the send fast
paths that bypass ``_frame`` must stay side by side, each fast path next to the general one it
must match byte for byte; the receive side is :mod:`.reader`'s.)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Container

from .errors import (
    CloseCode,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    ProtocolError,
)
from .events import Close, Event, Ping, Pong, Role, State
from .extensions import Extension, ExtensionHost
from .frames import (
    MAX_CONTROL_PAYLOAD,
    Opcode,
    build_frame,
    parse_close,
    serialize_close,
    serialize_frame,
)
from .reader import NOTHING, FrameReader
from .reader import _parse_data_frames as _parse_data_frames  # where it was first

__all__ = [
    "Role",
    "State",
    "Ping",
    "Pong",
    "Close",
    "Event",
    "Connection",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "CLOSE_HOLD_LIMIT",
    "close_hold_limit",
]

#: Default ``max_message_size``: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 2**20

#: Rule 3: the longest an owed close frame waits for the application to read the messages that
#: came before it, in seconds. Short, because the peer is waiting for our answer: a peer whose
#: own close timeout ran out would see an abnormal closure.
CLOSE_HOLD_LIMIT = 1.0


def close_hold_limit(close_timeout: float | None) -> float:
    """Rule 3's bound for a connection with this ``close_timeout``: at most
    :data:`CLOSE_HOLD_LIMIT`, and never beyond the closing handshake's own timeout."""
    if close_timeout is None:
        return CLOSE_HOLD_LIMIT
    return min(CLOSE_HOLD_LIMIT, close_timeout)


def ping_payload(data: bytes | None, waiting: Container[bytes]) -> bytes:
    """The payload of a ping an application sends: ``data``, or 4 random bytes when ``None``;
    never one that a ping still ``waiting`` for its pong has (the pong could not tell them
    apart).

    Raises:
        ValueError: ``data`` is the payload of a ping still waiting.
    """
    if data is None:
        data = os.urandom(4)
        while data in waiting:
            data = os.urandom(4)
    elif data in waiting:
        raise ValueError("a ping with this payload is already waiting for its pong")
    return data


_pack_h64 = struct.Struct("!BBQ").pack
# The unmasked close frames without reason sent so far, by code (None: no status).
_CLOSE_FRAMES: dict[int | None, bytes] = {}
#: Payloads at least this large (and immutable) are queued apart from their frame header, to
#: spare a copy; smaller ones are joined to it, one chunk per frame.
_SEPARATE_PAYLOAD = 2**16


class Connection(FrameReader, ExtensionHost):
    """The sans-I/O WebSocket connection (after the handshake).

    Args:
        role: :attr:`Role.SERVER` requires masked frames from the peer and sends unmasked ones;
            :attr:`Role.CLIENT` the reverse.
        max_message_size: largest message accepted, in bytes (``None``: no limit). A larger one
            fails the connection with 1009 before its payload is buffered.
        max_frame_size: largest single frame accepted (``None``: no limit), 1009 beyond.

    Example:
        >>> c = Connection(Role.CLIENT)
        >>> c.receive_data(b"\\x81\\x05Hello")
        >>> c.events_received()
        ['Hello']
    """

    # Slots: a server holds one of these per connection, and past 30 attributes CPython gives
    # each instance a full dict (about 800 bytes more per idle connection). The receive state's
    # slots are FrameReader's.
    __slots__ = (
        "role",
        "state",
        "_mask_out",
        "_out",
        "_send_opcode",
        "_send_extended",
        "_encoders",
        "_close_pending",
        "_defer_pongs",
        "_pending_pong",
        "close_rcvd",
        "close_sent",
        "failure",
        "eof_received",
        "__weakref__",
    )

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int | None = None,
        state: State = State.OPEN,
    ) -> None:
        super().__init__(
            expect_masked=role is Role.SERVER,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
        )
        self.role = role
        self.state = state
        self._mask_out = role is Role.CLIENT
        # Empty until the first chunk: the shared NOTHING, not a list per idle connection.
        self._out: list[bytes] | tuple[()] = NOTHING
        # The message being sent in fragments: 0 means none.
        self._send_opcode = 0
        # Whether the extensions encode it.
        self._send_extended = False
        # The extensions that encode outgoing messages, in order; None rather than empty, so
        # that the send fast paths test it as cheaply as anything.
        self._encoders: tuple[Extension, ...] | None = None
        # Our close frame, owed but not queued yet (see rule 3): (code or None, reason).
        self._close_pending: tuple[int | None, str] | None = None

        # While the I/O layer cannot write (its buffer is full), answer only the latest ping
        # (RFC 6455 §5.5.3 allows it): a ping flood from a peer that does not read then costs
        # one pending pong, not an unbounded queue of them.
        self._defer_pongs = False
        self._pending_pong: bytes | None = None

        #: The close frame received, or ``None``.
        self.close_rcvd: Close | None = None
        #: The close frame sent, or ``None``.
        self.close_sent: Close | None = None
        #: The error that failed the connection, if the peer broke the protocol.
        self.failure: ProtocolError | None = None
        self.eof_received = False

    # -----------------------------------------------------------------------------------------
    # Public interface for the I/O layer
    # -----------------------------------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """Return and clear the events produced since the last call."""
        events = self._events
        if events is NOTHING:
            return []
        self._events = NOTHING
        return events  # type: ignore[return-value]  # not NOTHING: a list

    def data_to_send(self, *, send_close: bool = True) -> list[bytes]:
        """Return and clear the bytes queued for the wire.

        The close frame owed after a failure or a close frame from the peer is queued here,
        after anything the application sent since (unless ``send_close`` is false: the I/O layer
        will ask again once the application has answered).
        """
        if self._close_pending is not None and send_close:
            self._send_pending_close()
        out = self._out
        if out is NOTHING:
            return []
        self._out = NOTHING
        return out  # type: ignore[return-value]  # not NOTHING: a list

    #: Whether this connection's data frames are RFC 6455 frames that a broadcast may build once
    #: for many connections (:meth:`send_serialized`); not on a draft-76 connection.
    shares_frames = True

    @property
    def can_ping(self) -> bool:
        """Whether this connection has ping frames, so that keepalive can run (draft-76 has
        none: see :mod:`.hixie76`)."""
        return True

    def frames_takeable(self, *, extensions: bool = False) -> int | None:
        """Whether a reader of whole simple frames outside the core (a compiled data path) may
        take over the bytes that follow, and up to what size.

        ``None`` when it may not: the connection is not open, a close frame is owed, the framing
        is draft-76's, a frame or message is partly read, or an extension is negotiated (unless
        ``extensions``: the taker then decodes whole messages with :attr:`extensions` itself).
        Otherwise the largest frame it may take: ``min(max_frame_size, max_message_size)``, or
        ``-1`` for no limit. Anything else (control frames, fragments, RSV bits, larger frames)
        it hands back here, in order, with the bytes after it.
        """
        if (
            self.state is not State.OPEN
            or self._close_pending is not None
            or not self.shares_frames
            or not self.between_messages(extensions=extensions)
        ):
            return None
        limits = [n for n in (self.max_frame_size, self.max_message_size) if n is not None]
        return min(limits) if limits else -1

    @property
    def close_pending(self) -> bool:
        """A failure or the peer's close frame was received; our close frame is not queued yet."""
        return self._close_pending is not None

    def _send_pending_close(self) -> None:
        assert self._close_pending is not None
        code, reason = self._close_pending
        self._close_pending = None
        if self.state is State.OPEN:
            if self._mask_out or reason or not self.shares_frames:
                self._frame(Opcode.CLOSE, serialize_close(code, reason))
            else:
                # The server's answer to a close frame (the end of most connections): the
                # frame for its code made once (unmasked; at most one per valid code).
                frame = _CLOSE_FRAMES.get(code)
                if frame is None:
                    frame = serialize_frame(Opcode.CLOSE, serialize_close(code))
                    _CLOSE_FRAMES[code] = frame
                self._queue(frame)
            self.close_sent = Close(code if code is not None else 1005, reason)
        self.state = State.CLOSED

    def close_expected(self) -> bool:
        """Whether the I/O layer should now close the TCP connection (after writing).

        RFC 6455 §7.1.1: the server closes first once the closing handshake is done; the client
        waits for that, unless the connection was failed.
        """
        if self.state is not State.CLOSED:
            return False
        return self.role is Role.SERVER or self.failure is not None or self.eof_received

    @property
    def close_code(self) -> int:
        """The code of the close frame received; 1006 if none was (abnormal closure)."""
        return self.close_rcvd.code if self.close_rcvd is not None else CloseCode.ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str:
        """The reason of the close frame received ('' if none)."""
        return self.close_rcvd.reason if self.close_rcvd is not None else ""

    def close_exception(self) -> ConnectionClosed:
        """The exception that describes how this connection closed."""
        ok_codes = (1000, 1001, 1005)
        sent = self.close_sent.code if self.close_sent is not None else None
        cls: type[ConnectionClosed] = ConnectionClosedError
        if (
            self.close_rcvd is not None
            and self.close_rcvd.code in ok_codes
            and self.failure is None
            and (sent is None or sent in ok_codes)
        ):
            cls = ConnectionClosedOK
        sent_reason = self.close_sent.reason if self.close_sent is not None else ""
        return cls(self.close_code, self.close_reason, sent, sent_reason)

    def use_extension(self, extension: Extension) -> None:
        """Turn on an extension negotiated in the handshake (see
        :meth:`.FrameReader.use_extension`); outgoing messages are encoded in this order."""
        super().use_extension(extension)
        self._encoders = self.extensions

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    def _queue(self, chunk: bytes) -> None:
        """Queue bytes for the next :meth:`data_to_send`."""
        out = self._out
        if out is NOTHING:
            self._out = [chunk]
        else:
            out.append(chunk)  # type: ignore[union-attr]  # not NOTHING: a list

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send in state {self.state.name}")

    def _frame(
        self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool = True
    ) -> None:
        if self._mask_out:
            self._queue(
                serialize_frame(opcode, payload, fin=fin, mask=True, mask_key=os.urandom(4))
            )
        else:
            self._queue(serialize_frame(opcode, payload, fin=fin))

    def _data_frame(
        self,
        opcode: int,
        payload: bytes | bytearray | memoryview,
        fin: bool,
        extend: bool,
    ) -> None:
        """Queue a data frame, encoded by the extensions when ``extend`` (their RSV bits on the
        message's first frame only)."""
        if not extend:
            self._frame(opcode, payload, fin)
            return
        assert self._encoders is not None
        rsv = 0
        for extension in self._encoders:
            payload = extension.encode(payload, fin)
            rsv |= extension.rsv_bits
        b_mask = os.urandom(4) if self._mask_out else None
        self._queue(
            serialize_frame(
                opcode,
                payload,
                fin=fin,
                rsv=rsv if opcode != Opcode.CONT else 0,
                mask=self._mask_out,
                mask_key=b_mask,
            )
        )

    def _queue_large(self, first_byte: int, payload: bytes | bytearray | memoryview) -> None:
        """Queue an unmasked frame, not encoded by extensions, with a payload of 64 KiB or more."""
        if type(payload) is bytes:
            # Immutable: queue it as its own chunk rather than copy it behind the header; the
            # I/O layer hands both to the transport without joining them.
            # 64 KiB or more: the 64-bit length encoding.
            self._queue(_pack_h64(first_byte, 127, len(payload)))
            self._queue(payload)
        else:
            self._queue(build_frame(first_byte, payload))

    def send_text(self, text: str, *, compress: bool = True) -> None:
        """Queue a text message (compressed if negotiated, unless ``compress`` is false: the
        negotiated extensions encode it)."""
        if (
            self.state is not State.OPEN
            or self._send_opcode
            or self._mask_out
            or (compress and self._encoders is not None)
        ):
            self._send_data(Opcode.TEXT, text.encode("utf-8"), compress)
            return
        # The server's common case, kept short: an unmasked frame, no extension.
        data = text.encode("utf-8")
        if len(data) < _SEPARATE_PAYLOAD:
            out = self._out
            if out:  # a list (only data_to_send empties it, back to NOTHING)
                out.append(build_frame(0x81, data))
            else:
                self._out = [build_frame(0x81, data)]
        else:
            self._queue_large(0x81, data)

    def send_binary(self, data: bytes | bytearray | memoryview, *, compress: bool = True) -> None:
        """Queue a binary message (compressed if negotiated, unless ``compress`` is false: the
        negotiated extensions encode it)."""
        if (
            self.state is not State.OPEN
            or self._send_opcode
            or self._mask_out
            or (compress and self._encoders is not None)
        ):
            self._send_data(Opcode.BINARY, data, compress)
            return
        # The server's common case, kept short: an unmasked frame, no extension.
        if len(data) < _SEPARATE_PAYLOAD:
            out = self._out
            if out:  # a list (only data_to_send empties it, back to NOTHING)
                out.append(build_frame(0x82, data))
            else:
                self._out = [build_frame(0x82, data)]
        else:
            self._queue_large(0x82, data)

    def _send_data(
        self, opcode: int, payload: bytes | bytearray | memoryview, compress: bool
    ) -> None:
        self._check_open()
        if self._send_opcode:
            raise InvalidState("a fragmented message is being sent")
        self._data_frame(opcode, payload, True, compress and self._encoders is not None)

    def send_message(
        self, message: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        """Queue a message: text for ``str``, binary for a bytes-like object."""
        if isinstance(message, str):
            self.send_text(message, compress=compress)
        else:
            self.send_binary(message, compress=compress)

    def send_serialized(self, frames: bytes) -> None:
        """Queue whole data frames serialised once for many connections (a broadcast).

        The caller (:mod:`shakehands.broadcast`) builds them with :func:`.frames.serialize_frame`
        and, for compressed ones, a codec with this connection's negotiated compression
        parameters and no context takeover. Only unmasked frames can be shared, so only servers
        take them.

        Raises:
            InvalidState: not open, a fragmented message is being sent, or this end masks.
        """
        self._check_open()
        if self._send_opcode:
            raise InvalidState("a fragmented message is being sent")
        if self._mask_out:
            raise InvalidState("a client masks every frame: it cannot send shared frames")
        self._queue(frames)

    def send_fragment(
        self, data: str | bytes | bytearray | memoryview, *, fin: bool, compress: bool = True
    ) -> None:
        """Queue one fragment of a message; the first fragment's type sets the message's type.

        Call with ``fin=False`` for every fragment but the last. Control frames may be sent in
        between; other messages may not. ``compress`` counts on the first fragment only.
        """
        self._check_open()
        text = isinstance(data, str)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if self._send_opcode:
            if text != (self._send_opcode == Opcode.TEXT):
                raise InvalidState("fragments of one message must all be str or all bytes")
            opcode = Opcode.CONT
        else:
            opcode = Opcode.TEXT if text else Opcode.BINARY
            self._send_opcode = opcode
            self._send_extended = compress and self._encoders is not None
        if fin:
            self._send_opcode = 0
        self._data_frame(opcode, payload, fin, self._send_extended)

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a ping (at most 125 bytes of payload)."""
        self._check_open()
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload is limited to 125 bytes")
        self._frame(Opcode.PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Queue an unsolicited pong (at most 125 bytes of payload)."""
        self._check_open()
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("pong payload is limited to 125 bytes")
        self._frame(Opcode.PONG, data)

    def defer_pongs(self, defer: bool) -> None:
        """While ``defer`` is true, keep only the latest ping's pong; queue it when false."""
        self._defer_pongs = defer
        if not defer and self._pending_pong is not None:
            payload, self._pending_pong = self._pending_pong, None
            if self.state is State.OPEN:
                self._frame(Opcode.PONG, payload)

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2).

        ``code`` None sends a close frame without status. Raises ``ValueError`` for a code that
        cannot be sent or a reason over 123 bytes, :class:`InvalidState` if not open.
        """
        self._check_open()
        payload = serialize_close(code, reason)
        self._frame(Opcode.CLOSE, payload)
        self.close_sent = Close(code if code is not None else 1005, reason)
        self.state = State.CLOSING

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame if none was, stop reading."""
        self._close_pending = None
        if self.state is State.OPEN:
            reason_bytes = reason.encode("utf-8")[:123]
            # Never cut a character in half.
            reason = reason_bytes.decode("utf-8", "ignore")
            self._frame(Opcode.CLOSE, serialize_close(code, reason))
            self.close_sent = Close(code, reason)
        self.state = State.CLOSED
        self._discard = True
        self._buffer = b""

    # -----------------------------------------------------------------------------------------
    # Receiving (the parsing is FrameReader's; what it means for the state is decided here)
    # -----------------------------------------------------------------------------------------

    def _protocol_failure(self, exc: ProtocolError) -> None:
        """The peer broke the protocol: the close frame follows at the next data_to_send()."""
        self.failure = exc
        if self.state is State.OPEN:
            reason = str(exc).encode("utf-8")[:123].decode("utf-8", "ignore")
            self._close_pending = (exc.code, reason)
        else:
            self.fail(exc.code, str(exc))

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection."""
        self.eof_received = True
        self._discard = True
        self._buffer = b""
        if self._close_pending is not None:
            self._send_pending_close()
        self.state = State.CLOSED

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            if self.state is State.OPEN:
                if self._defer_pongs:
                    self._pending_pong = payload
                else:
                    self._frame(Opcode.PONG, payload)
            self._event(Ping(payload))
        elif opcode == Opcode.PONG:
            self._event(Pong(payload))
        else:
            code, reason = parse_close(payload)
            self.close_rcvd = Close(code, reason)
            if self.state is State.OPEN:
                # RFC 6455 §5.5.1: answer with a close frame echoing the status code, at the
                # next data_to_send() (rule 3).
                self._close_pending = (code if code != 1005 else None, "")
            else:
                self.state = State.CLOSED
            self._discard = True
            self._event(self.close_rcvd)
