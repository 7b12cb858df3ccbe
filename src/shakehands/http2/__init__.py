"""WebSockets over HTTP/2 (RFC 8441): the optional ``http2`` extra, built on ``h2``.

:mod:`shakehands.http2.server` is what the asyncio servers (``serve``, ``serve_callbacks``)
run on a TLS connection whose ALPN chose ``h2``; it is imported only then, so that importing
shakehands never imports ``h2``. See docs/http2.md.
"""
