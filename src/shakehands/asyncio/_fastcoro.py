"""The coroutine API on the compiled data path: :class:`FastServerConnection`.

The seam between :class:`~.server.ServerConnection` (``async for message in ws``,
``await ws.recv()``, ``await ws.send()``, driving the sans-I/O core) and the C types of
``shakehands._fastpath`` made for it (``CoroFastPath``, ``CoroutineFastPathMixin``): which
connection :func:`~.server.serve` makes (:func:`connection_factory`), and the hand-over of
bytes between the C path and the core. As for the callback API (:mod:`._fastpath`, whose
rules this module follows), every rule of the protocol stays in the core.

Theory of operation.

* Receiving is the callback path's: the connection is an ``asyncio.BufferedProtocol``; C parses
  whole, unfragmented, masked text and binary frames within the limits, unmasks them, checks
  UTF-8, and hands each message to the connection's inbox (``_FastInbox.on_message``, C too:
  it sets the result of the future a waiting ``recv`` made, or queues the message, pausing
  reading at ``max_queue``, by the rules of :meth:`.messages.Inbox.put`). The first frame it
  does not take (a control frame, a fragment, RSV bits, a frame over the limit, invalid UTF-8)
  turns it off and goes, with every byte after it, to the core (:meth:`_slow_received`), which
  answers, fails (1002, 1007, 1009) or closes as without it. It is turned on again
  (:meth:`_refresh_fast`) only when the core is open, between messages, and sends no
  fragmented message.
* ``recv()`` and ``async for`` are C (``CoroutineFastPathMixin.recv`` and ``__aiter__``): an
  awaitable that, when awaited, returns a queued message without suspending, or, while the C
  parser is on (the connection is open and more can come), makes a ``Waiter`` (C, a
  future-compatible object: the task waits on it as on an ``asyncio.Future``), stores it as
  the inbox's waiter and yields it to the task; in every other case (a paused backlog, the C
  parser off: the core reading, closing, closed) it awaits :meth:`.messages.Inbox.get`
  itself. The inbox's state stays the Python object's, so the core's deliveries,
  ``Inbox.get`` and ``Inbox.close`` work on it alike (``set_result``, ``set_exception``,
  ``cancel`` schedule the task's wake-up with ``call_soon``, as a future does); a cancelled
  ``recv`` puts back a message it was handed, a second waiting ``recv`` raises
  ``RuntimeError``, as with ``Inbox.get``.
* The one difference from the pure-Python path: when the C parser hands a message to a
  waiting ``recv`` and no task is running (a read callback), the waiting task is stepped there
  and then, in its context (what the loop would do one iteration later, without the
  ``Handle``, the ``call_soon`` and the iteration): the handler runs inside the read, as a
  callback API listener does, and what it sends joins the read's output (one write at the end
  of the read). At most 256 tasks per read are woken so (later messages of a flood wake
  theirs through the loop, queue, and pause reading at ``max_queue``, as without the compiled
  path). There is then no moment when such a task could be cancelled with its message handed
  and not yet taken.
* ``send`` is C: the frame is built in one allocation. The answer to a message a read handed
  to a waiting ``recv`` is written at once when no other message waits in the inbox (a
  request-response exchange costs no scheduled flush); otherwise (more messages to answer,
  sends that answer no read) frames are queued and those of one loop step leave in one write
  (a flush scheduled with ``call_soon``), or at once past ``write_limit`` bytes. A payload of
  64 KiB or more is written at once: uncopied behind its header in one call where the
  transport allows it (one ``sendmsg`` on asyncio's plain TCP transport, one ``writelines``
  on uvloop's, :func:`~._fastpath.gathers_writes`); elsewhere copied behind its header up to
  256 KiB, apart from it, uncopied, beyond. It returns the connection's ``_drain()``
  coroutine while the write buffer is above its high-water mark (as the Python ``send``
  awaits it), otherwise an object that is a finished coroutine (``await``,
  ``asyncio.create_task`` and ``wait_for`` take it).
* Anything Python writes (pings, pongs, close frames, fragments, broadcasts) first writes what C
  queued (:meth:`_flush`, :meth:`write_queued`), so frames leave in the order they were sent;
  a state change that ends the open state turns the C path off.

Servers only: a client masks what it sends, and the C path builds unmasked frames only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from ..protocol._accel import fastpath as _compiled
from ..protocol.errors import CloseCode, ConnectionClosed, ConnectionClosedOK
from ._fastpath import CompiledConnection
from .connection import WebSocketConnection
from .messages import Inbox
from .server import Handler, Server, ServerConnection

__all__ = ["AVAILABLE", "enabled", "connection_factory", "FastServerConnection"]

logger = logging.getLogger("shakehands.server")

#: Whether the compiled data path is built (with its coroutine types) and allowed (not
#: ``SHAKEHANDS_NO_SPEEDUPS=1``).
AVAILABLE: bool = _compiled is not None and hasattr(_compiled, "CoroutineInboxMixin")

#: Whether :func:`~.server.serve` uses it: :data:`AVAILABLE` by default; tests set it to
#: ``False`` to run the same tests on the pure-Python path in the same process.
enabled: bool = AVAILABLE


class _NoMixin:
    __slots__ = ()


_Mixin: Any = getattr(_compiled, "CoroutineFastPathMixin", _NoMixin)
_InboxMixin: Any = getattr(_compiled, "CoroutineInboxMixin", _NoMixin)

if AVAILABLE:
    assert _compiled is not None
    # What the C recv needs from Python (once per process).
    _compiled._coro_setup(
        deque,
        asyncio.CancelledError,
        ConnectionClosedOK,
        asyncio.InvalidStateError,
        # The running task of a loop, without a Python frame where asyncio keeps them in a
        # dict (3.11's asyncio.current_task is a Python function).
        getattr(getattr(asyncio.tasks, "_current_tasks", None), "get", asyncio.current_task),
    )


def connection_factory(handler: Handler) -> Callable[[Server[Any]], ServerConnection]:
    """The connection factory of one coroutine server: compiled if :data:`enabled`."""
    if not (enabled and AVAILABLE):
        return lambda server: ServerConnection(server, handler)
    assert _compiled is not None
    # One read buffer per server: a server's connections share one event loop, which reads
    # one socket at a time.
    read_buffer = _compiled.ReadBuffer()
    return lambda server: FastServerConnection(server, handler, read_buffer)


class _FastInbox(_InboxMixin, Inbox):  # type: ignore[misc]
    """The inbox of a connection on the compiled path: C calls its ``on_message`` (C as
    well: :meth:`.messages.Inbox.put`'s rules without a Python frame), and the connection's
    C ``recv`` and ``async for`` take from it by :meth:`.messages.Inbox.get`'s rules."""

    __slots__ = ()


class FastServerConnection(
    _Mixin,  # type: ignore[misc]
    CompiledConnection,
    ServerConnection,
    asyncio.BufferedProtocol,
):
    """A :class:`~.server.ServerConnection` whose common data path is compiled (see the module
    docstring); it behaves the same in every other respect."""

    __slots__ = ("_fast", "_in_slow")

    #: The core's send (a coroutine), for what the C ``send`` does not build.
    _send_slow = WebSocketConnection.send

    def __init__(self, server: Server[Any], handler: Handler, read_buffer: Any) -> None:
        super().__init__(server, handler)
        assert _compiled is not None
        self._inbox = _FastInbox(self, self._inbox.max_queue)
        self._fast = _compiled.CoroFastPath(read_buffer, self.write_limit, self.loop.call_soon)
        self._in_slow = False

    def _refresh_fast(self) -> None:
        """Turn the C path on if the core lets it take the next frames (see
        :meth:`~shakehands.protocol.connection.Connection.frames_takeable`) and sends no
        fragments, and this connection is not closing."""
        if (
            self._in_slow
            or self._hold_close
            or self._eof_sent
            or self._lost
            or self.protocol._send_opcode
            or self.transport.is_closing()
        ):
            return
        limit = self.protocol.frames_takeable()
        if limit is not None:
            self._fast.enable(self._inbox, limit)

    def _has_unread_messages(self) -> bool:
        # While the core reads (after the C path handed it a close frame, say): a message C
        # handed to a waiting recv() and not answered yet counts as the core's delivered ones
        # do (its answer leaves before our close frame: the close waits one loop iteration).
        return bool(self._inbox.messages) or (self._in_slow and self._fast.handed)

    def _send_fragment(self, fragment: Any, *, fin: bool, compress: bool = True) -> None:
        # A fragmented message is the core's from its first frame to its last: no frame of
        # another message may go in between.
        self._fast.disable()
        try:
            super()._send_fragment(fragment, fin=fin, compress=compress)
        finally:
            if fin:
                self._refresh_fast()

    def _abandon_fragmented_message(self) -> None:
        super()._abandon_fragmented_message()
        self._refresh_fast()

    def _fast_error(self, exc: BaseException) -> None:
        """The inbox raised in the C path (out of memory): as the core's path would."""
        if isinstance(exc, ConnectionClosed):
            return
        if not isinstance(exc, Exception):
            raise exc
        logger.error("receiving failed", exc_info=exc)
        self._fail(CloseCode.INTERNAL_ERROR, "")

    def _on_connection_lost(self) -> None:
        self._fast.attach(None)
        super()._on_connection_lost()
