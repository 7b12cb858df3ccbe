"""WebSockets over HTTP/2 (RFC 8441): the optional ``http2`` extra, built on ``h2``.

:mod:`shakehands.http2.server` is what the asyncio servers (``serve``, ``serve_callbacks``)
run on a TLS connection whose ALPN chose ``h2``; :mod:`shakehands.http2.client` is what
``connect(..., http2=True)`` and :func:`connect_session` run; both share
:mod:`shakehands.http2.base`. They are imported only when used, so that importing shakehands
(or this package) never imports ``h2``. See docs/http2.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import HTTP2Session, connect_session

__all__ = ["HTTP2Session", "connect_session"]


def __getattr__(name: str) -> Any:
    """``connect_session`` and ``HTTP2Session``, from :mod:`.client` on first use (it imports
    ``h2``: an ``ImportError`` naming the extra without it)."""
    if name in __all__:
        try:
            from . import client
        except ImportError as exc:
            if exc.name is not None and exc.name.split(".")[0] in ("h2", "hyperframe", "hpack"):
                raise ImportError(
                    f"shakehands.http2.{name} needs the h2 package: pip install 'shakehands[http2]'"
                ) from exc
            raise
        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
