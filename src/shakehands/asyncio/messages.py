"""The inbox of the coroutine API: messages received and not read yet.

Twin of :mod:`shakehands.sync.messages`; the two differ only in how a reader waits (a future
here, a condition variable there). :class:`Inbox` is bounded by ``max_queue``: when it is full
the connection stops reading from the socket (TCP slows the peer down, nothing more is
buffered), and it reads again once the application has taken the queue down to a quarter.
A message is handed straight to a coroutine already waiting in :meth:`Inbox.get`, without
going through the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from ..protocol.messages import Data

if TYPE_CHECKING:
    from .connection import WebSocketConnection

__all__ = ["Data", "Inbox"]


class Inbox:
    """The messages of one connection that the application has not read yet."""

    __slots__ = ("messages", "max_queue", "paused", "_waiter", "_connection")

    #: While reading is paused for a full queue (``max_queue``: one read can add 40 000 tiny
    #: messages at once), :meth:`get` yields to the event loop once every this many messages,
    #: so that a handler working through the backlog of a flood does not hold the loop (other
    #: connections' handshakes and messages) for its whole run.
    burst = 256

    def __init__(self, connection: WebSocketConnection, max_queue: int) -> None:
        #: The messages, oldest first. An empty tuple until a message has to wait: a deque
        #: costs 600 bytes, and a handler waiting in ``recv`` takes each message directly.
        self.messages: deque[Data] | tuple[()] = ()
        #: Messages buffered before reading pauses.
        self.max_queue = max_queue
        #: Whether reading from the socket is paused because the inbox is full.
        self.paused = False
        self._waiter: asyncio.Future[Data] | None = None
        self._connection = connection

    def __len__(self) -> int:
        return len(self.messages)

    def put(self, message: Data) -> None:
        """Add a message received (or hand it to the coroutine waiting for one)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self.messages:
            self._waiter = None
            waiter.set_result(message)
            self._connection._message_handed_over()
            return
        messages = self.messages
        if isinstance(messages, tuple):
            messages = self.messages = deque()
        messages.append(message)
        if len(messages) >= self.max_queue and not self.paused:
            self.paused = self._connection._pause_reading()

    async def get(self) -> Data:
        """Return the next message, waiting for it if none is buffered.

        Raises:
            ConnectionClosed: no message is left and none can come any more.
            RuntimeError: another coroutine is already waiting.
        """
        messages = self.messages
        connection = self._connection
        if messages:
            if self.paused and len(messages) % self.burst == 0:
                # A backlog beyond max_queue: let the other connections have a turn of the
                # loop every burst messages.
                await asyncio.sleep(0)
                if not messages:
                    return await self.get()
            message = messages.popleft()
            if not messages:
                connection._inbox_emptied()
            if self.paused and len(messages) <= self.max_queue // 4:
                self.resume()
            return message
        if connection._no_more_messages():
            # No message can come any more: wait for the end, then say how it ended.
            await asyncio.shield(connection.closed_future)
            raise connection._closed_error()
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting for the next message")
        waiter: asyncio.Future[Data] = connection.loop.create_future()
        self._waiter = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled (a timeout) after put() handed us a message: keep it for the next
            # get rather than lose it.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                if isinstance(self.messages, tuple):
                    self.messages = deque()
                self.messages.appendleft(waiter.result())
            raise
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def resume(self) -> None:
        """Read from the socket again (room in the inbox, or the closing handshake started:
        the peer's close frame must be read even if the queue is full)."""
        if self.paused:
            self.paused = False
            self._connection._resume_reading()

    def close(self) -> None:
        """The connection is gone: wake the coroutine waiting in :meth:`get` with the error
        that says how it ended."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self._connection._closed_error())
