"""The inbox of the blocking API: messages received and not read yet.

Twin of :mod:`shakehands.asyncio.messages`; the two differ only in how a reader waits (a
condition variable here, a future there). :class:`Inbox` is bounded by ``max_queue``: the reader
thread puts what it parsed, the part that does not fit waits in a backlog (moved in as
application threads make room), and while a backlog is left the reader stops reading from the
socket (TCP slows the peer down, nothing more is buffered).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..protocol.messages import Data

__all__ = ["Data", "Inbox"]


class Inbox:
    """The messages of one connection that the application has not read yet."""

    __slots__ = ("messages", "max_queue", "backlog", "cond", "waiting", "ended", "_closed_error")

    def __init__(self, max_queue: int, closed_error: Callable[[], BaseException]) -> None:
        self.messages: deque[Data] = deque()
        #: Messages buffered before the reader stops reading.
        self.max_queue = max_queue
        #: Messages read that do not fit yet (reader thread only).
        self.backlog: deque[Data] = deque()
        #: Guards :attr:`messages`, :attr:`waiting` and :attr:`ended`; notified on each change.
        self.cond = threading.Condition(threading.Lock())
        #: Application threads waiting in :meth:`get`.
        self.waiting = 0
        #: Whether no message can come any more (the reader has ended).
        self.ended = False
        self._closed_error = closed_error

    def __len__(self) -> int:
        return len(self.messages)

    def put(self, messages: Iterable[Data]) -> bool:
        """Add messages received (reader thread); return whether some wait for room."""
        self.backlog.extend(messages)
        return self.deliver()

    def deliver(self, *, drop_rest: bool = False) -> bool:
        """Move what fits from the backlog (reader thread); with ``drop_rest`` (closing) drop
        what does not. Return whether messages still wait for room."""
        backlog = self.backlog
        with self.cond:
            messages = self.messages
            while backlog and len(messages) < self.max_queue:
                messages.append(backlog.popleft())
            if backlog and drop_rest:
                backlog.clear()
            self.cond.notify_all()
        return bool(backlog)

    def full(self) -> bool:
        """Whether messages wait for room in a full inbox (call with :attr:`cond` held)."""
        return bool(self.backlog) and len(self.messages) >= self.max_queue

    def get(self, timeout: float | None = None) -> Data:
        """Return the next message, waiting at most ``timeout`` seconds for it.

        Asking for a message that is not there wakes the reader: a close frame held back for
        the application's answers (rule 2 of :mod:`.base`) may go.

        Raises:
            TimeoutError: no message within ``timeout``.
            ConnectionClosed: no message is left and none can come any more.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self.cond
        with cond:
            self.waiting += 1
            try:
                while not self.messages:
                    if self.ended:
                        raise self._closed_error()
                    cond.notify_all()
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("no message received in time")
                    cond.wait(remaining)
                message = self.messages.popleft()
                cond.notify_all()  # room in the inbox for the reader
                return message
            finally:
                self.waiting -= 1

    def wake(self, *, blocking: bool = True) -> None:
        """Wake every thread waiting on the inbox (the reader, application threads); without
        ``blocking``, only if its lock is free at once."""
        cond = self.cond
        if not cond.acquire(blocking=blocking):
            return
        try:
            cond.notify_all()
        finally:
            cond.release()

    def close(self) -> None:
        """No message can come any more: wake the threads waiting in :meth:`get`."""
        with self.cond:
            self.ended = True
            self.cond.notify_all()
