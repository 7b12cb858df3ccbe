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

Extensions wrap the message path: permessage-deflate (:mod:`.deflate`) claims RSV1, inflates what
comes in and deflates what goes out; nothing else here knows about compression.

Events are plain values: ``str`` for a text message, ``bytes`` for a binary one, and
:class:`Ping`, :class:`Pong`, :class:`Close` for control frames. The opening handshake is the
business of the role-specific subclasses in :mod:`.server` and :mod:`.client`; this class starts
in :attr:`State.OPEN` when used directly.
"""

from __future__ import annotations

import codecs
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TypeAlias

from ._accel import compiled
from .deflate import PerMessageDeflate
from .errors import (
    CloseCode,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidPayload,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from .frames import (
    MAX_CONTROL_PAYLOAD,
    Opcode,
    build_frame,
    parse_close,
    serialize_close,
    serialize_frame,
)
from .masking import BytesLike, apply_mask, join_masked

#: The C version of the receive fast path (see :meth:`Connection._parse`), if in use.
_parse_data_frames: Callable[[memoryview, int, int, int, list[Event]], int] | None = compiled(
    "parse_data_frames"
)

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


_unpack_16 = struct.Struct("!H").unpack_from
_unpack_64 = struct.Struct("!Q").unpack_from
_pack_h64 = struct.Struct("!BBQ").pack
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
#: Payloads at least this large (and immutable) are queued apart from their frame header, to
#: spare a copy; smaller ones are joined to it, one chunk per frame.
_SEPARATE_PAYLOAD = 2**16
#: Parts of a message in several chunks at least this large are kept as they come (a view of the
#: read, or the decoded text) and joined at the end; smaller ones are coalesced as they arrive,
#: so that a message of a million one-byte fragments costs about its size, not a Python object
#: per fragment. Large enough that a kept part's own overhead (a few hundred bytes) stays under
#: 2 % of what it holds.
_KEEP_PART = 2**14
#: Small pieces of text (decoded chunks under _KEEP_PART) are joined by batches of this many.
_TEXT_BATCH = 256
_VALID_OPCODES = frozenset(int(op) for op in Opcode)


class Role(Enum):
    """Which end of the connection this is."""

    SERVER = "server"
    CLIENT = "client"


class State(IntEnum):
    """Connection states (RFC 6455 §4-§7)."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping frame was received (a pong has already been queued in answer)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong frame was received."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """A valid close frame was received; ``code`` is 1005 when it carried no status."""

    code: int
    reason: str


#: What :meth:`Connection.events_received` returns: messages are plain ``str``/``bytes``.
Event: TypeAlias = "str | bytes | Ping | Pong | Close | object"


class Connection:
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
    # each instance a full dict (about 800 bytes more per idle connection).
    __slots__ = (
        "role",
        "state",
        "max_message_size",
        "max_frame_size",
        "_mask_out",
        "_expect_masked",
        "rsv_allowed",
        "_events",
        "_out",
        "_buffer",
        "_discard",
        "_remaining",
        "_frame_fin",
        "_frame_mask",
        "_frame_offset",
        "_msg_opcode",
        "_msg_parts",
        "_msg_masked",
        "_msg_bytes",
        "_msg_text",
        "_read_size",
        "_msg_size",
        "_decoder",
        "_msg_compressed",
        "_send_opcode",
        "_send_compressed",
        "deflate",
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
        self.role = role
        self.state = state
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self._mask_out = role is Role.CLIENT
        self._expect_masked = role is Role.SERVER
        #: RSV bits an extension claims (permessage-deflate claims RSV1: 0x40).
        self.rsv_allowed = 0

        self._events: list[Event] = []
        self._out: list[bytes] = []
        self._buffer = bytearray()
        self._discard = False  # stop parsing input: after a close frame or a failure

        # The frame being read: _remaining < 0 means a header is expected next.
        self._remaining = -1
        self._frame_fin = False
        self._frame_mask: bytes | None = None
        self._frame_offset = 0
        # The message being reassembled: _msg_opcode 0 means none. Its large parts are kept in
        # _msg_parts (text, compressed binary) or _msg_masked, in order; the small ones since
        # the last large part are coalesced in _msg_bytes or _msg_text (see _payload_chunk).
        self._msg_opcode = 0
        self._msg_parts: list[bytes] | list[str] = []
        # A binary, uncompressed message in several chunks: its large parts still masked,
        # unmasked and joined in one pass at the end.
        self._msg_masked: list[tuple[BytesLike, bytes | None]] | None = None
        # Binary: the small parts, unmasked (and inflated), in one growing buffer.
        self._msg_bytes: io.BytesIO | None = None
        # Text: the small pieces decoded since the last batch was joined (< _TEXT_BATCH).
        self._msg_text: list[str] | None = None
        # The size of the bytes object being parsed, whose slices may be kept; 0 otherwise.
        self._read_size = 0
        self._msg_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._msg_compressed = False
        # The message being sent in fragments: 0 means none.
        self._send_opcode = 0
        self._send_compressed = False
        #: permessage-deflate, once negotiated (see :meth:`use_deflate`).
        self.deflate: PerMessageDeflate | None = None
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
        events, self._events = self._events, []
        return events

    def data_to_send(self, *, send_close: bool = True) -> list[bytes]:
        """Return and clear the bytes queued for the wire.

        The close frame owed after a failure or a close frame from the peer is queued here,
        after anything the application sent since (unless ``send_close`` is false: the I/O layer
        will ask again once the application has answered).
        """
        if self._close_pending is not None and send_close:
            self._send_pending_close()
        out, self._out = self._out, []
        return out

    @property
    def can_ping(self) -> bool:
        """Whether this connection has ping frames, so that keepalive can run (draft-76 has
        none: see :mod:`.hixie76`)."""
        return True

    @property
    def close_pending(self) -> bool:
        """A failure or the peer's close frame was received; our close frame is not queued yet."""
        return self._close_pending is not None

    def _send_pending_close(self) -> None:
        assert self._close_pending is not None
        code, reason = self._close_pending
        self._close_pending = None
        if self.state is State.OPEN:
            self._frame(Opcode.CLOSE, serialize_close(code, reason))
            self.close_sent = Close(code if code is not None else 1005, reason)
        self.state = State.CLOSED

    def use_deflate(self, codec: PerMessageDeflate) -> None:
        """Turn on permessage-deflate as negotiated in the handshake (claims RSV1)."""
        self.deflate = codec
        self.rsv_allowed |= 0x40

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
        return cls(self.close_code, self.close_reason, sent)

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send in state {self.state.name}")

    def _frame(
        self, opcode: int, payload: bytes | bytearray | memoryview, fin: bool = True
    ) -> None:
        if self._mask_out:
            self._out.append(
                serialize_frame(opcode, payload, fin=fin, mask=True, mask_key=os.urandom(4))
            )
        else:
            self._out.append(serialize_frame(opcode, payload, fin=fin))

    def _data_frame(
        self,
        opcode: int,
        payload: bytes | bytearray | memoryview,
        fin: bool,
        compress: bool,
    ) -> None:
        """Queue a data frame, deflated when the message is (RSV1 on its first frame only)."""
        if not compress:
            self._frame(opcode, payload, fin)
            return
        assert self.deflate is not None
        payload = self.deflate.compress(payload, fin)
        b_mask = os.urandom(4) if self._mask_out else None
        self._out.append(
            serialize_frame(
                opcode,
                payload,
                fin=fin,
                rsv1=opcode != Opcode.CONT,
                mask=self._mask_out,
                mask_key=b_mask,
            )
        )

    def _queue_large(self, first_byte: int, payload: bytes | bytearray | memoryview) -> None:
        """Queue an unmasked, uncompressed frame with a payload of 64 KiB or more."""
        if type(payload) is bytes:
            # Immutable: queue it as its own chunk rather than copy it behind the header; the
            # I/O layer hands both to the transport without joining them.
            # 64 KiB or more: the 64-bit length encoding.
            self._out.append(_pack_h64(first_byte, 127, len(payload)))
            self._out.append(payload)
        else:
            self._out.append(build_frame(first_byte, payload))

    def send_text(self, text: str, *, compress: bool = True) -> None:
        """Queue a text message (deflated if negotiated, unless ``compress`` is false)."""
        if (
            self.state is not State.OPEN
            or self._send_opcode
            or self._mask_out
            or (compress and self.deflate is not None)
        ):
            self._send_data(Opcode.TEXT, text.encode("utf-8"), compress)
            return
        # The server's common case, kept short: an unmasked, uncompressed frame.
        data = text.encode("utf-8")
        if len(data) < _SEPARATE_PAYLOAD:
            self._out.append(build_frame(0x81, data))
        else:
            self._queue_large(0x81, data)

    def send_binary(self, data: bytes | bytearray | memoryview, *, compress: bool = True) -> None:
        """Queue a binary message (deflated if negotiated, unless ``compress`` is false)."""
        if (
            self.state is not State.OPEN
            or self._send_opcode
            or self._mask_out
            or (compress and self.deflate is not None)
        ):
            self._send_data(Opcode.BINARY, data, compress)
            return
        # The server's common case, kept short: an unmasked, uncompressed frame.
        if len(data) < _SEPARATE_PAYLOAD:
            self._out.append(build_frame(0x82, data))
        else:
            self._queue_large(0x82, data)

    def _send_data(
        self, opcode: int, payload: bytes | bytearray | memoryview, compress: bool
    ) -> None:
        self._check_open()
        if self._send_opcode:
            raise InvalidState("a fragmented message is being sent")
        self._data_frame(opcode, payload, True, compress and self.deflate is not None)

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
        and, for compressed ones, a codec with this connection's negotiated deflate parameters
        and no context takeover. Only unmasked frames can be shared, so only servers take them.

        Raises:
            InvalidState: not open, a fragmented message is being sent, or this end masks.
        """
        self._check_open()
        if self._send_opcode:
            raise InvalidState("a fragmented message is being sent")
        if self._mask_out:
            raise InvalidState("a client masks every frame: it cannot send shared frames")
        self._out.append(frames)

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
            self._send_compressed = compress and self.deflate is not None
        if fin:
            self._send_opcode = 0
        self._data_frame(opcode, payload, fin, self._send_compressed)

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
        self._buffer = bytearray()

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the socket."""
        if self._discard or not data:
            return
        buf: bytes | bytearray | memoryview
        if self._buffer:
            self._buffer += data
            buf = self._buffer
            self._read_size = 0
        else:
            buf = data
            # Immutable: a payload chunk may keep a view of it rather than a copy.
            self._read_size = len(data) if type(data) is bytes else 0
        try:
            # A memoryview, so that payloads are sliced without a copy; released before the
            # buffer is resized below.
            with memoryview(buf) as view:
                pos = self._parse(view)
        except ProtocolError as exc:
            # Stop reading now; the close frame follows at the next data_to_send().
            self.failure = exc
            self._discard = True
            self._buffer = bytearray()
            if self.state is State.OPEN:
                reason = str(exc).encode("utf-8")[:123].decode("utf-8", "ignore")
                self._close_pending = (exc.code, reason)
            else:
                self.fail(exc.code, str(exc))
            return
        if self._discard:
            self._buffer = bytearray()
        elif buf is self._buffer:
            del self._buffer[:pos]
        elif pos < len(buf):
            self._buffer = bytearray(buf[pos:])

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection."""
        self.eof_received = True
        self._discard = True
        self._buffer = bytearray()
        if self._close_pending is not None:
            self._send_pending_close()
        self.state = State.CLOSED

    def _parse(self, buf: memoryview) -> int:
        """Consume as many frames (and partial data payloads) as ``buf`` holds; return the end."""
        pos = 0
        end = len(buf)
        events = self._events
        # The header's second byte of a whole small data frame from the peer: masked (0x80)
        # when we are the server.
        mask_bit = 0x80 if self._expect_masked else 0
        max_frame = self.max_frame_size
        max_message = self.max_message_size
        parse_in_c = _parse_data_frames
        if parse_in_c is not None:
            limits = [n for n in (max_frame, max_message) if n is not None]
            limit = min(limits) if limits else -1
        while not self._discard:
            if parse_in_c is not None and self._remaining < 0 and not self._msg_opcode:
                # The same fast path, in C, for a whole run of frames at once.
                pos = parse_in_c(buf, pos, mask_bit, limit, events)
            if self._remaining < 0 and end - pos >= 2 and not self._msg_opcode:
                # Fast path: a whole unfragmented, uncompressed data frame (FIN set, RSV clear,
                # text or binary) with no message in progress. Anything else, including a frame
                # that is not all here yet, takes the general path below.
                b0 = buf[pos]
                b1 = buf[pos + 1]
                if (b0 == 0x82 or b0 == 0x81) and b1 & 0x80 == mask_bit:
                    length = b1 & 0x7F
                    start = pos + 2
                    if length == 126:
                        if end - pos >= 4:
                            length = (buf[pos + 2] << 8) | buf[pos + 3]
                        start = pos + 4
                    elif length == 127:
                        start = pos + 10
                        if end - pos >= 10:
                            (length,) = _unpack_64(buf, pos + 2)
                    if mask_bit:
                        start += 4
                    stop = start + length
                    if (
                        stop <= end
                        and length < 0x8000000000000000
                        and (max_frame is None or length <= max_frame)
                        and (max_message is None or length <= max_message)
                    ):
                        if mask_bit:
                            payload = apply_mask(buf[start:stop], buf[start - 4 : start])
                        else:
                            payload = buf[start:stop].tobytes()
                        pos = stop
                        if b0 == 0x81:
                            try:
                                events.append(payload.decode("utf-8"))
                            except UnicodeDecodeError as exc:
                                raise InvalidPayload("invalid UTF-8 in text message") from exc
                        else:
                            events.append(payload)
                        continue
            if self._remaining >= 0:
                # Inside a data frame whose header was consumed earlier.
                take = min(self._remaining, end - pos)
                if take == 0 and self._remaining:
                    return pos
                self._payload_chunk(buf[pos : pos + take])
                pos += take
                continue
            if end - pos < 2:
                return pos
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            length = b1 & 0x7F
            self._check_header(b0, b1, opcode, fin, length)
            hlen = 2
            if length == 126:
                hlen = 4
            elif length == 127:
                hlen = 10
            masked = b1 & 0x80
            if masked:
                hlen += 4
            if end - pos < hlen:
                return pos
            if length == 126:
                (length,) = _unpack_16(buf, pos + 2)
            elif length == 127:
                (length,) = _unpack_64(buf, pos + 2)
                if length >> 63:
                    raise ProtocolError("frame length has its most significant bit set")
            mask = bytes(buf[pos + hlen - 4 : pos + hlen]) if masked else None
            if opcode >= 8:
                # Control frames are small (<= 125): wait until one is whole.
                if end - pos < hlen + length:
                    return pos
                payload = bytes(buf[pos + hlen : pos + hlen + length])
                pos += hlen + length
                if mask is not None:
                    payload = apply_mask(payload, mask)
                self._control_frame(opcode, payload)
                continue
            if opcode != Opcode.CONT:
                self._start_message(opcode, b0 & 0x40)
            self._check_data_size(length)
            pos += hlen
            if fin and end - pos >= length and opcode != Opcode.CONT:
                # Fast path: a whole unfragmented message is in the buffer.
                payload = bytes(buf[pos : pos + length])
                pos += length
                if mask is not None:
                    payload = apply_mask(payload, mask)
                if self._msg_compressed:
                    assert self.deflate is not None
                    payload = self.deflate.decompress(payload, True, self.max_message_size)
                self._msg_opcode = 0
                self._msg_size = 0
                if opcode == Opcode.TEXT:
                    self._decoder = None
                    try:
                        self._events.append(payload.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        raise InvalidPayload("invalid UTF-8 in text message") from exc
                else:
                    self._events.append(payload)
                continue
            self._remaining = length
            self._frame_fin = bool(fin)
            self._frame_mask = mask
            self._frame_offset = 0
            if length == 0:
                self._payload_chunk(b"")
        return pos

    def _check_header(self, b0: int, b1: int, opcode: int, fin: int, length: int) -> None:
        """Validate the first two bytes of a frame header (RFC 6455 §5.2, §5.5)."""
        if b0 & 0x70 & ~self.rsv_allowed:
            raise ProtocolError("reserved bits set without a negotiated extension")
        if opcode not in _VALID_OPCODES:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        if bool(b1 & 0x80) is not self._expect_masked:
            raise ProtocolError(
                "unmasked frame from client" if self._expect_masked else "masked frame from server"
            )
        if opcode >= 8:
            if not fin:
                raise ProtocolError("fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError("control frame payload longer than 125 bytes")
            if b0 & 0x70:
                raise ProtocolError("reserved bits set on a control frame")
        elif opcode == Opcode.CONT:
            if not self._msg_opcode:
                raise ProtocolError("continuation frame without a message to continue")
            if b0 & 0x40:
                # RFC 7692 §6.1: RSV1 marks the first frame of a compressed message only.
                raise ProtocolError("RSV1 set on a continuation frame")
        elif self._msg_opcode:
            raise ProtocolError("new message started before the previous one ended")

    def _check_data_size(self, length: int) -> None:
        if self.max_frame_size is not None and length > self.max_frame_size:
            raise PayloadTooBig(f"frame of {length} bytes exceeds limit of {self.max_frame_size}")
        if self._msg_compressed:
            return  # the inflated size is what counts; checked while inflating
        limit = self.max_message_size
        if limit is not None and self._msg_size + length > limit:
            raise PayloadTooBig(f"message exceeds limit of {limit} bytes")
        self._msg_size += length

    def _start_message(self, opcode: int, compressed: int) -> None:
        self._msg_opcode = opcode
        self._msg_parts = []
        self._msg_bytes = None
        self._msg_text = None
        self._msg_compressed = bool(compressed)
        self._msg_masked = [] if opcode == Opcode.BINARY and not compressed else None
        self._decoder = _Utf8Decoder() if opcode == Opcode.TEXT else None

    def _payload_chunk(self, chunk: bytes | bytearray | memoryview) -> None:
        """Deliver part of a data frame's payload to the message being reassembled.

        What a message in several chunks holds stays within a small factor of its size (counted
        against ``max_message_size``), however many fragments it comes in: parts of at least
        ``_KEEP_PART`` bytes are kept whole; smaller ones are appended to one buffer as they
        arrive (binary) or joined by batches (text), never kept one object per fragment.
        """
        mask = self._frame_mask
        masked_parts = self._msg_masked
        if masked_parts is not None:
            # Binary, uncompressed: keep a large part as it came (a view of the immutable read
            # when it covers at least half of it, so that memory held stays within twice the
            # size counted against the limit; a copy otherwise) and unmask the large parts at
            # the end, in one pass: one copy of a large message fewer than unmask-then-join.
            size = len(chunk)
            if size:
                if mask is not None:
                    rotate = self._frame_offset & 3
                    if rotate:
                        mask = mask[rotate:] + mask[:rotate]
                small = self._msg_bytes
                if size >= _KEEP_PART:
                    if small is not None:
                        masked_parts.append((small.getvalue(), None))
                        self._msg_bytes = None
                    if not (self._read_size and 2 * size >= self._read_size):
                        chunk = bytes(chunk)
                    masked_parts.append((chunk, mask))
                elif small is None and masked_parts and len(masked_parts[-1][0]) >= _KEEP_PART:
                    # Right after a large part (typically the end of a large fragment, cut by
                    # a read), which pays for it: kept as it came, at most one per large part.
                    masked_parts.append((bytes(chunk), mask))
                else:
                    if small is None:
                        small = self._msg_bytes = io.BytesIO()
                    small.write(chunk if mask is None else apply_mask(chunk, mask))
            self._frame_offset += size
            self._remaining -= size
            if self._remaining == 0:
                self._remaining = -1
                if self._frame_fin:
                    self._finish_message()
            return
        if mask is not None and chunk:
            rotate = self._frame_offset & 3
            if rotate:
                mask = mask[rotate:] + mask[:rotate]
            data = apply_mask(chunk, mask)
        else:
            data = bytes(chunk)
        self._frame_offset += len(data)
        self._remaining -= len(data)
        if self._msg_compressed:
            assert self.deflate is not None
            limit = self.max_message_size
            data = self.deflate.decompress(
                data,
                self._remaining == 0 and self._frame_fin,
                None if limit is None else limit - self._msg_size,
            )
            self._msg_size += len(data)
        decoder = self._decoder
        if decoder is not None:
            try:
                text = decoder.decode(data)
            except UnicodeDecodeError as exc:
                raise InvalidPayload("invalid UTF-8 in text message") from exc
            pending = decoder.getstate()[0]
            # CPython buffers ED A0..BF (a UTF-16 surrogate) until the sequence completes;
            # it can never become valid, so fail now rather than one frame later.
            if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
                raise InvalidPayload("invalid UTF-8 in text message")
            if text:
                self._add_text(text)
        elif data:
            self._add_bytes(data)
        if self._remaining == 0:
            self._remaining = -1
            if self._frame_fin:
                self._finish_message()

    def _add_text(self, text: str) -> None:
        """Add decoded text to the message: large pieces as they are, small ones by batches
        (but one right after a large piece as it is, as for binary)."""
        small = self._msg_text
        parts = self._msg_parts
        if len(text) >= _KEEP_PART:
            if small:
                parts.append("".join(small))  # type: ignore[arg-type]
                small.clear()
            parts.append(text)  # type: ignore[arg-type]
        elif not small and parts and len(parts[-1]) >= _KEEP_PART:
            parts.append(text)  # type: ignore[arg-type]
        elif small is None:
            self._msg_text = [text]
        else:
            small.append(text)
            if len(small) >= _TEXT_BATCH:
                parts.append("".join(small))  # type: ignore[arg-type]
                small.clear()

    def _add_bytes(self, data: bytes) -> None:
        """Add inflated bytes to a compressed binary message (large parts as they are, and
        one right after a large one, as for uncompressed binary)."""
        small = self._msg_bytes
        parts = self._msg_parts
        if len(data) >= _KEEP_PART:
            if small is not None:
                parts.append(small.getvalue())  # type: ignore[arg-type]
                self._msg_bytes = None
            parts.append(data)  # type: ignore[arg-type]
        elif small is None and parts and len(parts[-1]) >= _KEEP_PART:
            parts.append(data)  # type: ignore[arg-type]
        else:
            if small is None:
                small = self._msg_bytes = io.BytesIO()
            small.write(data)

    def _finish_message(self) -> None:
        parts = self._msg_parts
        small = self._msg_bytes
        message: str | bytes
        if self._msg_masked is not None:
            masked_parts = self._msg_masked
            if small is not None:
                if not masked_parts:
                    # Only small parts: the buffer is the message, without a copy.
                    message = small.getvalue()
                else:
                    masked_parts.append((small.getvalue(), None))
                    message = join_masked(masked_parts)
            else:
                message = join_masked(masked_parts)
            self._msg_masked = None
        elif self._decoder is not None:
            try:
                tail = self._decoder.decode(b"", True)
            except UnicodeDecodeError as exc:
                raise InvalidPayload("text message ends inside a UTF-8 sequence") from exc
            if self._msg_text:
                parts.append("".join(self._msg_text))  # type: ignore[arg-type]
                self._msg_text = None
            message = "".join(parts) + tail  # type: ignore[arg-type]
        elif small is not None and not parts:
            message = small.getvalue()
        else:
            if small is not None:
                parts.append(small.getvalue())  # type: ignore[arg-type]
            message = b"".join(parts)  # type: ignore[arg-type]
        self._events.append(message)
        self._msg_opcode = 0
        self._msg_parts = []
        self._msg_bytes = None
        self._msg_text = None
        self._msg_size = 0
        self._decoder = None

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            if self.state is State.OPEN:
                if self._defer_pongs:
                    self._pending_pong = payload
                else:
                    self._frame(Opcode.PONG, payload)
            self._events.append(Ping(payload))
        elif opcode == Opcode.PONG:
            self._events.append(Pong(payload))
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
            self._events.append(self.close_rcvd)
