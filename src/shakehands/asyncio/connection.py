"""The coroutine API of a connection: ``await ws.recv()``, ``await ws.send()``, ``async for``.

:class:`WebSocketConnection` adds to the transport plumbing a bounded queue of received messages
(reading from the socket pauses when it is full), ``send`` that waits while the transport's write
buffer is above its high-water mark, pings that resolve on their pong, and the closing handshake.
A message already buffered is returned by ``recv`` without suspending (but for one yield to
the loop every ``recv_burst`` messages of a backlog beyond ``max_queue``, so that one flooding
peer cannot hold the loop).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from ..protocol.config import Config
from ..protocol.connection import Close, Connection, State, close_hold_limit
from ..protocol.errors import CloseCode, ConnectionClosedOK
from ..protocol.handshake import Request, Response
from .base import TransportProtocol

__all__ = ["WebSocketConnection", "Data"]

#: A message: ``str`` for text, ``bytes`` for binary.
Data = str | bytes

_BytesLike = (bytes, bytearray, memoryview)


class WebSocketConnection(TransportProtocol):
    """An open WebSocket connection, used from coroutines (server handlers and clients).

    Receive with :meth:`recv` or ``async for message in ws``; send with :meth:`send`; end with
    :meth:`close`. After the connection closes, :meth:`recv` and :meth:`send` raise
    :class:`~shakehands.ConnectionClosedOK` or :class:`~shakehands.ConnectionClosedError`.
    """

    answers_later = True

    __slots__ = (
        "max_queue",
        "_messages",
        "_recv_waiter",
        "_reading_paused",
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
        #: Messages buffered before reading pauses (``config.max_queue``, kept here: it is read
        #: for every message).
        self.max_queue = config.max_queue
        self._messages: deque[Data] = deque()
        self._recv_waiter: asyncio.Future[Data] | None = None
        self._reading_paused = False
        # Deferred writes: what send() queued since the last write, and the pending flush.
        self._unflushed = 0
        self._flush_handle: asyncio.Handle | None = None
        self._close_hold_expired = False
        self._close_hold_timer: asyncio.TimerHandle | None = None
        #: The opening handshake's request (server: the client's; client: ours).
        self.request: Request | None = None
        #: The opening handshake's response.
        self.response: Response | None = None
        #: The subprotocol agreed on, or ``None``.
        self.subprotocol: str | None = None

    # -----------------------------------------------------------------------------------------
    # Events from the core
    # -----------------------------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if type(event) is str or type(event) is bytes:
            waiter = self._recv_waiter
            if waiter is not None and not waiter.done() and not self._messages:
                self._recv_waiter = None
                waiter.set_result(event)
                if self._flush_handle is None:
                    # Scheduled after the waiter's task: it runs in the same loop iteration as
                    # the handler's answer and writes it, without a loop iteration of its own.
                    self._flush_handle = self.loop.call_soon(self._deferred_flush)
                return
            self._messages.append(event)
            if (
                len(self._messages) >= self.max_queue
                and not self._reading_paused
                and self.protocol.state is State.OPEN
            ):
                self._reading_paused = True
                self.transport.pause_reading()
        elif type(event) is Close:
            pass
        else:
            self._on_handshake_event(event)

    #: While reading is paused for a full queue (``max_queue``: one read can add 40 000 tiny
    #: messages at once), :meth:`recv` yields to the event loop once every this many messages,
    #: so that a handler working through the backlog of a flood does not hold the loop (other
    #: connections' handshakes and messages) for its whole run.
    recv_burst = 256

    def _has_unread_messages(self) -> bool:
        return bool(self._messages)

    def _close_waits_for_reader(self) -> bool:
        if not self._messages or self._close_hold_expired or self.transport.is_closing():
            return False
        if self._close_hold_timer is None:
            # Rule 3 of the core: the same bound in every layer.
            self._close_hold_timer = self.loop.call_later(
                close_hold_limit(self.close_timeout), self._close_hold_expire
            )
        return True

    def _close_hold_expire(self) -> None:
        self._close_hold_expired = True
        self._release_close()

    def _on_handshake_event(self, event: object) -> None:
        """Request / Response events: handled by the server and client subclasses."""

    def _on_connection_lost(self) -> None:
        if self._close_hold_timer is not None:
            self._close_hold_timer.cancel()
        waiter, self._recv_waiter = self._recv_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._closed_error())

    # -----------------------------------------------------------------------------------------
    # Receiving
    # -----------------------------------------------------------------------------------------

    async def recv(self) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        Raises:
            ConnectionClosedOK: the connection closed cleanly (and no message is left).
            ConnectionClosedError: it closed with an error, or without a closing handshake.
            RuntimeError: another coroutine is already waiting in ``recv``.
        """
        messages = self._messages
        if messages:
            if self._reading_paused and len(messages) % self.recv_burst == 0:
                # A backlog beyond max_queue: let the other connections have a turn of the
                # loop every recv_burst messages.
                await asyncio.sleep(0)
                if not messages:
                    return await self.recv()
            message = messages.popleft()
            if not messages and self._hold_close:
                # The last message read before the peer's close or violation: let the answer
                # the caller is about to send leave before our close frame.
                self.loop.call_soon(self._release_close)
            if self._reading_paused and len(messages) <= self.max_queue // 4:
                self._reading_paused = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()
            return message
        if self._lost or self.protocol.close_rcvd is not None or self.protocol.failure is not None:
            # No message can come any more: wait for the end, then say how it ended.
            await asyncio.shield(self.closed_future)
            raise self._closed_error()
        if self._recv_waiter is not None:
            raise RuntimeError("another coroutine is already waiting for the next message")
        waiter: asyncio.Future[Data] = self.loop.create_future()
        self._recv_waiter = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled (a timeout) after _on_event handed us a message: keep it for the next
            # recv rather than lose it.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._messages.appendleft(waiter.result())
            raise
        finally:
            if self._recv_waiter is waiter:
                self._recv_waiter = None

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Data]:
        """Yield messages until the connection closes; a clean close ends the loop quietly."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    # -----------------------------------------------------------------------------------------
    # Sending
    # -----------------------------------------------------------------------------------------

    async def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
        *,
        compress: bool = True,
    ) -> None:
        """Send a message; waits while the write buffer is above its high-water mark.

        ``str`` is sent as text, bytes-like as binary; an iterable (or async iterable) of
        ``str`` or of bytes is sent as one fragmented message, a frame per item. With
        permessage-deflate negotiated, ``compress=False`` sends this message uncompressed
        (for data that is already compressed, or too small to gain).

        Raises:
            ConnectionClosed: the connection is closing or closed.
            TypeError: ``message`` is of no supported type.
        """
        protocol = self.protocol
        if protocol.state is not State.OPEN:
            raise self._closed_error()
        if isinstance(message, str):
            protocol.send_text(message, compress=compress)
        elif isinstance(message, _BytesLike):
            protocol.send_binary(message, compress=compress)
        elif isinstance(message, AsyncIterable):
            await self._send_fragments_async(message, compress)
            return
        elif isinstance(message, Iterable):
            await self._send_fragments(message, compress)
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
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

    async def _send_fragments(self, fragments: Iterable[Any], compress: bool) -> None:
        iterator = iter(fragments)
        try:
            previous = next(iterator)
        except StopIteration:
            return
        started = False
        try:
            for fragment in iterator:
                self._send_fragment(previous, fin=False, compress=compress)
                started = True
                previous = fragment
                if self._writing_paused:
                    await self._drain()
            self._send_fragment(previous, fin=True, compress=compress)
        except BaseException:
            if started:
                self._abandon_fragmented_message()
            raise
        if self._writing_paused:
            await self._drain()

    async def _send_fragments_async(self, fragments: AsyncIterable[Any], compress: bool) -> None:
        iterator = aiter(fragments)
        try:
            previous = await anext(iterator)
        except StopAsyncIteration:
            return
        started = False
        try:
            async for fragment in iterator:
                self._send_fragment(previous, fin=False, compress=compress)
                started = True
                previous = fragment
                if self._writing_paused:
                    await self._drain()
            self._send_fragment(previous, fin=True, compress=compress)
        except BaseException:
            if started:
                self._abandon_fragmented_message()
            raise
        if self._writing_paused:
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
        # The peer's close frame must be read even if the queue of messages is full (while
        # closing, _on_event no longer pauses reading).
        if self._reading_paused:
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
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
