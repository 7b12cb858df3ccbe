"""XOR masking of WebSocket payloads (RFC 6455, section 5.3).

Every frame a client sends is masked: byte ``i`` of the payload is XORed with byte ``i % 4`` of a
4-byte masking key, and the server unmasks it the same way (masking is its own inverse). This
module owns that operation: the C version from ``shakehands._speedups`` when :mod:`._accel`
(the one place that decides) says the core uses it, otherwise :func:`apply_mask_python`, a
pure-Python version that is fast enough for small payloads and correct for all of them.
Setting ``SHAKEHANDS_NO_SPEEDUPS`` to a non-empty value other than ``"0"`` forces the
pure-Python version. :data:`USING_SPEEDUPS` tells which one was chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from ._accel import compiled

__all__ = [
    "USING_SPEEDUPS",
    "BytesLike",
    "apply_mask",
    "apply_mask_python",
    "join_masked",
    "join_masked_python",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview
"""What :func:`apply_mask` accepts for both its data and its mask."""


def apply_mask_python(data: BytesLike, mask: BytesLike, /) -> bytes:
    """Return ``data`` XOR-masked with the 4-byte ``mask``, as bytes (pure Python).

    Byte ``i`` of the result is ``data[i] ^ mask[i % 4]``. ``data`` and ``mask`` may be any
    C-contiguous bytes-like object. Raises :class:`ValueError` if ``mask`` is not 4 bytes long.

    The whole payload is XORed as one big integer, which keeps the loop in C.
    """
    if not isinstance(data, bytes | bytearray):
        view = memoryview(data)  # TypeError for objects that are not bytes-like
        if not view.c_contiguous:
            raise BufferError("apply_mask() requires a C-contiguous buffer")
        data = view.cast("B")
    if not isinstance(mask, bytes):
        mask = memoryview(mask).tobytes()
    if len(mask) != 4:
        raise ValueError(f"mask must be 4 bytes long, got {len(mask)}")
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def join_masked_python(parts: list[tuple[BytesLike, bytes | None]], /) -> bytes:
    """Concatenate ``(data, mask)`` pairs: each ``data`` unmasked with its ``mask`` (or as is
    when ``mask`` is None). The reassembly of a message received in several chunks."""
    return b"".join(data if mask is None else apply_mask(data, mask) for data, mask in parts)


apply_mask: Callable[[BytesLike, BytesLike], bytes] = compiled("apply_mask") or apply_mask_python
"""Mask or unmask ``data`` with a 4-byte ``mask``: the C version if available, else Python."""

#: True when :func:`apply_mask` is the C implementation (see :mod:`._accel`).
USING_SPEEDUPS: bool = apply_mask is not apply_mask_python

join_masked: Callable[[list[tuple[BytesLike, bytes | None]]], bytes] = (
    compiled("join_masked") or join_masked_python
)
"""Reassemble masked parts in one pass: :func:`join_masked_python`, in C when available."""
