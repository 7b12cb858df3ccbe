"""The blocking API of an open connection: ``ws.recv()``, ``ws.send()``, ``for message in ws``.

Twin of :mod:`shakehands.asyncio.connection` (same methods, in the same order; only the waiting
differs). :class:`Connection` adds to the socket plumbing of :mod:`.base` (the reader thread, the
outgoing buffer, the timers; its docstring tells how the threads share the work) the inbox of
received messages (:mod:`.messages`), ``send`` that blocks until the message is written, pings
whose pong can be waited for, and the closing handshake. This module knows nothing about
handshakes (see :mod:`.server` and :mod:`.client`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator

from ..protocol.config import Config
from ..protocol.connection import Connection as Protocol
from ..protocol.connection import State
from ..protocol.errors import CloseCode, ConnectionClosedOK
from ..protocol.handshake import Request, Response
from ..protocol.messages import Message, is_fragments, unsendable, with_fin
from .base import LINGER_BYTES, PongWaiter, SocketProtocol
from .messages import Data

__all__ = ["Connection", "Data", "PongWaiter", "LINGER_BYTES"]


class Connection(SocketProtocol):
    """An open WebSocket connection, used from threads.

    Receive with :meth:`recv` or ``for message in ws``; send with :meth:`send`; end with
    :meth:`close` (or a ``with`` block). After the connection closes, :meth:`recv` and
    :meth:`send` raise :class:`~shakehands.ConnectionClosedOK` or
    :class:`~shakehands.ConnectionClosedError`. The subclasses
    :class:`~shakehands.sync.ServerConnection` and :class:`~shakehands.sync.ClientConnection`
    add the opening handshake's :attr:`request`, :attr:`response` and :attr:`subprotocol`.
    """

    def __init__(self, sock: socket.socket, protocol: Protocol, config: Config) -> None:
        super().__init__(sock, protocol, config)
        #: The opening handshake's request (server: the client's; client: ours).
        self.request: Request | None = None
        #: The opening handshake's response.
        self.response: Response | None = None
        #: The subprotocol agreed on, or ``None``.
        self.subprotocol: str | None = None

    @property
    def max_queue(self) -> int:
        """Messages buffered before the reader stops reading (``config.max_queue``)."""
        return self._inbox.max_queue

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Args:
            timeout: seconds to wait at most (``None``: as long as it takes; ``0``: only a
                message already received).

        Raises:
            TimeoutError: no message within ``timeout``.
            ConnectionClosedOK: the connection closed cleanly (and no message is left).
            ConnectionClosedError: it closed with an error, or without a closing handshake.
        """
        return self._inbox.get(timeout)

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes; a clean close ends the loop quietly."""
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    def send(
        self,
        message: Message,
        *,
        compress: bool = True,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary.

        A sequence or an iterator of ``str`` (or of bytes) is sent as one fragmented message, a
        frame per item (a ``dict`` or a ``set`` is refused: serialise it first).
        With permessage-deflate negotiated, ``compress=False`` sends this message uncompressed.
        Blocks until the message is written to the socket (while the peer does not read, the
        socket's buffer is full); a peer that never reads is dropped by keepalive (or the
        closing handshake's timeout), and then this raises
        :class:`~shakehands.ConnectionClosedError`.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is of no supported type (a ``dict``, a ``set``, ...).
        """
        if isinstance(message, str | bytes | bytearray | memoryview):
            with self._lock:
                self._check_open()
                self.protocol.send_message(message, compress=compress)
                self._enqueue()
                target = self._queued_total
            self._write_out(wait=True, target=target)
            return
        if not is_fragments(message) or not isinstance(message, Iterable):
            # A dict or a set is iterable too, but of its keys: never a message's fragments.
            raise unsendable(message)
        started = False
        try:
            for fragment, fin in with_fin(message):
                self._send_fragment(fragment, fin=fin, compress=compress)
                started = True
        except BaseException:
            if started:
                # Part of a message is out and the rest will never follow: fail with 1011.
                self._fail(CloseCode.INTERNAL_ERROR, "error in fragmented message")
            raise

    def _send_fragment(self, fragment: object, *, fin: bool, compress: bool) -> None:
        if not isinstance(fragment, str | bytes | bytearray | memoryview):
            raise TypeError(f"cannot send a fragment of type {type(fragment).__name__}")
        with self._lock:
            self._check_open()
            self.protocol.send_fragment(fragment, fin=fin, compress=compress)
            self._enqueue()
            target = self._queued_total
        self._write_out(wait=True, target=target)

    def ping(self, data: bytes | None = None) -> PongWaiter:
        """Send a ping; ``ping().wait(timeout)`` blocks for the pong and returns the latency.

        ``data`` (at most 125 bytes) defaults to 4 random bytes.

        Raises:
            ConnectionClosed: the connection is closing or closed.
            ValueError: a ping with this payload is already waiting for its pong.
        """
        return self._send_ping(data)

    # -----------------------------------------------------------------------------------------
    # Closing
    # -----------------------------------------------------------------------------------------

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Run the closing handshake and wait until the TCP connection is closed.

        Waits at most ``close_timeout`` for the peer, then drops the connection. Calling it on a
        closed connection does nothing.
        """
        self._start_close(code, reason)
        if not self.wait_closed(self.config.close_limit + 0.1):
            self._abort()
            self.wait_closed()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the TCP connection is closed; return whether it is."""
        if not self._reader.is_alive() and not self._reader_done.is_set():
            return False  # never started
        return self._reader_done.wait(timeout)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def open(self) -> bool:
        """Whether messages can be sent."""
        return self.protocol.state is State.OPEN
