"""What the connection needs from an extension (RFC 6455 §9), and nothing else.

An :class:`Extension` is a per-message codec negotiated in the opening handshake: it claims RSV
bits, says whether an incoming message uses it (from the RSV bits of the message's first frame),
decodes the payload of such a message as it arrives, and encodes the payload of outgoing frames.
The frame reader and the send paths of the connection reach extensions through this interface
only, so they never learn an extension's name; negotiation (the ``Sec-WebSocket-Extensions``
header) stays with each extension's own module. This module knows no extension, no frame and no
I/O.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Extension"]


class Extension(Protocol):
    """A negotiated per-message extension, as the connection sees it.

    Attributes:
        rsv_bits: the RSV bits of the first frame's first byte that the extension claims
            (``0x40`` RSV1, ``0x20`` RSV2, ``0x10`` RSV3). A frame with an unclaimed bit set fails
            the connection (1002); a claimed bit is only allowed on a message's first frame.
    """

    rsv_bits: int

    def applies(self, rsv: int, /) -> bool:
        """Whether an incoming message whose first frame has these RSV bits uses the extension."""
        ...

    def decode(
        self, data: bytes | bytearray | memoryview, final: bool, max_size: int | None, /
    ) -> bytes:
        """Decode the next payload chunk of an incoming message (``final`` on its last one).

        Args:
            data: the chunk, unmasked.
            final: whether this is the end of the message.
            max_size: the most bytes the result may hold (``None``: no limit).

        Raises:
            PayloadTooBig: the result would exceed ``max_size`` (1009), before it is allocated.
            InvalidPayload: the data cannot be decoded (1007).
        """
        ...

    def encode(self, data: bytes | bytearray | memoryview, fin: bool, /) -> bytes:
        """Encode the payload of one outgoing frame (``fin`` on the message's last frame)."""
        ...
