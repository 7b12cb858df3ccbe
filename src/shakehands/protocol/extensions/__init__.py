"""Extensions (RFC 6455 §9) behind one interface, and the connection's side of the seam.

:mod:`.base` defines :class:`Extension`, what the connection needs from an extension;
:mod:`.permessage_deflate` is the one extension shakehands negotiates (RFC 7692).
A connection holds the negotiated extensions (``extensions``, ``use_extension``: see
:class:`~shakehands.protocol.reader.FrameReader`); its reader and send paths never name one.
:class:`ExtensionHost` keeps ``use_deflate`` and ``deflate`` on it, the names the handshake code,
broadcasts and callers used before the seam. No frames, no I/O here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Extension
from .permessage_deflate import DeflateOptions, PerMessageDeflate

__all__ = ["Extension", "ExtensionHost", "PerMessageDeflate", "DeflateOptions"]


class ExtensionHost:
    """Mixin of :class:`~shakehands.protocol.connection.Connection`: the names permessage-deflate
    had on it before the seam, kept for the handshake code, broadcasts and callers.

    The extensions themselves, and ``use_extension``, belong to the frame reader
    (:class:`~shakehands.protocol.reader.FrameReader`), which consults them.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        extensions: tuple[Extension, ...]

        def use_extension(self, extension: Extension) -> None: ...

    def use_deflate(self, codec: PerMessageDeflate) -> None:
        """Turn on permessage-deflate as negotiated in the handshake (claims RSV1)."""
        self.use_extension(codec)

    @property
    def deflate(self) -> PerMessageDeflate | None:
        """permessage-deflate, once negotiated (see :meth:`use_deflate`); else ``None``."""
        for extension in self.extensions:
            if isinstance(extension, PerMessageDeflate):
                return extension
        return None
