"""Frames of RFC 6455 §5: opcodes, close codes, header encoding and serialisation.

This module owns the wire format of a single frame: building one (:func:`serialize_frame`), the
close frame payload (:func:`serialize_close` / :func:`parse_close`), and the rules on close codes.
The incremental reader that turns a byte stream into frames and messages lives in
:mod:`shakehands.protocol.connection`, because it shares its state with message reassembly.
It knows nothing about handshakes, roles or I/O.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from enum import IntEnum

from ._accel import compiled
from .errors import InvalidPayload, ProtocolError
from .masking import apply_mask

__all__ = [
    "Opcode",
    "DATA_OPCODES",
    "CONTROL_OPCODES",
    "serialize_frame",
    "build_frame",
    "build_frame_python",
    "serialize_close",
    "parse_close",
    "is_valid_close_code",
    "MAX_CONTROL_PAYLOAD",
]


class Opcode(IntEnum):
    """Frame opcodes (RFC 6455 §5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


#: The opcodes of data frames (RFC 6455 §5.6): continuation, text, binary.
DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
#: The opcodes of control frames (RFC 6455 §5.5): close, ping, pong.
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})

#: RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
MAX_CONTROL_PAYLOAD = 125

_pack_h16 = struct.Struct("!BBH").pack
_pack_h64 = struct.Struct("!BBQ").pack
_pack_code = struct.Struct("!H").pack
_unpack_code = struct.Struct("!H").unpack_from


def serialize_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv: int = 0,
    mask: bool = False,
    mask_key: bytes | None = None,
) -> bytes:
    """Serialise one frame.

    Args:
        opcode: the frame's opcode (see :class:`Opcode`).
        payload: the (unmasked) payload.
        fin: whether this is the last frame of its message.
        rsv1: the RSV1 bit, claimed by permessage-deflate.
        rsv: RSV bits to set (``0x40`` RSV1, ``0x20`` RSV2, ``0x10`` RSV3), as extensions claim.
        mask: whether to mask the payload (clients must, servers must not).
        mask_key: a 4-byte key; random when ``mask`` is true and no key is given.

    Returns:
        The frame's bytes, ready for the wire.

    Example:
        >>> serialize_frame(Opcode.TEXT, b"Hello")
        b'\\x81\\x05Hello'
    """
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0) | rsv
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes((b0, mask_bit | length))
    elif length < 65536:
        header = _pack_h16(b0, mask_bit | 126, length)
    else:
        header = _pack_h64(b0, mask_bit | 127, length)
    if not mask:
        return header + payload if length else header
    if mask_key is None:
        mask_key = os.urandom(4)
    return header + mask_key + apply_mask(payload, mask_key)


def build_frame_python(first_byte: int, payload: bytes | bytearray | memoryview, /) -> bytes:
    """Return an unmasked frame: ``first_byte`` (FIN, RSV, opcode), the length, ``payload``.

    The server's common case, without :func:`serialize_frame`'s options (pure Python; see
    :data:`build_frame`).
    """
    length = len(payload)
    if length < 126:
        header = bytes((first_byte, length))
    elif length < 65536:
        header = _pack_h16(first_byte, 126, length)
    else:
        header = _pack_h64(first_byte, 127, length)
    return header + payload


build_frame: Callable[[int, bytes | bytearray | memoryview], bytes] = (
    compiled("build_frame") or build_frame_python
)
""":func:`build_frame_python`, in C when the core uses ``shakehands._speedups`` (:mod:`._accel`)."""


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame on the wire (RFC 6455 §7.4).

    1000-1003 and 1007-1014 are defined by the RFC and the IANA registry; 3000-4999 belong to
    libraries and applications. 1004 is reserved; 1005, 1006 and 1015 must never be sent.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def serialize_close(code: int | None = None, reason: str = "") -> bytes:
    """Build a close frame payload.

    ``code`` None (or 1005, "no status") gives an empty payload, which carries no reason.

    Raises:
        ValueError: ``code`` cannot be sent, or the payload would exceed 125 bytes.
    """
    if code is None or code == 1005:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    payload = _pack_code(code) + reason.encode("utf-8")
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason is too long (at most 123 bytes of UTF-8)")
    return payload


def parse_close(payload: bytes) -> tuple[int, str]:
    """Parse a close frame payload into ``(code, reason)``.

    An empty payload gives ``(1005, "")`` (RFC 6455 §7.1.5).

    Raises:
        ProtocolError: a one-byte payload or an invalid close code (1002).
        InvalidPayload: the reason is not valid UTF-8 (1007).
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a one-byte payload")
    (code,) = _unpack_code(payload)
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPayload("close reason is not valid UTF-8") from exc
    return code, reason
