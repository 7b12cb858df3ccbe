"""The asyncio server's opening handshake: the mixin both server connection classes share.

Twin of :mod:`shakehands.sync.handshake`. :class:`ServerHandshake` starts ``open_timeout`` when
a connection is made, counts it against ``max_connections``, hands the request to
``process_request`` (plain or awaitable), and sends the answer the sans-I/O
:class:`~shakehands.protocol.server.ServerProtocol` decides; a 101 then calls
``_handshake_complete`` of the class it is mixed into (:class:`~.server.ServerConnection`,
:class:`~.callback.CallbackConnection`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..protocol.connection import State
from ..protocol.errors import InvalidHandshake
from ..protocol.handshake import Request, Response
from ..protocol.server import ServerProtocol

if TYPE_CHECKING:
    from .server import Server

__all__ = ["HANDSHAKE_SLOTS", "OpenTimeouts", "ServerHandshake"]

logger = logging.getLogger("shakehands.server")

#: The attributes of :class:`ServerHandshake`, for the ``__slots__`` of the classes mixing it in.
HANDSHAKE_SLOTS = ("server", "_open_handle")


class _OpenBucket(dict["ServerHandshake", None]):
    """The connections of one :class:`OpenTimeouts` whose time runs out at ``due`` (a dict used
    as an ordered set)."""

    __slots__ = ("due",)

    def __init__(self, due: float) -> None:
        super().__init__()
        self.due = due


class OpenTimeouts:
    """The ``open_timeout`` of all the connections of one server: one timer for them all.

    A ``TimerHandle`` per connection (``loop.call_later``, cancelled at the 101) costs a Python
    object, a heap push with Python comparisons, and the heap's periodic clean-up of cancelled
    timers, for a timer that almost never fires: at thousands of handshakes per second, a
    measurable share of each. Here a connection is put in a bucket of ``tick`` seconds (1/16
    of the timeout, at most 1 s; a dict entry) and taken out at the answer or when the
    connection is lost: its handshake is dropped between ``open_timeout`` and
    ``open_timeout + tick`` after the connection was made, never earlier. All the connections
    of a server have the same timeout, so buckets are made in the order they fall due and one
    timer waits for the first; it runs while buckets remain.
    """

    __slots__ = ("loop", "timeout", "tick", "buckets", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.tick = min(timeout / 16, 1.0)
        self.buckets: deque[_OpenBucket] = deque()
        self.handle: asyncio.TimerHandle | None = None

    def add(self, connection: ServerHandshake) -> _OpenBucket:
        """Start ``connection``'s timeout; returns its bucket, which the connection leaves when
        answered or lost (``bucket.pop(connection, None)``)."""
        buckets = self.buckets
        due = self.loop.time() + self.timeout
        if not buckets or buckets[-1].due < due:
            buckets.append(_OpenBucket(due + self.tick))
        bucket = buckets[-1]
        bucket[connection] = None
        if self.handle is None:
            self.handle = self.loop.call_at(buckets[0].due, self._fire)
        return bucket

    def _fire(self) -> None:
        self.handle = None
        buckets = self.buckets
        now = self.loop.time()
        # The first bucket is the one the timer was set for (buckets are only ever appended
        # behind it); the next ones that are due, or empty, go with it.
        while buckets:
            bucket = buckets.popleft()
            for connection in list(bucket):
                connection._open_handle = None
                try:
                    connection._open_expired()
                except Exception as exc:  # one connection's failure must not stop the others
                    self.loop.call_exception_handler(
                        {"message": "open timeout failed", "exception": exc, "protocol": connection}
                    )
            bucket.clear()
            if buckets and buckets[0] and buckets[0].due > now:
                break
        if buckets:
            self.handle = self.loop.call_at(buckets[0].due, self._fire)


class ServerHandshake:
    """The server side of the opening handshake, mixed into both server connection classes.

    It starts ``open_timeout`` at connection, hands the request to ``process_request``, and
    sends the answer; :meth:`_handshake_complete` is called on a 101.
    """

    protocol: ServerProtocol
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server: Server[Any]
    ping_interval: float | None

    # No __slots__ here (two bases with slots cannot be mixed): the classes it is mixed into
    # put HANDSHAKE_SLOTS in theirs and call _init_handshake (a slot of theirs would hide a
    # default value set here).

    #: The bucket of the server's :class:`OpenTimeouts` this connection is in until answered.
    _open_handle: _OpenBucket | None
    #: Beyond ``max_connections``: the request gets a 503 and the connection is not counted.
    #: A class default, not a slot: only the refused connections set it (in their dict).
    _over_limit = False

    def _init_handshake(self, server: Server[Any]) -> None:
        self.server = server
        self._open_handle = None

    def _register(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        server._connections[self] = None
        limit = self.server.config.max_connections
        if limit is not None and server._admitted >= limit:
            self._over_limit = True
        else:
            server._admitted += 1
        timeout = server.config.open_timeout
        if timeout is not None:
            timeouts = server._open_timeouts
            if timeouts is None or timeouts.loop is not self.loop:
                timeouts = server._open_timeouts = OpenTimeouts(self.loop, timeout)
            self._open_handle = timeouts.add(self)

    def _unregister(self) -> None:
        """The TCP connection is gone: forget it (called once, from connection_lost)."""
        bucket = self._open_handle
        if bucket is not None:
            self._open_handle = None
            bucket.pop(self, None)
        connections = self.server._connections
        if self in connections:
            del connections[self]
            if not self._over_limit:
                self.server._admitted -= 1

    def _open_expired(self) -> None:
        if self.protocol.state is State.CONNECTING:
            logger.info("opening handshake timed out; dropping %s", self._peer())
            self.transport.abort()

    def _peer(self) -> Any:
        return self.transport.get_extra_info("peername")

    def _got_request(self, request: Request) -> None:
        request.remote_address = self._peer()
        if self._over_limit:
            logger.info("server full (max_connections); refusing %s with 503", self._peer())
            self._answer(self.protocol.reject_busy())
            return
        hook = self.server.config.process_request
        if hook is None:
            self._answer(None)
            return
        # Stop reading until we answer: the core keeps at most a bounded amount of early data.
        self.transport.pause_reading()
        try:
            result = hook(request)
        except Exception:
            logger.exception("process_request failed")
            self._answer(self.protocol.internal_error())
            return
        if inspect.isawaitable(result):
            task = self.loop.create_task(self._await_hook(result))
            self.server._tasks.add(task)
            task.add_done_callback(self.server._tasks.discard)
        else:
            self._answer(result)

    async def _await_hook(self, result: Awaitable[Response | None]) -> None:
        try:
            response: object = await result
        except Exception:
            logger.exception("process_request failed")
            response = self.protocol.internal_error()
        self._answer(response)

    def _answer(self, response: object) -> None:
        if self.transport.is_closing():
            return
        if self.protocol.state is not State.CONNECTING:
            # The core refused the request on its own (too much early data) or the peer left:
            # read again, or the peer's EOF that ends the half-close would never be seen.
            self.transport.resume_reading()
            return
        if response is not None and not isinstance(response, Response):
            logger.error("process_request returned %r, not a Response or None", response)
        # The core decides: a 101, the 4xx the request deserves, the hook's answer, or a 500.
        response = self.protocol.answer(response)
        if self.protocol.http2:
            # An HTTP/2 stream (shakehands.http2.server): the answer's head is a HEADERS frame.
            self.transport.send_response_head(response)  # type: ignore[attr-defined]
        bucket = self._open_handle
        if bucket is not None:
            self._open_handle = None
            bucket.pop(self, None)
        # answer() moved the state on: OPEN after a 101 (HTTP/2: a 200 to a CONNECT).
        if self.protocol.state is State.OPEN:  # type: ignore[comparison-overlap]
            if not self.protocol.can_ping:
                self.ping_interval = None  # draft-76: no keepalive
            self._handshake_complete()
        else:
            exc = self.protocol.handshake_exc
            if isinstance(exc, InvalidHandshake) and response.status >= 400:
                logger.info("refused %s: %d %s", self._peer(), response.status, exc.reason)
        # Read again either way: after a refusal the core discards what comes, but the peer's
        # EOF must be seen to finish the half-close of _shutdown_transport.
        if not self.transport.is_reading():
            self.transport.resume_reading()
        self._process()  # type: ignore[attr-defined]

    def _handshake_complete(self) -> None:
        raise NotImplementedError
