"""Publish/subscribe for connections: topics (rooms) within a process, or across many via Redis.

:class:`Hub` keeps, per topic, the local connections subscribed to it, and hands every message
published on a topic to :func:`shakehands.broadcast` for them (framed once, slow clients handled by
the :class:`~shakehands.SlowClientPolicy`). A subscription ends when its connection closes.

Where messages travel between publishers and subscribers is the backend's business:

- :class:`MemoryBackend` (the default): within this process; nothing to install or run.
- :class:`RedisBackend`: through Redis pub/sub, so that every process on every machine sharing the
  Redis server sees every message. It holds *one* Redis subscription per topic per process (not
  per connection), and a process receives its own publications back through Redis, so each local
  subscriber gets each message once and all of them in the same order. When Redis goes away the
  backend reconnects with exponential backoff, logs each step, fails publications in the meantime
  with :class:`PublishError`, and reports the window in which messages may have been missed as a
  :class:`Gap` (to :meth:`Hub.on_gap` callbacks and the log).

This module knows nothing about frames: it passes ``str`` / ``bytes`` messages to broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from ..asyncio.base import TransportProtocol
from ..asyncio.broadcast import BroadcastResult, SlowClientPolicy, broadcast
from .backend import Gap, HubBackend, HubCounters, Message, PublishError, logger
from .memory import MemoryBackend

__all__ = ["Hub", "connection_of"]


class ASGIWebSocket(Protocol):
    """What :func:`connection_of` takes besides a connection: an object with an ASGI ``scope``
    (a Starlette or FastAPI ``WebSocket``, a Channels consumer)."""

    @property
    def scope(self) -> Mapping[str, Any]: ...


#: A connection, or what leads to one (:func:`connection_of`): an ASGI WebSocket or its scope.
Subscriber = TransportProtocol | ASGIWebSocket | Mapping[str, Any]


def connection_of(connection: Subscriber) -> TransportProtocol:
    """The shakehands connection behind ``connection``: itself if it is one, or the one that
    serves an ASGI WebSocket (a Starlette or FastAPI ``WebSocket``, or its ``scope``) under
    uvicorn with ``--ws shakehands.asgi:UvicornWebSocket`` (the scope carries it as
    ``scope["extensions"]["shakehands"]["connection"]``).

    Raises:
        TypeError: neither (an ASGI WebSocket served by another implementation, say).
    """
    if isinstance(connection, TransportProtocol):
        return connection
    scope = getattr(connection, "scope", connection)
    try:
        found = scope["extensions"]["shakehands"]["connection"]  # type: ignore[index]
    except (TypeError, KeyError):
        found = None
    if not isinstance(found, TransportProtocol):
        raise TypeError(
            f"{connection!r} is not a shakehands connection, nor an ASGI WebSocket served by "
            "shakehands.asgi (uvicorn --ws shakehands.asgi:UvicornWebSocket)"
        )
    return found


class Hub:
    """Topics that connections subscribe to, and publishing to them.

    Works with connections of the coroutine API (:class:`~shakehands.ServerConnection`) and of
    the callback API (:class:`~shakehands.CallbackConnection`) alike, and with ASGI WebSockets
    (Starlette, FastAPI) served by uvicorn with ``shakehands.asgi`` (see :func:`connection_of`).

    Args:
        backend: :class:`MemoryBackend` (default) or :class:`RedisBackend`.
        policy: the slow-client policy for deliveries (see :class:`~shakehands.SlowClientPolicy`).
        compress: whether deliveries are compressed where permessage-deflate was negotiated.

    Example::

        hub = Hub()                                   # or Hub(RedisBackend("redis://..."))

        async def handler(ws):
            await hub.subscribe(ws, "news")           # awaiting is optional
            async for message in ws:
                await hub.publish("news", message)    # every subscriber, in every process

        async with hub, serve(handler, "127.0.0.1", 8765) as server:
            await server.serve_forever()
    """

    def __init__(
        self,
        backend: HubBackend | None = None,
        *,
        policy: SlowClientPolicy | None = None,
        compress: bool = True,
    ) -> None:
        self.backend: HubBackend = backend if backend is not None else MemoryBackend()
        self.policy = policy
        self.compress = compress
        #: Running totals: publications, deliveries, drops, gaps.
        self.counters = HubCounters()
        self._subscribers: dict[str, dict[TransportProtocol, None]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._topics_of: dict[TransportProtocol, set[str]] = {}
        self._gap_callbacks: list[Callable[[Gap], None]] = []
        self._publishing: set[asyncio.Task[int]] = set()
        self._started = False
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the backend (the Redis backend connects in the background if it must wait)."""
        if self._started:
            return
        self._started = True
        await self.backend.start(self._deliver, self._gap)

    def _ensure_started(self) -> None:
        if not self._started and self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self.start())

    async def close(self) -> None:
        """Stop the backend; local subscriptions are forgotten."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await self._starting
        await self.backend.close()
        self._started = False
        self._starting = None
        self._subscribers.clear()
        self._ready.clear()
        self._topics_of.clear()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -----------------------------------------------------------------------------------------
    # Subscriptions
    # -----------------------------------------------------------------------------------------

    def subscribe(self, connection: Subscriber, topic: str) -> asyncio.Future[None]:
        """Deliver messages published on ``topic`` to ``connection`` until it closes.

        ``connection``: a shakehands connection, or an ASGI WebSocket that shakehands serves
        (:func:`connection_of`).

        Returns a future, done once the subscription is live on the bus (at once in memory; after
        Redis confirms it otherwise, which may be after a reconnection), or once it has ended
        (the connection closed first). Awaiting it is optional, so callbacks can subscribe too.
        """
        loop = asyncio.get_running_loop()
        connection = connection_of(connection)
        if connection.closed_future.done():
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        self._ensure_started()
        topics = self._topics_of.get(connection)
        if topics is None:
            topics = self._topics_of[connection] = set()
            connection.closed_future.add_done_callback(lambda _: self.unsubscribe(connection))
        topics.add(topic)
        subscribers = self._subscribers.get(topic)
        if subscribers is None:
            subscribers = self._subscribers[topic] = {}
            self._ready[topic] = self.backend.subscribe(topic)
        subscribers[connection] = None
        return _follow(self._ready[topic])

    def unsubscribe(self, connection: Subscriber, topic: str | None = None) -> None:
        """Stop delivering ``topic`` (every topic if ``None``) to ``connection``."""
        connection = connection_of(connection)
        topics = self._topics_of.get(connection)
        if topics is None:
            return
        for name in [topic] if topic is not None else list(topics):
            if name not in topics:
                continue
            topics.discard(name)
            subscribers = self._subscribers.get(name)
            if subscribers is None:
                continue
            subscribers.pop(connection, None)
            if not subscribers:
                del self._subscribers[name]
                self._ready.pop(name, None)
                self.backend.unsubscribe(name)
        if not topics:
            del self._topics_of[connection]

    def subscribers(self, topic: str) -> list[TransportProtocol]:
        """The local connections subscribed to ``topic``."""
        return list(self._subscribers.get(topic, ()))

    def topics(self, connection: Subscriber | None = None) -> set[str]:
        """Topics with local subscribers, or those of ``connection``."""
        if connection is None:
            return set(self._subscribers)
        return set(self._topics_of.get(connection_of(connection), ()))

    # -----------------------------------------------------------------------------------------
    # Publishing
    # -----------------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Message) -> int:
        """Send ``message`` to every subscriber of ``topic``, in this process and (with Redis)
        every other one.

        Returns:
            What the bus reports: 1 in memory; with Redis, how many processes subscribe.

        Raises:
            PublishError: the bus could not take the message (Redis unreachable): no one got it.
            TypeError: ``message`` is neither ``str`` nor ``bytes``.
        """
        if not isinstance(message, (str, bytes)):
            raise TypeError(f"cannot publish {type(message).__name__}")
        if not self._started:
            await (self._starting if self._starting is not None else self.start())
        try:
            receivers = await self.backend.publish(topic, message)
        except PublishError:
            self.counters.publish_failures += 1
            raise
        self.counters.published += 1
        return receivers

    def publish_soon(self, topic: str, message: Message) -> asyncio.Task[int]:
        """:meth:`publish` from plain functions (the callback API): schedule it, in call order.

        The task is kept until done; its result or :class:`PublishError` is there for the caller
        (``task.add_done_callback(...)``), and a failure nobody looked at is logged.
        """
        task = asyncio.get_running_loop().create_task(self.publish(topic, message))
        self._publishing.add(task)
        task.add_done_callback(self._published)
        return task

    def _published(self, task: asyncio.Task[int]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("publication failed: %s", task.exception())

    def deliver_locally(self, topic: str, message: Message) -> BroadcastResult:
        """Send ``message`` to this process's subscribers of ``topic`` only (no bus)."""
        result = broadcast(
            self._subscribers.get(topic, ()), message, compress=self.compress, policy=self.policy
        )
        counters = self.counters
        counters.delivered += result.sent
        counters.skipped += result.skipped
        counters.dropped += result.dropped
        counters.closed_slow += result.closed
        if result.slow:
            logger.info(
                "topic %r: %d slow subscriber(s) dropped, %d closed",
                topic,
                result.dropped,
                result.closed,
            )
        return result

    def _deliver(self, topic: str, message: Message) -> None:
        self.deliver_locally(topic, message)

    # -----------------------------------------------------------------------------------------
    # Gaps
    # -----------------------------------------------------------------------------------------

    def on_gap(self, callback: Callable[[Gap], None]) -> None:
        """Call ``callback(gap)`` when the bus comes back after messages may have been missed."""
        self._gap_callbacks.append(callback)

    def _gap(self, gap: Gap) -> None:
        self.counters.gaps += 1
        for callback in self._gap_callbacks:
            try:
                callback(gap)
            except Exception:
                logger.exception("gap callback failed")


def _follow(source: asyncio.Future[None]) -> asyncio.Future[None]:
    """A future of its own for each caller (cancelling one cancels no other), done with source."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def copy(_: asyncio.Future[None]) -> None:
        # Done either way: live, or the subscription ended before it was (nothing to wait for).
        if not future.done():
            future.set_result(None)

    if source.done():
        copy(source)
    else:
        source.add_done_callback(copy)
    return future
