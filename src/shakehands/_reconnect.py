"""The reconnecting iterators' loop without its I/O, shared by both clients (asyncio and sync).

Not in :mod:`shakehands.protocol`: it logs (``shakehands.client``), and the core imports no
I/O (``logging`` brings ``threading``). The policies it applies are the core's
(:func:`~shakehands.protocol.client.is_transient`,
:data:`~shakehands.protocol.client.RETRY_CLOSE_CODES`, the backoff).
"""

from __future__ import annotations

import logging

from .protocol.client import RETRY_CLOSE_CODES, Backoff, is_transient

__all__ = ["Reconnection"]

_logger = logging.getLogger("shakehands.client")


class Reconnection:
    """The reconnecting iterators' loop without its I/O, for both clients (``async for ws in
    connect(uri)``, :func:`shakehands.sync.client.reconnect`): the attempts' count, the
    backoff's delays, what a failed attempt or a lost connection leads to, and the log lines
    of each step (``shakehands.client`` logger).

    The client calls :meth:`connecting` before each attempt, then :meth:`failed` or
    :meth:`connected`, and :meth:`lost` once it has closed a connection it yielded.
    """

    def __init__(self, where: str, backoff: Backoff) -> None:
        #: What the log lines name: the URI (redacted) or the Unix socket's path.
        self.where = where
        self.backoff = backoff
        self.attempt = 0
        self._delays = backoff.delays()

    def connecting(self) -> None:
        """An attempt starts."""
        self.attempt += 1
        _logger.info("connecting to %s (attempt %d)", self.where, self.attempt)

    def failed(self, exc: Exception) -> float | None:
        """The attempt raised ``exc``: the delay before the next one, or ``None`` when ``exc``
        is not worth a retry (:func:`is_transient`; the client raises it)."""
        if not is_transient(exc):
            _logger.error("connecting to %s failed, giving up: %s", self.where, exc)
            return None
        delay = next(self._delays)
        _logger.warning("connecting to %s failed: %s; retrying in %.2f s", self.where, exc, delay)
        return delay

    def connected(self) -> None:
        """The attempt gave a connection (the client yields it)."""
        _logger.info("connected to %s", self.where)

    def lost(self, was_open: bool, close_code: int | None) -> float | None:
        """The client closed the connection it yielded (``was_open``: it was still open, the
        caller asked for the next one): the delay before connecting again (``0.0``: at once),
        or ``None`` when the server's ``close_code`` ends the iteration
        (:data:`RETRY_CLOSE_CODES`). The count and the backoff start again."""
        self.attempt = 0
        self._delays = self.backoff.delays()
        if was_open:
            return 0.0
        if close_code not in RETRY_CLOSE_CODES:
            _logger.info(
                "%s closed the connection with %s: not reconnecting", self.where, close_code
            )
            return None
        delay = next(self._delays)
        _logger.warning(
            "%s closed the connection with %s; reconnecting in %.2f s",
            self.where,
            close_code,
            delay,
        )
        return delay
