"""Bytes -> frames -> messages (RFC 6455 §5): the receive half of the connection, with no I/O.

:class:`FrameReader` owns everything between the bytes read from the socket and the events
handed up: the frame header checks, the limits (``max_frame_size``, ``max_message_size``), the
unmasking, UTF-8 validation, the reassembly of fragmented messages within a memory bound, and
the three receive paths: a run of whole simple data frames parsed in C (``parse_data_frames``
from :mod:`._accel`), the same in Python, and the general, incremental path for everything else.
Payloads are consumed as they arrive: a data frame's bytes are unmasked, decoded by the
message's extensions, UTF-8-checked and counted against the limits before the frame is complete.

It must not know: the connection's state machine, sending, or closing (control frames go to
:meth:`FrameReader._control_frame` and failures to :meth:`FrameReader._protocol_failure`, both
the connection's), nor any extension by name: a message whose first frame carries RSV bits is
decoded by the negotiated extensions that claim them, through :class:`~.extensions.Extension`.

Longer than the ~500 lines aimed at per module because the two Python receive paths and the
reassembly share one per-frame state, and the fast paths must stay inline (a method call more per
frame is measurable there).
"""

from __future__ import annotations

import codecs
import io
import struct
from collections.abc import Callable

from ._accel import compiled
from .errors import InvalidPayload, PayloadTooBig, ProtocolError
from .events import Event
from .extensions.base import Extension
from .frames import MAX_CONTROL_PAYLOAD, Opcode
from .masking import BytesLike, apply_mask, join_masked

__all__ = ["FrameReader", "INVALID_UTF8", "decode_utf8"]

#: The C version of the receive fast path (see :meth:`FrameReader._parse`), if in use.
_parse_data_frames: Callable[[memoryview, int, int, int, list[Event]], int] | None = compiled(
    "parse_data_frames"
)

_unpack_16 = struct.Struct("!H").unpack_from
_unpack_64 = struct.Struct("!Q").unpack_from
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")
#: Parts of a message in several chunks at least this large are kept as they come (a view of the
#: read, or the decoded text) and joined at the end; smaller ones are coalesced as they arrive,
#: so that a message of a million one-byte fragments costs about its size, not a Python object
#: per fragment. Large enough that a kept part's own overhead (a few hundred bytes) stays under
#: 2 % of what it holds.
_KEEP_PART = 2**14
#: Small pieces of text (decoded chunks under _KEEP_PART) are joined by batches of this many.
_TEXT_BATCH = 256
_VALID_OPCODES = frozenset(int(op) for op in Opcode)
#: What an idle connection holds instead of an empty list of events or bytes to send, and an
#: empty input buffer: one shared immutable object rather than one container per connection
#: (issue 14). The first event or chunk replaces it with a list (see :meth:`FrameReader._event`).
NOTHING: tuple[()] = ()

#: The failure (1007) of a text message that is not UTF-8, wherever it is found.
INVALID_UTF8 = "invalid UTF-8 in text message"


def decode_utf8(payload: bytes) -> str:
    """Decode a whole text message.

    Raises:
        InvalidPayload: it is not UTF-8 (1007).
    """
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(INVALID_UTF8) from exc


def _decode_utf8_chunk(decoder: codecs.IncrementalDecoder, data: bytes) -> str:
    """Decode the next chunk of a text message; fail as soon as it cannot be UTF-8."""
    try:
        text = decoder.decode(data)
    except UnicodeDecodeError as exc:
        raise InvalidPayload(INVALID_UTF8) from exc
    pending = decoder.getstate()[0]
    # CPython buffers ED A0..BF (a UTF-16 surrogate) until the sequence completes; it can never
    # become valid, so fail now rather than one frame later.
    if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
        raise InvalidPayload(INVALID_UTF8)
    return text


class FrameReader:
    """The receive half of :class:`~.connection.Connection` (a base class: the parse loop's
    state is the connection's own, so the fast paths pay no call per frame).

    Args:
        expect_masked: the peer must mask its frames (we are the server).
        max_message_size: largest message accepted, in bytes (``None``: no limit).
        max_frame_size: largest single frame accepted (``None``: no limit).
    """

    __slots__ = (
        "max_message_size",
        "max_frame_size",
        "_expect_masked",
        "rsv_allowed",
        "extensions",
        "_events",
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
        "_msg_decoders",
    )

    def __init__(
        self, *, expect_masked: bool, max_message_size: int | None, max_frame_size: int | None
    ) -> None:
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self._expect_masked = expect_masked
        #: RSV bits the negotiated extensions claim (see :meth:`.ExtensionHost.use_extension`).
        self.rsv_allowed = 0
        #: The negotiated extensions, in the order of the handshake's answer.
        self.extensions: tuple[Extension, ...] = ()

        # Empty (falsy) until the first event: see NOTHING.
        self._events: list[Event] | tuple[()] = NOTHING
        # Bytes of an incomplete frame, kept for the next read; b"" when none (a bytearray
        # once there are some).
        self._buffer: bytearray | bytes = b""
        self._discard = False  # stop parsing input: after a close frame or a failure

        # The frame being read: _remaining < 0 means a header is expected next.
        self._remaining = -1
        self._frame_fin = False
        self._frame_mask: bytes | None = None
        self._frame_offset = 0
        # The message being reassembled: _msg_opcode 0 means none. Its large parts are kept in
        # _msg_parts (text, decoded binary) or _msg_masked, in order; the small ones since the
        # last large part are coalesced in _msg_bytes or _msg_text (see _payload_chunk).
        self._msg_opcode = 0
        # Set by _start_message (unset between messages: no list per idle connection).
        self._msg_parts: list[bytes] | list[str]
        # A binary message in several chunks that no extension decodes: its large parts still
        # masked, unmasked and joined in one pass at the end.
        self._msg_masked: list[tuple[BytesLike, bytes | None]] | None = None
        # Binary: the small parts, unmasked (and decoded), in one growing buffer.
        self._msg_bytes: io.BytesIO | None = None
        # Text: the small pieces decoded since the last batch was joined (< _TEXT_BATCH).
        self._msg_text: list[str] | None = None
        # The size of the bytes object being parsed, whose slices may be kept; 0 otherwise.
        self._read_size = 0
        self._msg_size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        # The extensions that decode the message being read, in decoding order (the reverse of
        # the negotiated order); empty for most messages.
        self._msg_decoders: tuple[Extension, ...] = ()

    def use_extension(self, extension: Extension) -> None:
        """Turn on an extension negotiated in the handshake; it claims its RSV bits.

        Outgoing payloads are encoded in the order extensions are added, incoming ones decoded
        in reverse.

        Raises:
            ValueError: it claims no RSV bit, or one that another extension claims already.
        """
        bits = extension.rsv_bits
        if not bits or bits & ~0x70 or bits & self.rsv_allowed:
            raise ValueError(f"extension claims RSV bits {bits:#x}, not free among 0x70")
        self.extensions = (*self.extensions, extension)
        self.rsv_allowed |= bits

    def between_messages(self, *, extensions: bool = False) -> bool:
        """Whether the next byte starts a frame of a new message: nothing is buffered, no frame
        or message is partly read, parsing goes on, and no extension is negotiated (unless
        ``extensions``: the taker decodes whole messages with :attr:`extensions` itself). Only
        then may a reader of whole simple frames (the callback API's compiled data path) take
        over the following bytes, and hand the rest back here in order."""
        return (
            self._remaining < 0
            and not self._msg_opcode
            and not self._buffer
            and not self._discard
            and (extensions or not self.extensions)
        )

    def fail_received(self, exc: ProtocolError) -> None:
        """A reader of whole frames outside this one (the compiled data path, between
        messages) found that the peer broke the protocol (an extension could not decode a
        message, or its text is not UTF-8): stop reading and fail as :meth:`receive_data`
        does when it finds the same."""
        self._discard = True
        self._buffer = b""
        self._protocol_failure(exc)

    def _event(self, event: Event) -> None:
        """Add an event for the next :meth:`events_received` call."""
        events = self._events
        if events is NOTHING:
            self._events = [event]
        else:
            # A list (maybe empty, and maybe held by _parse: append to it, never replace it).
            events.append(event)  # type: ignore[union-attr]

    # The connection's side (see the module docstring).

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        """A whole control frame was received (ping, pong, close)."""
        raise NotImplementedError

    def _protocol_failure(self, exc: ProtocolError) -> None:
        """The peer broke the protocol; parsing has stopped and the input is dropped."""
        raise NotImplementedError

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the socket."""
        if self._discard or not data:
            return
        buf: bytes | bytearray | memoryview
        if self._buffer:
            # Not empty: a bytearray (see below).
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
            self.fail_received(exc)  # stop reading now
            return
        if self._discard:
            self._buffer = b""
        elif buf is self._buffer:
            if pos == len(buf):
                self._buffer = b""
            else:
                del buf[:pos]  # type: ignore[union-attr]  # kept bytes are a bytearray
        elif pos < len(buf):
            self._buffer = bytearray(buf[pos:])

    #: Whether the bytes are RFC 6455 frames (a draft-76 connection replaces the parsing: see
    #: :attr:`.Connection.shares_frames`).
    shares_frames = True

    def _receive_close_frame(self, data: bytes | bytearray | memoryview) -> bool:
        """Take ``data`` if it is exactly one whole masked close frame from the peer, read
        between frames (the last read of most connections): the same checks and the same
        outcome as :meth:`receive_data`'s general loop, without it. ``False`` (nothing done)
        for anything else, which :meth:`receive_data` then parses."""
        size = len(data)
        if (
            6 <= size <= 131
            and data[0] == 0x88  # FIN, no RSV bit, close
            and data[1] == 0x80 | (size - 6)  # masked, the length in one byte: all of it here
            and self._expect_masked
            and self._remaining < 0
            and not self._buffer
            and not self._discard
            and self.shares_frames  # RFC 6455 framing (draft-76 replaces _parse)
        ):
            try:
                self._control_frame(0x8, apply_mask(data[6:], data[2:6]))
            except ProtocolError as exc:
                self.fail_received(exc)
            return True
        return False

    def _parse(self, buf: memoryview) -> int:
        """Consume as many frames (and partial data payloads) as ``buf`` holds; return the end."""
        pos = 0
        end = len(buf)
        events = self._events
        if not isinstance(events, list):  # NOTHING: the list the events of this read go to
            events = []
            self._events = events
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
                # Fast path: a whole unfragmented data frame without extension (FIN set, RSV clear,
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
                                raise InvalidPayload(INVALID_UTF8) from exc
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
                self._start_message(opcode, b0 & 0x70)
            self._check_data_size(length)
            pos += hlen
            if fin and end - pos >= length and opcode != Opcode.CONT:
                # Fast path: a whole unfragmented message is in the buffer.
                payload = bytes(buf[pos : pos + length])
                pos += length
                if mask is not None:
                    payload = apply_mask(payload, mask)
                # A new message: nothing counted yet, the whole limit is the decoders'.
                for extension in self._msg_decoders:
                    payload = extension.decode(payload, True, max_message)
                self._msg_opcode = 0
                self._msg_size = 0
                if opcode == Opcode.TEXT:
                    self._decoder = None
                    try:
                        events.append(payload.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        raise InvalidPayload(INVALID_UTF8) from exc
                else:
                    events.append(payload)
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
            rsv = b0 & 0x70
            if rsv:
                # Extensions are per message: their RSV bits mark its first frame only (RFC 7692
                # §6.1). The checks above leave only bits an extension claims.
                name = "RSV1" if rsv & 0x40 else "RSV2" if rsv & 0x20 else "RSV3"
                raise ProtocolError(f"{name} set on a continuation frame")
        elif self._msg_opcode:
            raise ProtocolError("new message started before the previous one ended")

    def _check_data_size(self, length: int) -> None:
        if self.max_frame_size is not None and length > self.max_frame_size:
            raise PayloadTooBig(f"frame of {length} bytes exceeds limit of {self.max_frame_size}")
        if self._msg_decoders:
            return  # the decoded size is what counts; checked while decoding
        limit = self.max_message_size
        if limit is not None and self._msg_size + length > limit:
            raise PayloadTooBig(f"message exceeds limit of {limit} bytes")
        self._msg_size += length

    def _start_message(self, opcode: int, rsv: int) -> None:
        self._msg_opcode = opcode
        self._msg_parts = []
        self._msg_bytes = None
        self._msg_text = None
        decoders: tuple[Extension, ...] = ()
        if rsv:
            extensions = self.extensions
            if len(extensions) == 1:
                # The common case, without building a tuple.
                if extensions[0].applies(rsv):
                    decoders = extensions
            else:
                decoders = tuple(ext for ext in reversed(extensions) if ext.applies(rsv))
        self._msg_decoders = decoders
        self._msg_masked = [] if opcode == Opcode.BINARY and not decoders else None
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
            # Binary, not decoded by an extension: keep a large part as it came (a view of the
            # immutable read when it covers at least half of it, so that memory held stays within
            # twice the size counted against the limit; a copy otherwise) and unmask the large
            # parts at the end, in one pass: one copy of a large message fewer than
            # unmask-then-join.
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
        if self._msg_decoders:
            data = self._decode(data, self._remaining == 0 and self._frame_fin)
            self._msg_size += len(data)
        decoder = self._decoder
        if decoder is not None:
            text = _decode_utf8_chunk(decoder, data)
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

    def _decode(self, data: bytes, final: bool) -> bytes:
        """Decode a payload chunk of the message through its extensions, within the limit."""
        limit = self.max_message_size
        for extension in self._msg_decoders:
            data = extension.decode(data, final, None if limit is None else limit - self._msg_size)
        return data

    def _add_bytes(self, data: bytes) -> None:
        """Add decoded bytes to a binary message that extensions decode (large parts as they
        are, and one right after a large one, as for other binary messages)."""
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
        self._event(message)
        self._msg_opcode = 0
        del self._msg_parts
        self._msg_bytes = None
        self._msg_text = None
        self._msg_size = 0
        self._decoder = None
