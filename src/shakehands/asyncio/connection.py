"""The coroutine API of a connection: ``await ws.recv()``, ``await ws.send()``, ``async for``.

Twin of :mod:`shakehands.sync.connection` (same methods, in the same order; only the waiting
differs). :class:`WebSocketConnection` adds to the transport plumbing of :mod:`.base` the inbox of
received messages (:mod:`.messages`: bounded, reading pauses when it is full), ``send`` that waits
while the transport's write buffer is above its high-water mark, pings that resolve on their
pong, and the closing handshake. A message already buffered is returned by ``recv`` without
suspending (but for one yield to the loop every ``Inbox.burst`` messages of a backlog beyond
``max_queue``, so that one flooding peer cannot hold the loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Coroutine, Iterable
from contextlib import aclosing
from typing import Any

from ..protocol.config import Config
from ..protocol.connection import Close, Connection, State
from ..protocol.errors import CloseCode, ConnectionClosedOK
from ..protocol.handshake import Request, Response
from ..protocol.messages import Fragment, Message, awith_fin, is_fragments, unsendable
from .base import HoldsCloseForReader, TransportProtocol
from .messages import Data, Inbox

__all__ = ["WebSocketConnection", "Data"]

_BytesLike = (bytes, bytearray, memoryview)


class WebSocketConnection(HoldsCloseForReader, TransportProtocol):
    """An open WebSocket connection, used from coroutines (server handlers and clients).

    Receive with :meth:`recv` or ``async for message in ws``; send with :meth:`send`; end with
    :meth:`close`. After the connection closes, :meth:`recv` and :meth:`send` raise
    :class:`~shakehands.ConnectionClosedOK` or :class:`~shakehands.ConnectionClosedError`.
    """

    answers_later = True

    __slots__ = (
        "_inbox",
        "_unflushed",
        "_flush_handle",
        "_close_hold_expired",
        "_close_hold_timer",
        "request",
        "response",
        "subprotocol",
    )

    def __init__(self, protocol: Connection, config: Config) -> None:
        super().__init__(protocol, config)
        #: The opening handshake's request (server: the client's; client: ours).
        self.request: Request | None = None
        #: The opening handshake's response.
        self.response: Response | None = None
        #: The subprotocol agreed on, or ``None``.
        self.subprotocol: str | None = None
        self._inbox = Inbox(self, config.max_queue)
        # Deferred writes: what send() queued since the last write, and the pending flush.
        self._unflushed = 0
        self._flush_handle: asyncio.Handle | None = None
        self._close_hold_expired = False
        self._close_hold_timer: asyncio.TimerHandle | None = None

    @property
    def max_queue(self) -> int:
        """Messages buffered before reading pauses (``config.max_queue``)."""
        return self._inbox.max_queue

    # -----------------------------------------------------------------------------------------
    # Events from the core, and what the inbox asks of the connection
    # -----------------------------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if type(event) is str or type(event) is bytes:
            self._inbox.put(event)
        elif type(event) is Close:
            pass
        else:
            self._on_handshake_event(event)

    def _on_handshake_event(self, event: object) -> None:
        """Request / Response events: handled by the server and client subclasses."""

    def _message_handed_over(self) -> None:
        # A waiting recv() got a message: the flush is scheduled after its task, so that it
        # runs in the same loop iteration as the handler's answer and writes it, without a loop
        # iteration of its own.
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._deferred_flush)

    def _pause_reading(self) -> bool:
        if self.protocol.state is not State.OPEN:
            return False  # closing: the peer's close frame must still be read
        self.transport.pause_reading()
        return True

    def _resume_reading(self) -> None:
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _inbox_emptied(self) -> None:
        if self._hold_close:
            # The last message read before the peer's close or violation: let the answer the
            # caller is about to send leave before our close frame.
            self.loop.call_soon(self._release_close)

    def _no_more_messages(self) -> bool:
        protocol = self.protocol
        return self._lost or protocol.close_rcvd is not None or protocol.failure is not None

    def _has_unread_messages(self) -> bool:
        return bool(self._inbox.messages)

    def _on_connection_lost(self) -> None:
        self._cancel_close_hold()
        self._inbox.close()

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    def recv(self) -> Coroutine[Any, Any, Data]:
        """Return the next message: ``str`` for text, ``bytes`` for binary (a coroutine:
        ``await ws.recv()``).

        Raises:
            ConnectionClosedOK: the connection closed cleanly (and no message is left).
            ConnectionClosedError: it closed with an error, or without a closing handshake.
            RuntimeError: another coroutine is already waiting in ``recv``.
        """
        # The inbox's coroutine itself, not one that awaits it: one frame less per message.
        return self._inbox.get()

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Data]:
        """Yield messages until the connection closes; a clean close ends the loop quietly."""
        try:
            while True:
                yield await self._inbox.get()
        except ConnectionClosedOK:
            return

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    async def send(
        self,
        message: Message | AsyncIterable[Fragment],
        *,
        compress: bool = True,
    ) -> None:
        """Send a message; waits while the write buffer is above its high-water mark.

        ``str`` is sent as text, bytes-like as binary; a sequence, iterator or async iterable
        of ``str`` or of bytes is sent as one fragmented message, a frame per item (a ``dict``
        or a ``set`` is refused: serialise it first). With
        permessage-deflate negotiated, ``compress=False`` sends this message uncompressed
        (for data that is already compressed, or too small to gain).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is of no supported type (a ``dict``, a ``set``, ...).
        """
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            raise self._closed_error()
        if isinstance(message, str):
            protocol.send_text(message, compress=compress)
        elif isinstance(message, _BytesLike):
            protocol.send_binary(message, compress=compress)
        elif not is_fragments(message):
            # A dict or a set is iterable too, but of its keys: never a message's fragments.
            raise unsendable(message)
        else:
            await self._send_fragments(message, compress)
            return
        # The messages sent during one step of the event loop leave in one write at its end (a
        # handler answering a burst of buffered messages makes one system call, not one per
        # message), or at once past write_limit bytes, so that backpressure still applies.
        self._unflushed += len(message)
        if self._unflushed >= self.write_limit:
            self._unflushed = 0
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_soon(self._deferred_flush)
        if self._writing_paused:
            await self._drain()

    def _deferred_flush(self) -> None:
        self._flush_handle = None
        self._unflushed = 0
        self._flush()

    async def _send_fragments(
        self, fragments: Iterable[Any] | AsyncIterable[Any], compress: bool
    ) -> None:
        started = False
        try:
            async with aclosing(awith_fin(fragments)) as pieces:
                async for fragment, fin in pieces:
                    self._send_fragment(fragment, fin=fin, compress=compress)
                    started = True
                    if not fin and self._writing_paused:
                        await self._drain()
        except BaseException:
            if started:
                self._abandon_fragmented_message()
            raise
        if started and self._writing_paused:
            await self._drain()

    def _abandon_fragmented_message(self) -> None:
        # Part of a message is out and the rest will never follow (a bad fragment, an error
        # in the iterable, a cancellation): nothing else can be sent, so fail with 1011.
        if self.protocol.state is State.OPEN:
            self._fail(CloseCode.INTERNAL_ERROR, "error in fragmented message")

    def _send_fragment(self, fragment: Any, *, fin: bool, compress: bool = True) -> None:
        if not isinstance(fragment, (str, *_BytesLike)):
            raise TypeError(f"cannot send a fragment of type {type(fragment).__name__}")
        if self.protocol.state is not State.OPEN:
            raise self._closed_error()
        self.protocol.send_fragment(fragment, fin=fin, compress=compress)
        self._flush()

    async def _drain(self) -> None:
        while self._writing_paused and not self._lost:
            waiter: asyncio.Future[None] = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._lost:
            raise self._closed_error()

    async def ping(self, data: bytes | None = None) -> float:
        """Send a ping and wait for its pong; return the round-trip time in seconds.

        ``data`` (at most 125 bytes) defaults to 4 random bytes.
        """
        waiter = self._send_ping(data)
        return await waiter

    # -----------------------------------------------------------------------------------------
    # Closing
    # -----------------------------------------------------------------------------------------

    def _start_close(self, code: int | None, reason: str) -> None:
        # The peer's close frame must be read even if the inbox is full (while closing, the
        # inbox no longer pauses reading).
        self._inbox.resume()
        super()._start_close(code, reason)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Run the closing handshake and wait until the TCP connection is closed.

        Waits at most ``close_timeout`` for the peer's close frame, then drops the connection.
        Calling it on a closed connection does nothing.
        """
        if not self._lost:
            self._start_close(code, reason)
            await asyncio.shield(self.closed_future)

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        await asyncio.shield(self.closed_future)

    @property
    def open(self) -> bool:
        """Whether messages can be sent."""
        return self.protocol.state is State.OPEN
